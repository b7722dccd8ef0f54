"""`crossfed inspect` through the real command line: tables on good files, one clear line and exit 2 on bad."""

from __future__ import annotations

import subprocess
import sys

import awkward as ak
import numpy as np
from root_samples import nanoaod_branches, write_ttree


def crossfed(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from crossfed.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"COLUMNS": "200",
                          "PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_inspect_detects_the_schema_and_shows_the_tables(physlite_rntuple_file, atlas_mini_file):
    result = crossfed("inspect", str(physlite_rntuple_file))
    assert result.returncode == 0, result.stderr
    assert "│ atlas_physlite" in result.stdout and "events read" in result.stdout
    muon_row = next(line for line in result.stdout.splitlines() if "muon" in line)
    assert "1.00" in muon_row and "60.00" in muon_row  # mean 1 muon per event, hardest 60 GeV
    result = crossfed("inspect", str(atlas_mini_file), "--selection", "n_bjets >= 1")
    assert result.returncode == 0, result.stderr
    assert "│ atlas_opendata" in result.stdout and "66.7%" in result.stdout


def _bad_inputs(tmp_path):
    """(arguments, text the one-line error must contain) for every kind of bad input."""
    nano = write_ttree(tmp_path / "nano.root", "Events", nanoaod_branches())
    text = tmp_path / "notes.root"
    text.write_text("these are not the events you are looking for\n" * 20)
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(nano.read_bytes()[: nano.stat().st_size // 2])
    branches = nanoaod_branches()
    branches["Jet"] = ak.without_field(branches["Jet"], "btagDeepFlavB")
    no_btag = write_ttree(tmp_path / "no_btag.root", "Events", branches)
    other = write_ttree(tmp_path / "other.root", "Delphes", {"x": np.zeros(3)})
    typo = tmp_path / "typo.yaml"
    typo.write_text("tree: Events\ncollections:\n  muons: {pt: Muon_pt, eta: Muon_eta, phi: Muon_phi, masss: m}\n")
    return [
        (["inspect", str(tmp_path / "missing.root")], "missing.root: no such file"),
        (["inspect", str(text)], "notes.root: not a readable ROOT file"),
        (["inspect", str(truncated)], "truncated.root: cannot read tree 'Events', the file may be truncated or corrupt"),
        (["inspect", str(nano), "--schema", "atlas_opendata"], "nano.root: no tree 'mini'; the file has 'Events'"),
        (["inspect", str(other)], "other.root: cannot tell the schema from its trees (Delphes)"),
        (["inspect", str(no_btag)], "no_btag.root: tree 'Events' has no branch 'Jet_btagDeepFlavB'"),
        (["inspect", str(nano), "--selection", "n_muons >= 5"], "selection 'n_muons >= 5' keeps none of the 3 events"),
        (["inspect", str(nano), "--selection", "n_jet > 1"], "unknown variable 'n_jet' (did you mean 'n_jets'?)"),
        (["inspect", str(nano), "--schema", str(typo)], "collections.muons.masss: unknown key (did you mean 'mass'?)"),
    ]


def test_each_bad_input_is_one_line_and_exit_2(tmp_path):
    for args, expected in _bad_inputs(tmp_path):
        result = crossfed(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
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
