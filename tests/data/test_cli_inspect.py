"""`crossfed inspect` through the real command line: tables on good files, one clear line and exit 2 on bad."""

from __future__ import annotations

import os
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
from root_samples import nanoaod_branches, write_ttree

from crossfed.cli import main


def crossfed(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from crossfed.cli import main; main()", *args]
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    if "PYTHONPATH" in os.environ:  # a worktree's own platform/ (see the brief), else the installed crossfed
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_inspect_detects_the_schema_and_shows_the_tables(physlite_rntuple_file, atlas_mini_file):
    result = crossfed("inspect", str(physlite_rntuple_file))
    assert result.returncode == 0, result.stderr
    assert "│ atlas_physlite" in result.stdout and "events read" in result.stdout
    muon_row = next(line for line in result.stdout.splitlines() if line.startswith("│ muon "))
    assert "1.00" in muon_row and "60.00" in muon_row  # mean 1 muon per event, hardest 60 GeV
    result = crossfed("inspect", str(atlas_mini_file), "--selection", "n_bjets >= 1")
    assert result.returncode == 0, result.stderr
    assert "│ atlas_opendata" in result.stdout and "66.7%" in result.stdout


def _bad_inputs(tmp_path):
    """(arguments, text the one-line error must contain) for every kind of bad input."""
    nano = write_ttree(tmp_path / "nano.root", "Events", nanoaod_branches())
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    text = tmp_path / "notes.root"
    text.write_text("these are not the events you are looking for\n" * 20)
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(nano.read_bytes()[: nano.stat().st_size // 2])
    (tmp_path / "folder.root").mkdir()
    branches = nanoaod_branches()
    branches["Jet"] = ak.without_field(branches["Jet"], "btagDeepFlavB")
    no_btag = write_ttree(tmp_path / "no_btag.root", "Events", branches)
    other = write_ttree(tmp_path / "other.root", "Delphes", {"x": np.zeros(3)})
    all_nan = nanoaod_branches()
    all_nan["MET_pt"] = np.full(3, np.nan, np.float32)
    all_nan = write_ttree(tmp_path / "all_nan.root", "Events", all_nan)
    typo = tmp_path / "typo.yaml"
    typo.write_text("tree: Events\ncollections:\n  muons: {pt: Muon_pt, eta: Muon_eta, phi: Muon_phi, masss: m}\n")
    deep = "(" * 1000 + "met > 1" + ")" * 1000
    half = truncated.stat().st_size
    return [
        (["inspect", str(tmp_path / "missing.root")], "missing.root: no such file"),
        (["inspect", str(tmp_path / "nano.rot")], "nano.rot: no such file (did you mean 'nano.root'?)"),
        (["inspect", str(empty)], "empty.root: empty file (0 bytes)"),
        (["inspect", str(text)], "notes.root: not a ROOT file (it does not start with the ROOT signature 'root')"),
        (["inspect", str(truncated)], f"truncated.root: truncated ROOT file ({half} of {nano.stat().st_size} bytes)"),
        (["inspect", str(tmp_path / "folder.root")], "folder.root: is a directory, not a ROOT file"),
        (["inspect", str(nano), "--schema", "atlas_opendata"], "nano.root: no tree 'mini'; the file has 'Events'"),
        (["inspect", str(nano), "--schema", "cms_nanoad"], "unknown schema 'cms_nanoad' (did you mean 'cms_nanoaod'?)"),
        (["inspect", str(other)], "other.root: cannot tell the schema from its trees (Delphes)"),
        (["inspect", str(no_btag)], "no_btag.root: tree 'Events' has no branch 'Jet_btagDeepFlavB'"),
        (["inspect", str(nano), "--selection", "n_muons >= 5"], "selection 'n_muons >= 5' keeps none of the 3 events"),
        (["inspect", str(nano), "--selection", "n_jet > 1"], "unknown variable 'n_jet' (did you mean 'n_jets'?)"),
        (["inspect", str(nano), "--selection", deep], "nested too deeply (more than 100 levels)"),
        (["inspect", str(nano), "--chunk-size", "0"], "--chunk-size must be ≥ 1: a number of entries or a memory size"),
        (["inspect", str(all_nan)], "all_nan.root: no events left after dropping 3 with NaN/inf kinematics"),
        (["inspect", str(nano), "--schema", str(typo)], "collections.muons.masss: unknown key (did you mean 'mass'?)"),
    ]


def crossfed_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's main() in this process (no interpreter start-up per case): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["crossfed", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_each_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    cases = _bad_inputs(tmp_path)
    real = crossfed(*cases[0][0])  # one through a real process, the rest through the same main()
    assert (real.returncode, real.stderr.count("\n")) == (2, 1) and cases[0][1] in real.stderr
    for args, expected in cases:
        code, out, err = crossfed_in_process(monkeypatch, capsys, *args)
        assert code == 2, (args, out, err)
        assert "Traceback" not in err + out, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert expected in lines[0], (expected, lines[0])


def test_non_finite_events_are_a_warning_not_an_error(tmp_path):
    branches = nanoaod_branches()
    branches["MET_pt"] = np.array([35.0, np.nan, 50.0], np.float32)
    path = write_ttree(tmp_path / "nan.root", "Events", branches)
    result = crossfed("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "warning: 1 of 3 event(s) with non-finite kinematics (NaN/inf) dropped" in result.stderr
    assert "dropped (NaN/inf kinematics) │ 1" in result.stdout


def test_help_describes_the_options():
    result = crossfed("inspect", "--help")
    assert result.returncode == 0 and "--selection" in result.stdout and "--schema" in result.stdout


def test_inspect_shows_the_btag_fallback_and_the_object_definitions(tmp_path):
    branches = nanoaod_branches()
    branches["Jet"] = ak.with_field(branches["Jet"], ak.Array([[-3000.0] * 3, [-3000.0], []]), "btagDeepFlavB")
    branches["Jet"] = ak.with_field(branches["Jet"], ak.Array([[0.9, 0.1, 0.7], [0.2], []]), "btagDeepB")
    path = write_ttree(tmp_path / "nano2015.root", "Events", branches)
    result = crossfed("inspect", str(path), "--selection", "n_bjets >= 1")
    assert result.returncode == 0, result.stderr
    assert "b-tag used                   │ Jet_btagDeepB > 0.6321 (3 events)" in result.stdout
    assert "Jet_btagDeepFlavB has no value inside its range [0, 1] (all -3000) (1 chunk(s))" in result.stdout
    assert "MET_pt, MET_phi (3 events)" in result.stdout and "33.3%" in result.stdout  # DeepB 0.9, 0.7 in event 0
    assert result.stderr.count("warning: b-tag: Jet_btagDeepFlavB") == 1
    electrons = next(line for line in result.stdout.splitlines() if line.startswith("│ electrons"))
    assert "pT > 10 GeV, |η| < 2.5; Electron_cutBased >= 2" in electrons
    assert "overlap removal: taus within ΔR < 0.4 of electrons" in result.stdout


def test_inspect_branches_lists_trees_rntuples_and_types(tmp_path, physlite_rntuple_file):
    nano = write_ttree(tmp_path / "nano.root", "Events", nanoaod_branches())
    result = crossfed("inspect", str(nano), "--branches")
    assert result.returncode == 0, result.stderr
    assert "TTree Events (3 entries" in result.stdout
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
            if line.count("│") == 3}
    assert rows["Jet_btagDeepFlavB"] == "float[]" and rows["MET_pt"] == "float" and rows["Muon_looseId"] == "bool[]"
    result = crossfed("inspect", str(physlite_rntuple_file), "--branches")
    assert result.returncode == 0, result.stderr
    assert "RNTuple EventData (3 entries" in result.stdout
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
            if line.count("│") == 3}
    assert rows["MET_Core_AnalysisMETAuxDyn:name"] == "std::vector<std::string>"
    assert rows["AnalysisMuonsAuxDyn:quality"] == "std::vector<std::uint8_t>"
