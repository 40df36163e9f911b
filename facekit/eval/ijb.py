"""IJB-B / IJB-C 1:1 verification, as insightface's ``eval_ijbc.py`` measures it.

The protocol folder is the one insightface distributes: ``loose_crop/`` with
the images and ``meta/`` with ``<name>_face_tid_mid.txt`` (image, template,
media), ``<name>_template_pair_label.txt`` (template, template, same?) and
``<name>_name_5pts_score.txt`` (image, 5 landmarks, detector score).

1. Each loose crop is aligned to the ArcFace 112x112 template by its landmarks
   (facekit.data.align) and embedded with its mirror image, the two summed.
2. The embedding keeps its norm and, by default, is multiplied by the
   detector score (insightface's test mode N1D1F1).
3. Images are pooled per media (mean), medias per template (sum), and the
   template normalized; a pair's score is the cosine of its two templates.
4. TAR is read off the ROC at the point whose FAR is nearest each target
   1e-6 … 1e-1, as insightface's tables report it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facekit.console import progress_bar
from facekit.errors import FacekitError
from facekit.files import read_text

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class IJBProtocol:
    name: str
    images: list[Path]
    landmarks: np.ndarray  # (images, 5, 2)
    detector_scores: np.ndarray  # (images,)
    templates: np.ndarray  # (images,) template id of each image
    medias: np.ndarray  # (images,) media id of each image
    pairs: np.ndarray  # (pairs, 2) template ids
    issame: np.ndarray  # (pairs,) bool

    @classmethod
    def read(cls, folder) -> "IJBProtocol":
        from facekit.data.align import read_landmarks_with_scores

        folder = Path(folder)
        meta = folder / "meta"
        found = sorted(meta.glob("*_template_pair_label.txt")) if meta.is_dir() else []
        if not found:
            raise FacekitError(f"'{folder}' is not an IJB protocol folder: expected "
                               "meta/<name>_template_pair_label.txt (and loose_crop/).")
        name = found[0].name[:-len("_template_pair_label.txt")]
        tid_mid = _table(meta / f"{name}_face_tid_mid.txt", 3, "image template media")
        pairs = _table(found[0], 3, "template template label")
        points = read_landmarks_with_scores(meta / f"{name}_name_5pts_score.txt")
        names = [row[0] for row in tid_mid]
        missing = [n for n in names if n not in points]
        if missing:
            raise FacekitError(f"{len(missing)} images of {name}_face_tid_mid.txt have no "
                               f"landmarks in {name}_name_5pts_score.txt (first: {missing[0]}).")
        try:
            templates = np.array([int(row[1]) for row in tid_mid], np.int64)
            medias = np.array([int(row[2]) for row in tid_mid], np.int64)
            pair_ids = np.array([[int(row[0]), int(row[1])] for row in pairs], np.int64)
            issame = np.array([int(row[2]) for row in pairs], np.int64) == 1
        except ValueError as exc:
            raise FacekitError(f"{name}: template, media and label ids must be integers "
                               f"({exc}).") from None
        if issame.all() or not issame.any():
            raise FacekitError(f"{found[0].name} holds {len(issame)} pairs, "
                               f"{int(issame.sum())} of them same-person: verification needs "
                               "both same-person and different-person pairs.")
        unknown = np.setdiff1d(pair_ids.ravel(), templates)
        if len(unknown):
            raise FacekitError(f"{found[0].name} names {len(unknown)} templates without images "
                               f"(first: {unknown[0]}).")
        return cls(name.upper(), [folder / "loose_crop" / n for n in names],
                   np.stack([points[n][0] for n in names]),
                   np.array([points[n][1] for n in names], np.float64),
                   templates, medias, pair_ids, issame)


def _table(path: Path, columns: int, what: str) -> list[list[str]]:
    if not path.is_file():
        raise FacekitError(f"The IJB file '{path}' is missing.")
    rows = [line.split() for line in read_text(path, "The IJB file").splitlines() if line.strip()]
    bad = next((i for i, row in enumerate(rows, start=1) if len(row) < columns), None)
    if bad is not None:
        raise FacekitError(f"{path}:{bad}: expected {columns} fields ({what}).")
    return rows


def aligned_images(protocol: IJBProtocol, rows, size: int) -> np.ndarray:
    """The loose crops of ``rows`` aligned to the template, uint8 (n, size, size, 3)."""
    from PIL import Image

    from facekit.data.align import align_face

    def one(row):
        try:
            with Image.open(protocol.images[row]) as image:
                return np.asarray(align_face(image.convert("RGB"), protocol.landmarks[row],
                                             size))
        except (OSError, ValueError, np.linalg.LinAlgError) as exc:
            raise FacekitError(f"The IJB image '{protocol.images[row]}' cannot be aligned "
                               f"({exc}).") from None

    with ThreadPoolExecutor() as pool:
        return np.stack(list(pool.map(one, rows)))


def image_features(model, protocol: IJBProtocol, *, batch_size: int = 64, flip: bool = True,
                   chunk: int = 4096, progress: bool = False) -> np.ndarray:
    """Raw (not normalized) flip-summed embeddings of every image, aligned."""
    from facekit.eval.embedding import embed_dataset, model_image_size

    size = model_image_size(model)
    bar = progress_bar(len(protocol.images)) if progress else None
    parts = []
    for start in range(0, len(protocol.images), chunk):
        images = aligned_images(protocol, range(start, min(start + chunk,
                                                           len(protocol.images))), size)
        batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
        parts.append(embed_dataset(model, batches, flip=flip))
        if bar is not None:
            bar.add(len(images))
    return np.concatenate(parts)


def template_features(features: np.ndarray, templates: np.ndarray, medias: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(template ids, unit template features): images averaged per media, medias summed
    per template, the sum normalized."""
    ids = np.unique(templates)
    pooled = np.zeros((len(ids), features.shape[1]), np.float64)
    for row, template in enumerate(ids):
        mine = templates == template
        for media in np.unique(medias[mine]):
            pooled[row] += features[mine & (medias == media)].mean(axis=0)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return ids, pooled / norms


def pair_scores(ids: np.ndarray, features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine of the two templates of each pair."""
    where = np.searchsorted(ids, pairs)
    return np.sum(features[where[:, 0]] * features[where[:, 1]], axis=1)


def tar_at_fars(scores, issame, fars=IJB_FARS) -> dict[str, float]:
    """{"1e-06": TAR, ...} at each target FAR (see ``tars_near``)."""
    return {f"{far:.0e}": tar for far, tar in zip(fars, tars_near(scores, issame, fars))}


def tars_near(scores, issame, fars) -> list[float]:
    """TAR at the ROC point whose FAR is nearest each target, the highest TAR among equally
    near points (insightface's reading: it searches the flipped curve)."""
    from facekit.eval.verification import roc_curve

    fpr, tpr = roc_curve(-np.asarray(scores, np.float64), issame)
    fpr, tpr = fpr[::-1], tpr[::-1]
    return [float(tpr[int(np.argmin(np.abs(fpr - far)))]) for far in fars]


def evaluate_ijb(model, protocol: IJBProtocol, *, detector_score: bool = True,
                 flip: bool = True, batch_size: int = 64, progress: bool = False) -> dict:
    """The whole protocol: {"set", "templates", "pairs", "tar_at_far", "auc", ...}."""
    from facekit.eval.verification import roc_auc

    features = image_features(model, protocol, batch_size=batch_size, flip=flip,
                              progress=progress)
    if detector_score:
        features = features * protocol.detector_scores[:, None]
    ids, pooled = template_features(features, protocol.templates, protocol.medias)
    scores = pair_scores(ids, pooled, protocol.pairs)
    return {"set": protocol.name, "images": len(protocol.images), "templates": len(ids),
            "pairs": int(len(scores)), "same_pairs": int(protocol.issame.sum()),
            "detector_score": detector_score, "flip": flip,
            "tar_at_far": tar_at_fars(scores, protocol.issame),
            "auc": roc_auc(-scores, protocol.issame),
            "roc": {"far": ROC_FARS.tolist(),
                    "tar": tars_near(scores, protocol.issame, ROC_FARS)}}


ROC_FARS = np.logspace(-6, 0, 61)  # the ROC as reported: TAR at 10 points a decade


def plot_ijb_roc(result: dict, path) -> None:
    """The ROC on a logarithmic FAR axis, as the IJB papers draw it, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.semilogx(result["roc"]["far"], result["roc"]["tar"],
                  label=f"{result['set']} (AUC {result['auc']:.4f})")
    axis.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(1e-6, 1),
             ylim=(0, 1), title=f"{result['set']} 1:1 verification")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def ijb_table(result: dict) -> str:
    header = "".join(f"{key:>9}" for key in result["tar_at_far"])
    values = "".join(f"{value:>9.4f}" for value in result["tar_at_far"].values())
    return (f"{result['set']} 1:1 verification: {result['pairs']} pairs of "
            f"{result['templates']} templates ({result['images']} images)\n"
            f"{'TAR@FAR':<9}{header}{'AUC':>9}\n{'':<9}{values}{result['auc']:>9.4f}")
