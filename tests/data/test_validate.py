"""`crossfed validate` checks the data before Ray starts: each missing or broken piece is one line."""

from __future__ import annotations

import socket
import sys

import pytest
import yaml
from root_samples import atlas_mini_branches, nanoaod_branches, write_ttree

from crossfed.cli import main
from crossfed.config import load_config
from crossfed.data.checks import check_experiment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _validate(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["crossfed", "validate", *args])
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _config(tmp_path, experiments: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"experiments": experiments, "federation": {"min_clients": 1}}, sort_keys=False))
    return str(path)


def test_a_good_config_passes_with_its_files_counted(tmp_path, monkeypatch, capsys):
    write_ttree(tmp_path / "cms_0.root", "Events", nanoaod_branches())
    write_ttree(tmp_path / "cms_1.root", "Events", nanoaod_branches())
    write_ttree(tmp_path / "mini.root", "mini", atlas_mini_branches())
    config = _config(tmp_path, {
        "cms": {"schema": "cms_nanoaod", "pretrain": {"files": ["cms_*.root"], "selection": "n_bjets >= 1"}},
        "atlas": {"schema": "atlas_opendata", "pretrain": {"files": ["mini.root"]},
                  "finetune": {"signal": {"files": ["mini.root"]}, "background": {"files": ["mini.root"]}}}})
    code, out, err = _validate(monkeypatch, capsys, config)
    assert code == 0, err
    assert "ok" in out and "2 experiment(s): cms, atlas; 5 data file(s) checked against their schemas" in out


def test_every_missing_piece_is_one_line_naming_its_key(tmp_path, monkeypatch, capsys):
    write_ttree(tmp_path / "nano.root", "Events", nanoaod_branches())
    branches = nanoaod_branches()
    branches["Muon"] = branches["Muon"][["pt", "eta", "phi", "mass", "pfRelIso04_all", "looseId"]]  # no charge
    write_ttree(tmp_path / "no_charge.root", "Events", branches)
    (tmp_path / "notes.root").write_text("not ROOT\n")
    (tmp_path / "runs").mkdir()
    url = f"http://127.0.0.1:{_free_port()}/events.root"
    config = _config(tmp_path, {
        "typo_schema": {"schema": "cms_nanoad", "pretrain": {"files": ["nano.root"]}},
        "no_yaml": {"schema": "schemas/cms.yaml", "pretrain": {"files": ["nano.root"]}},
        "missing_file": {"schema": "cms_nanoaod", "pretrain": {"files": ["nano.rot"]}},
        "empty_glob": {"schema": "cms_nanoaod", "pretrain": {"files": ["data/*.root"]}},
        "directory": {"schema": "cms_nanoaod", "pretrain": {"files": ["runs"]}},
        "branch": {"schema": "cms_nanoaod", "pretrain": {"files": ["no_charge.root"]}},
        "bad_second": {"schema": "cms_nanoaod", "pretrain": {"files": ["nano.root", "notes.root", url]}},
        "selection": {"schema": "cms_nanoaod", "pretrain": {"files": ["nano.root"], "selection": "n_jet >= 2 and"}},
    })
    code, out, err = _validate(monkeypatch, capsys, config)
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert lines[0] == "error: 9 problems", err
    expected = [
        "experiments.typo_schema.schema: unknown schema 'cms_nanoad' (did you mean 'cms_nanoaod'?)",
        f"experiments.no_yaml.schema: {tmp_path}/schemas/cms.yaml: no such schema file",
        "experiments.missing_file.pretrain.files: " f"{tmp_path}/nano.rot: no such file (did you mean 'nano.root'?)",
        f"experiments.empty_glob.pretrain.files: {tmp_path}/data/*.root: no file matches this pattern",
        f"experiments.directory.pretrain.files: {tmp_path}/runs: is a directory, not a ROOT file",
        "experiments.branch.pretrain.files: " f"{tmp_path}/no_charge.root: tree 'Events' has no branch 'Muon_charge' "
        "(schema key collections.muons.charge)",
        f"experiments.bad_second.pretrain.files: {tmp_path}/notes.root: not a ROOT file",
        f"experiments.bad_second.pretrain.files: {url}: cannot open this URL (unreachable, or not a ROOT file)",
        "experiments.selection.pretrain.selection: selection 'n_jet >= 2 and': not a valid expression",
    ]
    for line, wanted in zip(lines[1:], expected):
        assert line.startswith(f"  {config}: ") and wanted in line, (wanted, line)


def test_a_selection_and_the_files_are_checked_even_when_the_schema_does_not_load(tmp_path):
    config = load_config(_config(tmp_path, {"cms": {"schema": "nanoaod", "pretrain": {
        "files": ["missing.root"], "selection": "n_jet > 1"}}}))
    problems, n_files = check_experiment("cms", config.experiments["cms"])
    assert n_files == 0 and [p.split(":")[0] for p in problems] == [
        "experiments.cms.schema", "experiments.cms.pretrain.selection", "experiments.cms.pretrain.files"]
    assert "did you mean 'n_jets'?" in problems[1]
