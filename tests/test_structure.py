"""The layering rule (docs/structure.md), checked on the source: no import circle, no import
that runs up the layers, and light modules that load without TensorFlow or Keras."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Lower layers never import higher ones; a module may import its own layer and below.
LAYERS = [
    ("facekit.errors", "facekit.hookspecs", "facekit.declare", "facekit.files", "facekit.console"),
    ("facekit.registry", "facekit.run_folder", "facekit.cluster"),
    ("facekit.components",),
    ("facekit.data",),
    ("facekit.config",),
    ("facekit.model",),
    ("facekit.eval",),
    ("facekit.plan",),
    ("facekit.fit",),
    ("facekit", "facekit.cli", "facekit.__main__"),
    ("facekit_plugins",),
]
# Modules that import neither TensorFlow nor Keras when imported (they may inside a
# function that needs them): what planning and the light commands load.
LIGHT = ["facekit", "facekit.errors", "facekit.hookspecs", "facekit.declare",
         "facekit.registry", "facekit.components", "facekit.run_folder", "facekit.cluster",
         "facekit.config", "facekit.plan", "facekit.cli", "facekit.native_logs", "facekit.console", "facekit.data.sources",
         "facekit.data.index", "facekit.data.demo", "facekit.data.recordio", "facekit.data.detect",
         "facekit.data.align", "facekit.data.prepare",
         "facekit.eval.sets", "facekit.eval.thresholds", "facekit.eval.protocols",
         "facekit_plugins", "facekit_plugins.backbones", "facekit_plugins.necks",
         "facekit_plugins.heads", "facekit_plugins.losses", "facekit_plugins.detectors"]


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("facekit", "facekit_plugins"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other modules of the tree, at any depth of its code."""
    def owner(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {owner(name) for name in names} - {None, module}
        edges[module] = targets
    return edges


def _layer(module: str) -> int:
    best = None
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), number)
    assert best is not None, f"{module} is in no layer of tests/test_structure.py"
    return best[1]


def test_no_import_runs_up_the_layers():
    edges = _imports(_modules())
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                    if _layer(b) > _layer(a) and not a.startswith(b + "."))
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_circle():
    edges = _imports(_modules())
    # a package importing its own modules (and they its names) is not a circle of design
    edges = {a: {b for b in targets if not b.startswith(a + ".") and not a.startswith(b + ".")}
             for a, targets in edges.items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(" <-> ".join(sorted(component)))

    sys.setrecursionlimit(10_000)
    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_light_modules_import_without_tensorflow():
    code = ("import importlib, sys\n"
            "class Blocked:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('keras', 'tensorflow'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Blocked())\n"
            "for module in sys.argv[1:]:\n"
            "    try:\n"
            "        importlib.import_module(module)\n"
            "    except ImportError as exc:\n"
            "        print(module, exc)\n")
    result = subprocess.run([sys.executable, "-c", code, *LIGHT], capture_output=True,
                            text=True, check=True)
    assert result.stdout == "", "light modules that import TensorFlow or Keras:\n" + result.stdout


def test_the_modules_a_model_file_may_import_are_those_that_register_keras_objects():
    from facekit.model.build import KERAS_MODULES

    registering = {module for module, path in _modules().items()
                   if "register_keras_serializable" in path.read_text()}
    assert set(KERAS_MODULES) == registering
