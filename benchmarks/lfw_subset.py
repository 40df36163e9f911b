"""Real-data check: train on LFW identities outside the pairs, verify on the pairs.

Prepares ../shared/data/lfw_a_subset (250x250 aligned grayscale) into 112x112
RGB with a centre crop, trains on every identity that no line of
lfw_a_subset_pairs.txt names, and evaluates on those pairs (3 folds, as the
file says) next to two baselines computed the same way (flip-summed,
L2-normalized, squared distance, K-fold thresholds): raw pixels, and the same
network untrained.

    python benchmarks/lfw_subset.py [--epochs 8] [--backbone mobilenetv2] [--work DIR]

With --losses a,b,c every loss trains the same backbone on the same data for the
same epochs (with the normdense head; softmax with the softmax head), and one
table compares them with the baselines.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "lfw_a_subset")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (kept).")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--head", default="softmax")
    parser.add_argument("--loss", default="softmax")
    parser.add_argument("--losses", default=None,
                        help="Comma-separated losses to compare (overrides --head/--loss).")
    parser.add_argument("--backbone-opt", action="append", default=[],
                        help="Backbone option KEY=VALUE, repeatable (e.g. alpha=0.5).")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir() or not args.pairs.is_file():
        print(f"LFW subset not found at {args.data}; nothing to do.")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work or Path(tempfile.mkdtemp(prefix="facekit-lfw-"))

    import facekit
    from facekit.eval.sets import VerificationSet, evaluate_set
    from facekit.model.build import build_model
    from facekit.eval.pairs import read_pairs
    from facekit.data.prepare import prepare_dataset

    prepared = work / "lfw112"
    if not prepared.is_dir():
        report = prepare_dataset(args.data, prepared, size=112, crop=args.crop)
        print(f"prepared {report.written} images, skipped {len(report.skipped)}")
    in_pairs = {name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)}
    train_dir = work / "train"
    train_dir.mkdir(exist_ok=True)
    for identity in sorted(os.listdir(prepared)):
        if identity not in in_pairs and len(os.listdir(prepared / identity)) >= 2:
            link = train_dir / identity
            if not link.exists():
                link.symlink_to(prepared / identity, target_is_directory=True)
    identities = sorted(os.listdir(train_dir))
    assert not set(identities) & in_pairs  # never train on a pair identity
    images = sum(len(os.listdir(train_dir / i)) for i in identities)
    print(f"training on {images} images of {len(identities)} identities "
          f"(excluded {len(in_pairs)} pair identities)")

    backbone_options = dict(option.split("=", 1) for option in args.backbone_opt)
    runs = ([(("softmax" if loss == "softmax" else "normdense"), loss)
             for loss in args.losses.split(",")] if args.losses else [(args.head, args.loss)])
    vset = VerificationSet.from_pairs(prepared, args.pairs)
    rows = []
    for head, loss in runs:
        started = time.perf_counter()
        result = facekit.train(data=str(train_dir), backbone=args.backbone,
                               backbone_options=backbone_options, head=head, loss=loss,
                               epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                               output=str(work / f"run-{loss}-{int(time.time())}"), verbose=2)
        seconds = time.perf_counter() - started
        trained, _ = evaluate_set(facekit.load_model(result.basic_model_path), vset)
        rows.append((f"{head}/{loss}", trained, seconds))
    untrained_model, _ = build_model(len(identities), args.backbone, runs[0][0],
                                     backbone_options=backbone_options)
    untrained, _ = evaluate_set(untrained_model, vset)
    rows += [("untrained network", untrained, None), ("raw pixels", raw_pixel_result(vset), None)]

    options = "".join(f", {k}={v}" for k, v in backbone_options.items())
    print(f"\nLFW subset: {len(vset.issame)} pairs, {vset.folds} folds; {args.backbone}"
          f"{options}, {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}")
    print(f"{'':<28}{'accuracy':>18}{'AUC':>8}{'TAR@FAR=1e-3':>14}{'train min':>11}")
    for name, res, seconds in rows:
        minutes = "" if seconds is None else f"{seconds / 60:.1f}"
        print(f"{name:<28}{res.accuracy:>10.4f} ± {res.accuracy_std:.4f}{res.auc:>8.4f}"
              f"{res.tar_at_far['1e-03']['tar']:>14.4f}{minutes:>11}")
    return 0


def raw_pixel_result(vset):
    """The protocol on flattened pixels: flip-summed, L2-normalized."""
    from facekit.data.pipeline import make_dataset
    from facekit.data.index import DatasetIndex
    from facekit.eval.verification import evaluate_embeddings

    index = DatasetIndex(np.asarray(vset.images), np.zeros(len(vset.images), np.int32), [])
    batches = make_dataset(index, image_size=112, batch_size=256, training=False,
                           skip_unreadable=False)
    vectors = np.concatenate([
        (images.numpy().astype(np.float32) + images.numpy()[:, :, ::-1].astype(np.float32))
        .reshape(len(images), -1) for images, _ in batches])
    return evaluate_embeddings(vectors[vset.first], vectors[vset.second], vset.issame,
                               vset.folds)


if __name__ == "__main__":
    sys.exit(main())
