"""Turn ``--backbone-opt key=value`` strings into typed factory arguments."""

from __future__ import annotations

from typing import Any

from facekit.errors import FacekitError
from facekit.registry import Component

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
        result[key] = value
    return result


def _split(pair: str, component: Component) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise FacekitError(
            f"The {component.kind} option '{pair}' is not of the form key=value "
            f"(for example --{component.kind}-opt {next(iter(component.options), 'key')}=...).")
    return key.strip(), value.strip()
