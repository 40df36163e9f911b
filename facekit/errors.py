"""The exceptions for user mistakes: the CLI prints each as one sentence and exits 2."""

from __future__ import annotations

import string
from typing import Callable


class FacekitError(Exception):
    """A problem the user can fix; its message names the thing and the fix."""


class OptionError(FacekitError):
    """A bad option value; ``{name}`` fields in the template are option names.

    Its message spells them as TOML keys and Python arguments do;
    :meth:`respelled` spells them another way (the CLI's ``--flags``).

    Args:
        template: the message, with ``{option_name}`` fields for options and
            ``{key}`` fields for the ``values`` given.
        **values: the other fields of the template.

    Examples:
        >>> str(OptionError("{batch_size} must be at least 1, got {value}.", value=0))
        'batch_size must be at least 1, got 0.'
    """

    def __init__(self, template: str, **values):
        self.template, self.values = template, values
        self.names = [name for _, name, _, _ in string.Formatter().parse(template)
                      if name and name not in values]
        super().__init__(self.render(lambda name: name))

    def render(self, spell: Callable[[str], str]) -> str:
        return self.template.format(**{name: spell(name) for name in self.names},
                                    **self.values)

    def respelled(self, spell: Callable[[str], str]) -> FacekitError:
        return FacekitError(self.render(spell))
