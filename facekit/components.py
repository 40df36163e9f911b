"""Components resolved for a run: a registered component with its options typed and checked.

``--backbone-opt key=value`` strings (or a dict from Python) become the factory's
typed keyword arguments here, each checked against the range its registration
declares, so a bad plugin option is refused while the run is planned, before any
data is indexed or a device is set up.  Light: no TensorFlow, no Keras.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from facekit.errors import FacekitError
from facekit.registry import Component, Registry


@dataclass(frozen=True)
class Resolved:
    """A component with its options typed: what a model or loss is built from.

    Args:
        component: the registered component.
        options: its options, typed and checked (``parse_options``).
        extra: reserved arguments facekit passes itself (``append_norm``).

    Examples:
        >>> from facekit.registry import get_registry
        >>> loss = resolve(get_registry(), "loss", "cosface", ["margin=0.2"])
        >>> loss.options
        {'margin': 0.2}
    """

    component: Component
    options: dict
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.component.name

    def build(self, *args):
        """Call the component's factory (this is where Keras gets imported)."""
        return self.component.build(*args, **self.extra, **self.options)


def resolve(registry: Registry, kind: str, name: str, options) -> Resolved:
    """The component ``name`` of ``kind`` with ``options`` typed and checked."""
    component = registry.get(kind, name)
    return Resolved(component, parse_options(component, options))


def resolve_neck(registry: Registry, backbone: Resolved, name: str | None, options) -> Resolved:
    """The neck ``name``, or without one the neck the backbone names."""
    return resolve(registry, "neck", name or backbone.component.neck or "gap", options)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(text: str, default: Any) -> Any:
    """Convert ``text`` to the type of ``default`` (guessing when it is None)."""
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError("expected true or false")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    if text.lower() in ("none", "null", ""):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_options(component: Component, pairs: list[str] | dict | None) -> dict[str, Any]:
    """Check option keys against the component's and convert the values.

    ``pairs`` is a list of ``key=value`` strings (from the command line) or a
    dict (from the Python API, values used as given after the key check).
    """
    if not pairs:
        return {}
    items = pairs.items() if isinstance(pairs, dict) else [_split(p, component) for p in pairs]
    result = {}
    for key, value in items:
        key = key.replace("-", "_")
        if key not in component.options:
            valid = ", ".join(sorted(component.options)) or "none"
            raise FacekitError(
                f"The {component.kind} '{component.name}' has no option '{key}'; "
                f"valid options: {valid}.")
        if isinstance(value, str):
            default = component.options[key]
            try:
                value = parse_value(value, default)
            except ValueError:
                raise FacekitError(
                    f"Bad value '{value}' for {component.kind} option '{key}' of "
                    f"'{component.name}'; expected a {type(default).__name__} "
                    f"like {default!r}.") from None
        check = component.checks.get(key)
        if check is not None and value is not None and not check.accepts(value):
            raise FacekitError(f"The {component.kind} option '{key}' of '{component.name}' "
                               f"{check.rule}, got {value}.")
        result[key] = value
    return result


def _split(pair: str, component: Component) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise FacekitError(
            f"The {component.kind} option '{pair}' is not of the form key=value "
            f"(for example --{component.kind}-opt {next(iter(component.options), 'key')}=...).")
    return key.strip(), value.strip()
