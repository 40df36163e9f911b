"""``python -m facekit``: the same as the ``facekit`` command."""

from facekit.cli import main

if __name__ == "__main__":  # importing this module (a model file may name it) runs nothing
    main()
