"""The one exception type for user mistakes: the CLI prints it as one sentence."""


class FacekitError(Exception):
    """A problem the user can fix; its message names the thing and the fix."""
