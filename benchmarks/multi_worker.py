"""Two `facekit train` workers on loopback next to one worker, on the same machine.

For the record, not for speed: two workers on one machine share its cores
and exchange gradients after every step, so they are not faster than one.
The figure is the last epoch's time per step from Keras' progress bar (after
tracing; precise-BN recalibration off, since it runs inside the last step's
time), as images per second at the same global batch.

    python benchmarks/multi_worker.py [--backbone mobilenetv2] [--steps 30] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def last_epoch_step_seconds(output: str) -> float:
    """The per-step time Keras prints at the end of the last epoch."""
    times = re.findall(r"\d+/\d+ \S*\s*\S* (\d+)(ms|s)/step", re.sub(r"\x1b\[[0-9;]*m", "", output))
    if not times:
        raise SystemExit("No step time in the output:\n" + output[-2000:])
    value, unit = times[-1]
    return int(value) / (1000 if unit == "ms" else 1)


def run(workers: int, args, work: Path) -> float:
    command = [sys.executable, "-m", "facekit", "train", "--backbone", args.backbone,
               "--batch-size", str(args.batch_size), "--steps-per-epoch", str(args.steps),
               "--epochs", str(args.epochs), "--val-split", "0", "--image-size",
               str(args.image_size), "--bn-recalibration", "0"]
    from facekit.cluster import loopback_tf_configs

    configs = loopback_tf_configs(workers) if workers > 1 else [None]
    processes = []
    for tf_config in configs:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if tf_config:
            env["TF_CONFIG"] = tf_config
        processes.append(subprocess.Popen(
            [*command, "--output", str(work / f"{workers}-workers")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=3600)[0] for p in processes]
    for p, out in zip(processes, outputs):
        if p.returncode:
            raise SystemExit(f"facekit train failed:\n{out[-3000:]}")
    return args.batch_size / last_epoch_step_seconds(outputs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        one = run(1, args, Path(work))
        two = run(2, args, Path(work))
    print(f"{args.backbone}, {args.image_size}px, global batch {args.batch_size}, "
          f"demo data, last of {args.epochs} epochs of {args.steps} steps:")
    print(f"  one worker:              {one:8.1f} images/s")
    print(f"  two workers on loopback: {two:8.1f} images/s   ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
