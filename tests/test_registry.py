"""Plugin discovery: built-ins, broken plugins, duplicates, blocking, options (no Keras)."""

import json
import textwrap
from importlib import metadata

import pytest

from facekit.errors import FacekitError
from facekit.components import parse_options
from facekit.registry import DISABLE_ENV, ENTRY_POINT_GROUP, load_registry
from tests.conftest import run_facekit

BUILTIN_BACKBONES = {"resnet50", "resnet101", "resnet50v2", "resnet101v2", "resnet152v2",
                     "mobilenet", "mobilenetv2", "mobilenetv3small", "mobilenetv3large"}


def builtin_entry_points():
    return [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.value.startswith("facekit_plugins.")]


@pytest.fixture
def plugin_modules(tmp_path, monkeypatch):
    """Write modules into a folder on sys.path and return fake entry points for them."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(**modules):
        points = []
        for name, source in modules.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
            points.append(metadata.EntryPoint(name=name, value=name, group=ENTRY_POINT_GROUP))
        return points
    return make


def test_builtins_register_with_provider_and_options():
    registry = load_registry(builtin_entry_points())
    assert BUILTIN_BACKBONES <= set(registry.names("backbone"))
    assert registry.names("head") == ["normdense", "partial-fc", "softmax", "subcenter"]
    assert registry.names("loss") == [
        "adacos", "adaface", "arcface", "arcface-simple", "combined", "cosface",
        "curricularface", "elasticface-arc", "elasticface-cos", "magface", "softmax"]
    arcface = registry.get("loss", "arcface")
    assert arcface.options == {"margin1": 0.9, "margin2": 0.4, "margin3": 0.15, "scale": 64.0}
    assert arcface.expects == "cosine"
    assert arcface.provider.entry_point == "facekit-losses"
    assert arcface.provider.distribution == "facekit"
    mobilenet = registry.get("backbone", "mobilenetv2")
    assert mobilenet.options["alpha"] == 1.0 and mobilenet.options["weights"] == "none"
    assert "input_shape" not in mobilenet.options
    assert registry.get("head", "normdense").outputs == ("cosine", "cosine+norm")
    assert "append_norm" not in registry.get("head", "subcenter").options  # facekit sets it
    assert registry.get("head", "subcenter").options == {"centers": 3}
    assert registry.get("loss", "adaface").expects == "cosine+norm"
    assert registry.problems == []


def test_broken_plugin_is_reported_and_others_still_load(plugin_modules):
    points = plugin_modules(raising_plugin="""
        from facekit import hookimpl

        @hookimpl
        def facekit_register_heads(register):
            raise RuntimeError("head registry exploded")
    """)
    missing = metadata.EntryPoint(name="missing", value="no_such_module_xyz",
                                  group=ENTRY_POINT_GROUP)
    registry = load_registry(builtin_entry_points() + points + [missing])
    errors = {p.provider.entry_point: p.error for p in registry.problems}
    assert "ModuleNotFoundError" in errors["missing"]
    assert "head registry exploded" in errors["raising_plugin"]
    assert registry.names("head") == ["normdense", "partial-fc", "softmax", "subcenter"]


def test_duplicate_name_names_both_providers(plugin_modules):
    points = plugin_modules(first_plugin="""
        from facekit import hookimpl

        def tiny(input_shape=(112, 112, 3)):
            "First."

        @hookimpl
        def facekit_register_backbones(register):
            register("tiny", tiny)
    """, second_plugin="""
        from facekit import hookimpl

        def tiny(input_shape=(112, 112, 3)):
            "Second."

        @hookimpl
        def facekit_register_backbones(register):
            register("tiny", tiny)
    """)
    registry = load_registry(points)
    with pytest.raises(FacekitError, match="first_plugin and second_plugin"):
        registry.get("backbone", "tiny")
    assert any("also registered by first_plugin" in p.error for p in registry.problems)


def test_disable_env_blocks_plugins_by_entry_point_name(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "facekit-heads, other")
    registry = load_registry(builtin_entry_points())
    assert registry.names("head") == []
    assert registry.disabled == ["facekit-heads"]
    assert registry.names("loss")


def test_head_must_declare_its_output(plugin_modules):
    points = plugin_modules(vague_head="""
        from facekit import hookimpl

        @hookimpl
        def facekit_register_heads(register):
            register("vague", lambda num_classes: None)
    """)
    registry = load_registry(points)
    assert "must declare outputs" in registry.problems[0].error
    assert registry.names("head") == []


def test_unknown_component_lists_the_known_ones():
    registry = load_registry(builtin_entry_points())
    with pytest.raises(FacekitError, match="Unknown backbone 'resnet9000'.*mobilenetv2"):
        registry.get("backbone", "resnet9000")


def test_options_are_typed_from_defaults():
    registry = load_registry(builtin_entry_points())
    backbone = registry.get("backbone", "mobilenetv3small")
    parsed = parse_options(backbone, ["alpha=0.75", "minimalistic=true", "weights=imagenet"])
    assert parsed == {"alpha": 0.75, "minimalistic": True, "weights": "imagenet"}
    with pytest.raises(FacekitError, match="no option 'depth'.*valid options: alpha, bn_momentum"):
        parse_options(backbone, ["depth=3"])
    with pytest.raises(FacekitError, match="Bad value 'wide' for backbone option 'alpha'"):
        parse_options(backbone, ["alpha=wide"])
    with pytest.raises(FacekitError, match="not of the form key=value"):
        parse_options(backbone, ["alpha"])


@pytest.mark.parametrize("args", [["list-plugins"], ["--help"], ["train", "--help"]])
def test_light_commands_do_not_import_tensorflow(args):
    result = run_facekit(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "facekit.registry" in imported  # the profile really ran
    assert not {"tensorflow", "keras"} & imported
    if args == ["list-plugins"]:
        for name in ("resnet50v2", "normdense", "arcface-simple",
                     "facekit-losses (facekit 0.1.0)"):
            assert name in result.stdout


def test_list_plugins_json_and_broken_plugin(tmp_path):
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[facekit]\nbroken = broken_plugin_missing_module\n")
    result = run_facekit("list-plugins", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert ("loss", "arcface") in names and ("backbone", "resnet152v2") in names
    [problem] = data["problems"]
    assert problem["provider"] == {"entry_point": "broken", "distribution": "broken-plugin",
                                   "version": "1.0"}
    assert "broken_plugin_missing_module" in problem["error"]
    text = run_facekit("list-plugins", "--kind", "loss", env={"PYTHONPATH": str(tmp_path)})
    assert "broken (broken-plugin 1.0): ModuleNotFoundError" in text.stdout
    assert "resnet50" not in text.stdout
