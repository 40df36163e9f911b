"""``python -m facekit``: the same as the ``facekit`` command."""

from facekit.cli import main

main()
