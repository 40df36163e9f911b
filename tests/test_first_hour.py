"""The first hour of a new user, as the README tells it: train on the demo data, then run
the commands the run prints at its end, as printed, with the output going to a file."""

import re
import shlex

import pytest

from tests.conftest import run_facekit

pytestmark = pytest.mark.slow


def test_the_quick_start_says_what_it_uses_and_what_comes_next(tmp_path):
    # The README's first command, smaller (a narrow network on 32-pixel faces), with its
    # output in a file as Slurm or CI would take it.
    trained = run_facekit("train", "--backbone", "mobilenetv2", "--backbone-opt", "alpha=0.35",
                          "--image-size", "32", "--epochs", "2", "--steps-per-epoch", "2",
                          "--head", "normdense", "--loss", "arcface", "--output",
                          str(tmp_path / "run"), cwd=tmp_path,
                          env={"TF_CPP_MIN_LOG_LEVEL": "0"})  # as a user's shell has it
    assert trained.returncode == 0, trained.stderr[-3000:]
    out, err = trained.stdout, trained.stderr
    assert not re.search(r"^[IWE]\d{4} ", err, re.M), err  # no TensorFlow start-up lines
    assert "cuInit" not in err and "absl" not in err
    assert "\x08" not in out and "\x1b[" not in out  # one plain line per epoch
    assert re.search(r"^Epoch 2/2\n2/2 - \d+s", out, re.M), out
    lines = out.splitlines()
    assert lines[0].startswith("Data: the built-in demo dataset")
    assert any(line.startswith("Training on the CPU") for line in lines[:5])
    assert any(line.startswith("Model: mobilenetv2 backbone") for line in lines[:6])
    assert "validation" not in out  # nothing was validated
    assert re.search(r"^Run folder: .*run \(\d+ MB\)$", out, re.M)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "basic_model_last.keras" not in files  # the same model twice, before
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.keras")] == [
        "epoch-0002.keras"]
    assert (tmp_path / "run" / "model.keras").stat().st_ino == (
        tmp_path / "run" / "checkpoints" / "epoch-0002.keras").stat().st_ino
    # The next commands, as printed, work one after the other.
    commands = [shlex.split(line.strip())[1:] for line in out.split("Next:", 1)[1].splitlines()
                if line.strip().startswith("facekit ")]
    assert [c[0] for c in commands] == ["demo-data", "eval", "compare"]
    for command in commands:
        if command[0] == "demo-data":
            command += ["--size", "32", "--identities", "8", "--images", "10"]
        if command[0] == "eval":
            command[command.index("600")] = "80"  # 8 people x 10 images hold fewer pairs
        result = run_facekit(*command, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        assert not re.search(r"^[IWE]\d{4} ", result.stderr, re.M)
    assert re.search(r"^similarity -?\d\.\d{4}", result.stdout, re.M), result.stdout
