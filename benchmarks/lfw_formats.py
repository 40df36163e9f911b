"""The field's formats and the deployment tools, end to end on the LFW subset.

From the folders `benchmarks/lfw_subset.py` prepares (WORK/lfw112, WORK/train):
  1. `facekit pack WORK/train WORK/rec --format rec`: the training identities as an
     insightface train.rec, then `facekit train --data WORK/rec` (a short budget;
     `--epochs`), so training reads the .rec without MXNet;
  2. the 1,800 LFW pairs as insightface .bin files, all and one per fold (WORK/bins), and
     `facekit eval --bin WORK/bins` over all of them in one table (with --model);
  3. `facekit compare` on the first same-person and different-person pair;
  4. `facekit identify`: gallery = the first image of every pair identity with two
     or more images (none trained on), probes = their other images.
Each command is printed before its output.

    python benchmarks/lfw_formats.py --work /tmp/lfwwork [--model RUN] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def facekit(*args) -> None:
    print("\n$ facekit " + " ".join(map(str, args)), flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "facekit", *map(str, args)], check=True, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="benchmarks/lfw_subset.py's working folder.")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--model", type=Path, default=None,
                        help="Model for eval/compare/identify. Default: the .rec run.")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    prepared, train = args.work / "lfw112", args.work / "train"
    if not prepared.is_dir() or not train.is_dir() or not args.pairs.is_file():
        print("Run benchmarks/lfw_subset.py --work WORK first; nothing to do.")
        return 0
    from facekit.eval.binfile import write_bin
    from facekit.eval.pairs import read_pairs
    from facekit.eval.sets import VerificationSet

    rec = args.work / "rec"
    if not rec.exists():
        facekit("pack", train, rec, "--format", "rec")
    run = args.work / f"rec-run-{args.epochs}"
    if not (run / "basic_model.keras").exists():
        facekit("train", "--data", rec, "--epochs", args.epochs, "--output", run)
    model = args.model or run

    bins = args.work / "bins"
    vset = VerificationSet.from_pairs(prepared, args.pairs)
    if not bins.exists():
        bins.mkdir()
        # Same and different pairs alternate, so each of eval's 10 folds (taken in file
        # order) holds both; lfw.bin holds all 1,800 pairs, lfw_fold<k>.bin one LFW fold.
        per_fold = len(vset.issame) // vset.folds
        folds = [list(range(k * per_fold, (k + 1) * per_fold)) for k in range(vset.folds)]
        named = [("lfw", [r for rows in folds for r in rows])] + [
            (f"lfw_fold{k + 1}", rows) for k, rows in enumerate(folds)]
        for name, rows in named:
            same = [r for r in rows if vset.issame[r]]
            different = [r for r in rows if not vset.issame[r]]
            order = [r for pair in zip(same, different) for r in pair]
            images = [Path(vset.images[i]).read_bytes() for r in order
                      for i in (vset.first[r], vset.second[r])]
            write_bin(bins / f"{name}.bin", images, vset.issame[order])
    facekit("eval", "--model", model, "--bin", bins, "--report", args.work / "bins.json")

    same = next(r for r in range(len(vset.issame)) if vset.issame[r])
    different = next(r for r in range(len(vset.issame)) if not vset.issame[r])
    for row in (same, different):
        facekit("compare", vset.images[vset.first[row]], vset.images[vset.second[row]],
                "--model", model, "--far", "1e-2")

    gallery, probes = args.work / "gallery", args.work / "probes"
    if not gallery.exists():
        in_pairs = {name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)}
        for name in sorted(in_pairs):
            images = sorted((prepared / name).iterdir())
            if len(images) < 2:
                continue
            for number, image in enumerate(images):
                folder = (gallery if number == 0 else probes) / name
                folder.mkdir(parents=True, exist_ok=True)
                (folder / image.name).symlink_to(image)
    facekit("identify", "--gallery", gallery, "--probe", probes, "--model", model,
            "--out", args.work / "identify.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
