"""``facekit.evaluate``: run evaluation protocols on a model, in Python or from the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.eval.protocols import PairsReport, Protocol, Report, table


@dataclass
class Evaluation:
    """The reports of one evaluation, and the similarity thresholds its pairs measure.

    Attributes:
        model: the model file evaluated (None for a model passed in memory).
        reports: one per protocol, in order.
        flip: whether each embedding added its mirror image's.
        thresholds: the thresholds at FAR 1e-2, 1e-3, 1e-4 measured on all the
            verification pairs (a pair in several sets counts once), or None.
    """

    model: Path | None
    reports: list[Report]
    flip: bool
    thresholds: dict | None = field(default=None)

    def to_dict(self) -> dict:
        data = {"model": None if self.model is None else str(self.model), "flip": self.flip,
                "sets": [report.to_dict() for report in self.reports]}
        if self.thresholds is not None:
            data["thresholds"] = self.thresholds
        return data

    def table(self) -> str:
        return table(self.reports)


def evaluate(model, protocols: list[Protocol], *, flip: bool = True, batch_size: int = 64,
             progress: bool = False) -> Evaluation:
    """Evaluate ``model`` with each protocol.

    Args:
        model: a run folder, a ``.keras`` file (basic or full model) or a Keras
            basic model.
        protocols: ``facekit.eval.protocols`` objects (``Pairs``, ``IJB``,
            ``Identification``, or your own ``Protocol``).
        flip: add the embedding of the mirrored image (insightface's protocol).
        batch_size: images per batch.
        progress: show progress bars.

    Returns:
        An :class:`Evaluation`: the reports, and thresholds where pairs were verified.

    Examples:
        >>> from facekit.eval.protocols import Pairs
        >>> result = facekit.evaluate("runs/a", [Pairs.from_bin("lfw.bin")])
        >>> print(result.table())
    """
    from facekit.eval.embedding import load_embedding_model
    from facekit.eval.thresholds import similarity_thresholds
    from facekit.model.build import embedding_model
    from facekit.run_folder import model_file

    path = None
    if isinstance(model, (str, Path)):
        path = model_file(model)
        model = load_embedding_model(path)
    else:
        model = embedding_model(model)
    reports = [protocol.evaluate(model, flip=flip, batch_size=batch_size, progress=progress)
               for protocol in protocols]
    pairs = [report for report in reports if isinstance(report, PairsReport)]
    thresholds = None
    if pairs:
        _, unique = np.unique(np.concatenate([r.pair_keys for r in pairs]), return_index=True)
        thresholds = similarity_thresholds(np.concatenate([r.distances for r in pairs])[unique],
                                           np.concatenate([r.issame for r in pairs])[unique],
                                           [r.name for r in pairs])
    return Evaluation(path, reports, flip, thresholds)
