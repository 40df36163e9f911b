"""Plugin discovery: entry points in the ``facekit`` group, registered with pluggy.

Loading a plugin is isolated: one that fails to import or raises in its hook is
recorded as a problem and the others still load.  Nothing here imports Keras.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import pluggy

from facekit import hookspecs
from facekit.declare import Check
from facekit.errors import FacekitError

ENTRY_POINT_GROUP = "facekit"
DISABLE_ENV = "FACEKIT_DISABLE_PLUGINS"
KINDS = ("backbone", "neck", "head", "loss", "detector")
# What a head outputs and a loss expects: logits; cosines (scores in [-1, 1]); or
# cosines with the embedding's L2 norm appended as one last column.
SCORE_KINDS = ("logits", "cosine", "cosine+norm")
_HOOKS = {
    "backbone": "facekit_register_backbones",
    "neck": "facekit_register_necks",
    "head": "facekit_register_heads",
    "loss": "facekit_register_losses",
    "detector": "facekit_register_detectors",
}
# Arguments facekit passes itself; everything else with a default is an option.
# A neck gets the backbone's feature-map shape and the run's embedding size and
# dropout.  A head that outputs "cosine+norm" is called with append_norm=True when
# the loss expects it.
_RESERVED = {"backbone": {"input_shape"},
             "neck": {"feature_shape", "embedding_size", "dropout"},
             "head": {"num_classes", "append_norm"}, "loss": set(), "detector": set()}


@dataclass(frozen=True)
class Provider:
    """Where a component comes from: the entry point and its distribution."""

    entry_point: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return self.entry_point
        return f"{self.entry_point} ({self.distribution} {self.version})"

    def to_dict(self) -> dict:
        return {"entry_point": self.entry_point, "distribution": self.distribution,
                "version": self.version}


@dataclass(frozen=True)
class Component:
    """A registered backbone, neck, head, loss or detector."""

    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str
    provider: Provider
    options: dict[str, Any]
    outputs: tuple[str, ...] = ()  # heads: the SCORE_KINDS it can output
    expects: str | None = None  # losses: the SCORE_KINDS it needs
    neck: str | None = None  # backbones: the neck its reference ends with
    checks: dict[str, Check] = field(default_factory=dict)  # option name -> its range

    def build(self, *args, **options):
        """Call the factory (this is where Keras gets imported)."""
        return self.factory(*args, **options)

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "name": self.name, "summary": self.summary,
                "provider": self.provider.to_dict(), "options": self.options}
        if self.outputs:
            data["outputs"] = list(self.outputs)
        if self.expects:
            data["expects"] = self.expects
        if self.neck:
            data["neck"] = self.neck
        return data

    @property
    def tags(self) -> str:
        """What list-plugins shows after the summary: ``[outputs cosine]`` and the like."""
        if self.outputs:
            return f" [outputs {', '.join(self.outputs)}]"
        if self.expects:
            return f" [expects {self.expects}]"
        return f" [neck {self.neck}]" if self.neck else ""


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be loaded, or a registration that was refused."""

    provider: Provider
    error: str

    def to_dict(self) -> dict:
        return {"provider": self.provider.to_dict(), "error": self.error}


@dataclass
class Registry:
    """Every component by kind and name, plus what went wrong while loading."""

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    conflicts: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    def names(self, kind: str) -> list[str]:
        """The names of ``kind`` in natural order: iresnet18 before iresnet100."""
        return sorted(self.components[kind], key=natural_key)

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``, or a FacekitError saying what exists."""
        if (kind, name) in self.conflicts:
            providers = " and ".join(str(c.provider) for c in self.conflicts[kind, name])
            raise FacekitError(
                f"The {kind} '{name}' is registered by both {providers}; uninstall one or "
                f"block it with {DISABLE_ENV}=<entry point name>.")
        try:
            return self.components[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            close = difflib.get_close_matches(name, self.names(kind), n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise FacekitError(
                f"Unknown {kind} '{name}'; {guess}choose one of: {known} "
                f"(see `facekit list-plugins`).") from None

    def add(self, component: Component) -> None:
        key = (component.kind, component.name)
        if key in self.conflicts:
            self.conflicts[key].append(component)
            return
        existing = self.components[component.kind].pop(component.name, None)
        if existing is None:
            self.components[component.kind][component.name] = component
            return
        self.conflicts[key] = [existing, component]
        self.problems.append(PluginProblem(
            component.provider,
            f"{component.kind} '{component.name}' is also registered by {existing.provider}; "
            f"neither can be used until one is removed"))


def natural_key(name: str) -> list:
    """Sort key that orders the numbers in a name by value (iresnet18 < iresnet100)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def factory_options(kind: str, factory: Callable) -> dict[str, Any]:
    """The factory's keyword arguments with defaults: the component's options."""
    options = {}
    for param in inspect.signature(factory).parameters.values():
        if param.name in _RESERVED[kind] or param.default is inspect.Parameter.empty:
            continue
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            options[param.name] = param.default
    return options


def _summary(factory: Callable, summary: str | None) -> str:
    if summary:
        return summary
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _make_register(kind: str, provider: Provider, registry: Registry) -> Callable:
    def register(name: str, factory: Callable, *, summary: str | None = None,
                 outputs: str | tuple[str, ...] = (), expects: str | None = None,
                 neck: str | None = None, checks: dict[str, Check] | None = None) -> None:
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if kind == "head" and (not outputs or not set(outputs) <= set(SCORE_KINDS)):
            raise ValueError(f"head '{name}' must declare outputs= one or more of {SCORE_KINDS}")
        if kind == "loss" and expects not in SCORE_KINDS:
            raise ValueError(f"loss '{name}' must declare expects= one of {SCORE_KINDS}")
        if neck is not None and kind != "backbone":
            raise ValueError(f"only a backbone declares neck= (its default neck), not {kind} "
                             f"'{name}'")
        options = factory_options(kind, factory)
        unknown = sorted(set(checks or {}) - set(options))
        if unknown:
            raise ValueError(f"{kind} '{name}' declares checks for {', '.join(unknown)}, which "
                             "are not options of its factory")
        registry.add(Component(kind=kind, name=name, factory=factory,
                               summary=_summary(factory, summary), provider=provider,
                               options=options, outputs=outputs, expects=expects, neck=neck,
                               checks=dict(checks or {})))
    return register


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _provider(entry_point: metadata.EntryPoint) -> Provider:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return Provider(entry_point.name)
    return Provider(entry_point.name, dist.metadata["Name"], dist.version)


def load_registry(entry_points: list[metadata.EntryPoint] | None = None) -> Registry:
    """Import every plugin, call its hooks, and collect components and problems."""
    if entry_points is None:
        entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    manager = pluggy.PluginManager("facekit")
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    disabled = _disabled_names()
    providers: dict[str, Provider] = {}
    seen = set()
    for entry_point in entry_points:
        if (entry_point.name, entry_point.value) in seen:
            continue  # the same distribution found twice on sys.path
        seen.add((entry_point.name, entry_point.value))
        provider = _provider(entry_point)
        if entry_point.name in disabled:
            registry.disabled.append(entry_point.name)
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except (Exception, SystemExit) as exc:  # a broken plugin must not take facekit down
            registry.problems.append(PluginProblem(provider, _describe(exc)))
            continue
        providers[entry_point.name] = provider
    for kind in KINDS:
        for impl in getattr(manager.hook, _HOOKS[kind]).get_hookimpls():
            provider = providers.get(impl.plugin_name, Provider(impl.plugin_name))
            try:
                impl.function(register=_make_register(kind, provider, registry))
            except (Exception, SystemExit) as exc:
                registry.problems.append(PluginProblem(provider, _describe(exc)))
    return registry


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@functools.cache
def get_registry() -> Registry:
    """The registry of the installed plugins, loaded once per process."""
    return load_registry()
