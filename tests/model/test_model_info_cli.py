"""`crossfed model-info` on its own Typer app (the command module's register(app))."""

import typer
from typer.testing import CliRunner

from crossfed.cli import model as model_cli
from crossfed.errors import CrossfedError


def run(*args):
    app = typer.Typer()
    model_cli.register(app)
    app.command("noop")(lambda: None)  # a second command keeps Typer from flattening the app
    return CliRunner().invoke(app, ["model-info", *args])


def test_model_info_lists_every_preset_with_group_counts():
    result = run()
    assert result.exit_code == 0, result.output
    for preset in ("tiny", "kishimoto-11m", "large"):
        assert preset in result.output
    for column in ("adapter", "backbone", "heads", "classifier", "total", "MFLOPs"):
        assert column in result.output
    assert "384×6" in result.output and "1024×8" in result.output


def test_model_info_for_a_config_uses_its_experiments_tasks_and_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "experiments:\n  cms: {schema: cms_nanoaod}\n  atlas: {schema: atlas_opendata}\n"
        "model: {preset: tiny, dim: 64}\n"
        "training: {tasks: {replaced_object: 1.0, masked_regression: 0.5}}\n"
    )
    result = run("--config", str(config))
    assert result.exit_code == 0, result.output
    assert "2 experiment(s)" in result.output and "masked_regression" in result.output and "64×2" in result.output
    assert "large" not in result.output


def test_unknown_preset_is_a_user_error():
    result = run("--preset", "huge")
    assert isinstance(result.exception, CrossfedError) and "tiny, kishimoto-11m, large" in str(result.exception)
