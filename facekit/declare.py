"""How an option is declared: its help, panel, choices, flag and check, in one place.

The machinery behind :mod:`facekit.config` (whose ``TrainConfig`` fields are
declared with :func:`option`) and behind plugin options' range checks
(``register(..., checks={"sample_rate": fraction(low_open=True, high_open=False)})``).
Light: no TensorFlow, no Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Check:
    """A rule a value must follow, and how to say it: ``{option} must be at least 1``.

    Args:
        test: returns whether a value follows the rule.
        rule: the rule as the end of a sentence that starts with the option's name.

    Examples:
        >>> at_least(1).accepts(0)
        False
    """

    test: Callable[[Any], bool]
    rule: str

    def accepts(self, value) -> bool:
        """Whether ``value`` follows the rule (NaN never does)."""
        if isinstance(value, float) and math.isnan(value):
            return False
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):  # a value of another type breaks no rule silently
            return False


def at_least(low) -> Check:
    return Check(lambda value: value >= low, f"must be at least {low}")


def between(low, high) -> Check:
    """A value in [low, high]: a sane bound for sizes, so a typo cannot exhaust memory."""
    return Check(lambda value: low <= value <= high, f"must be in [{low}, {high}]")


def positive() -> Check:
    return Check(lambda value: value > 0, "must be positive")


def fraction(low_open: bool = False, high_open: bool = True) -> Check:
    """A value in [0, 1) by default; ``low_open``/``high_open`` exclude the ends."""
    low, high = "(" if low_open else "[", ")" if high_open else "]"
    return Check(lambda value: (0 < value if low_open else 0 <= value)
                 and (value < 1 if high_open else value <= 1),
                 f"must be in {low}0, 1{high}")


def comma_ints(text: str) -> list[int]:
    """``10,15`` -> [10, 15] (the command-line form of a list of epochs)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError("whole numbers separated by commas, e.g. 10,15") from None


@dataclass(frozen=True)
class OptionSpec:
    """Everything about one option except its name, type and default (the field's)."""

    help: str
    panel: str
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # the CLI flag; None: --name-with-dashes
    cli: bool = True  # False: only in run.toml files and Python calls
    stage: bool = False  # whether a [[stages]] table may set it
    check: Check | None = None
    from_text: Callable[[str], Any] | None = None  # the CLI gives text, not the type
    metavar: str | None = None


def option(default, help: str, panel: str, **spec) -> Any:
    """A TrainConfig field declared with everything facekit derives from it."""
    metadata = {"facekit": OptionSpec(help, panel, **spec)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)
