"""The run configuration: valid files load, every kind of mistake names its key path and file."""

import subprocess
import sys
from pathlib import Path

import pytest

from crossfed.config import apply_overrides, load_config
from crossfed.errors import CrossfedError

VALID = """
name: two-experiments
experiments:
  cms:
    schema: cms_nanoaod
    pretrain: {files: [data/cms/*.root], selection: "n_leptons >= 1"}
    cluster: {node_group: cms, workers: 2}
  atlas:
    schema: atlas_opendata
    pretrain: {files: [/abs/atlas.root]}
federation: {rounds: 3, strategy: {name: fedadam, server_lr: 0.01}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads_with_defaults_and_resolves_paths(tmp_path):
    cfg = load_config(write(tmp_path, VALID))
    assert cfg.federation.strategy.name == "fedadam"
    assert cfg.federation.strategy.server_lr == 0.01
    assert cfg.training.zero_stage == 0 and cfg.training.batch_size == 512
    assert cfg.experiments["cms"].cluster.workers == 2
    assert cfg.experiments["cms"].pretrain.files == [str(tmp_path / "data/cms/*.root")]
    assert cfg.experiments["atlas"].pretrain.files == ["/abs/atlas.root"]


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"federation.roundz": 3}, "federation.roundz: unknown key (did you mean 'rounds'?)"),
        ({"federation.rounds": 0}, "federation.rounds: Input should be greater than 0"),
        ({"training.zero_stage": 4}, "training.zero_stage"),
        ({"training.tasks": {"replaced_object": 0}}, "weights must be positive"),
        ({"data.validation_fraction": 0.6, "data.test_fraction": 0.5}, "must be below 1"),
        ({"federation.min_clients": 3}, "only 2 experiment(s)"),
        ({"experiments.cms.pretrain.files": []}, "experiments.cms.pretrain.files"),
        ({"data.chunk_size": "0"}, "data.chunk_size: must be ≥ 1: a number of entries or a memory size"),
    ],
)
def test_mistakes_name_the_key_path_and_file(tmp_path, patch, expected):
    import yaml

    raw = apply_overrides(yaml.safe_load(VALID), patch)
    path = write(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(CrossfedError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(write(tmp_path, VALID), ["federation.rounds=7", "model.preset=kishimoto-11m"])
    assert cfg.federation.rounds == 7 and cfg.model.preset == "kishimoto-11m"
    with pytest.raises(CrossfedError, match="expected KEY=VALUE"):
        load_config(write(tmp_path, VALID), ["federation.rounds"])


def test_cli_validate_reports_one_clear_error_and_exit_2(tmp_path):
    path = write(tmp_path, VALID.replace("rounds: 3", "rounds: three"))
    result = subprocess.run(
        [sys.executable, "-m", "crossfed", "validate", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "federation.rounds" in result.stderr and "Traceback" not in result.stderr
    # VALID names data that does not exist here: --skip-data checks the configuration alone
    # (tests/data/test_validate.py checks the data part)
    ok = subprocess.run([sys.executable, "-m", "crossfed", "validate", "--skip-data", str(write(tmp_path, VALID))],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "2 experiment(s)" in ok.stdout and "data not checked" in ok.stdout


def test_broken_yaml_names_line(tmp_path):
    path = write(tmp_path, "experiments: {cms: [\n")
    with pytest.raises(CrossfedError, match=r"not valid YAML \(line"):
        load_config(path)
