"""Options declared once: the CLI, validation, stages, run.toml and the docs all derive
from the declarations in facekit/config.py."""

from pathlib import Path

import pytest
import typer.main

import facekit
from facekit.cli import app
from facekit.config import (DEFAULT_LR, OPTIMIZERS, OPTIONS, PANELS, STAGE_KEYS, OptionError,
                            TrainConfig, options_markdown, read_config_file)
from tests.conftest import REPO, run_facekit


def test_docs_option_table_is_generated_from_the_declarations():
    written = (REPO / "docs" / "options.md").read_text()
    assert written == options_markdown(), (
        "docs/options.md is stale: python -m facekit.config > docs/options.md")


def test_every_optimizer_has_a_default_learning_rate_that_the_help_states():
    assert set(DEFAULT_LR) == set(OPTIMIZERS)
    assert DEFAULT_LR["adam"] == 5e-3  # the measured default (docs/training.md)
    for name, rate in DEFAULT_LR.items():
        assert f"{rate:g} ({name})" in OPTIONS["lr"].spec.help


def test_train_command_parameters_are_the_declared_options():
    command = typer.main.get_command(app).commands["train"]
    flags = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    declared = {option.flag for option in OPTIONS.values() if option.flag}
    switches = {o.negated_flag for o in OPTIONS.values() if o.negated_flag}
    assert "--no-embedding-bn" in switches and "--no-flip" in switches
    assert flags == declared | switches | {"--config", "--resume", "--pooling"}
    panels = {param.rich_help_panel for param in command.params if not param.hidden}
    assert panels == set(PANELS)


def test_every_option_is_declared_with_a_panel_and_help():
    for option in OPTIONS.values():
        assert option.spec.panel in PANELS and option.spec.help.endswith("."), option.name
    assert set(STAGE_KEYS) == {name for name, o in OPTIONS.items() if o.spec.stage}
    assert "batch_size" not in STAGE_KEYS and "lr" in STAGE_KEYS


@pytest.mark.parametrize("options,message", [
    ({"batch_size": 0}, "batch_size must be in [1, 65536], got 0."),
    ({"batch_size": "8"}, "batch_size must be a whole number, got '8'."),
    ({"lr": True}, "lr must be a number, got True."),
    ({"val_split": float("nan")}, "val_split must be in [0, 1), got nan."),
    ({"split_by": "max"}, "split_by must be one of images, identities, got 'max'."),
    ({"eval_bins": "a.bin"}, "eval_bins must be a list, got 'a.bin'."),
    ({"step_epochs": [1, "2"]}, "step_epochs must be a list, got [1, '2']."),
    ({"schedule": "step"}, "schedule step needs step_epochs, e.g. 10,15."),
    ({"stages": [{"epochs": 2}, {"lr": -1}]}, "Stage 2: lr must be positive, got -1.0."),
])
def test_bad_values_name_the_option_as_a_python_argument(options, message):
    with pytest.raises(OptionError) as error:
        TrainConfig(**options).checked()
    assert str(error.value) == message


def test_values_are_normalized():
    config = TrainConfig(lr=1, eval_bins=(Path("a.bin"),), stages=[{"lr": 1}]).checked()
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.eval_bins == ["a.bin"] and config.stages == [{"lr": 1.0}]


def test_the_same_mistake_is_spelled_as_the_user_gave_it(tmp_path):
    """--batch-size on the command line, batch_size in a run.toml, and a file value
    overridden on the command line is the command line's."""
    assert "--batch-size must be in [1, 65536], got 0." in run_facekit(
        "train", "--batch-size", "0").stderr
    config = tmp_path / "run.toml"
    config.write_text("batch-size = 0\n")
    result = run_facekit("train", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: batch_size must be in [1, 65536], got 0."
    result = run_facekit("train", "--config", str(config), "--batch-size", "-1")
    assert "--batch-size must be in [1, 65536], got -1." in result.stderr
    config.write_text('batch_size = "big"\n')
    assert "batch_size must be a whole number, got 'big'." in run_facekit(
        "train", "--config", str(config)).stderr
    with pytest.raises(facekit.FacekitError, match=r"^batch_size must be in \[1, 65536\]"):
        facekit.train(batch_size=0)


def test_run_toml_reader_refuses_unknown_keys(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("batch_sise = 8\n")
    with pytest.raises(facekit.FacekitError, match="Unknown training option\\(s\\): batch_sise"):
        read_config_file(config)
    config.write_text("stages = 3\n")
    with pytest.raises(facekit.FacekitError, match="stages must be a list of tables"):
        read_config_file(config)


def test_switches_with_an_unset_default_have_both_forms():
    result = run_facekit("train", "--jit-compile", "--no-jit-compile")
    assert result.returncode == 2
    assert "Give --jit-compile or --no-jit-compile, not both." in result.stderr
