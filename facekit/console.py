"""What facekit prints while it works: progress that fits where the output goes.

In a terminal, Keras' progress bars; in a log file (Slurm, nohup, CI) one line when
the work is done, so logs hold no backspaces or colour codes.  Light: Keras is
imported when a bar is made.
"""

from __future__ import annotations

import sys


def interactive() -> bool:
    """Whether standard output is a terminal."""
    return sys.stdout.isatty()


def progress_bar(total: int | None, unit: str = "image"):
    """A ``keras.utils.Progbar`` over ``total`` units: live in a terminal, else one line."""
    import keras

    return keras.utils.Progbar(total, unit_name=unit, verbose=1 if interactive() else 2)
