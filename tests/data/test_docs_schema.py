"""docs/schemas.md stays true: its worked example reads a file of the layout it describes."""

from __future__ import annotations

import re
from pathlib import Path

import awkward as ak
import numpy as np
from root_samples import write_ttree

from crossfed.data.events import BTAG, PT, ObjectType as T
from crossfed.data.reader import read_events
from crossfed.data.schema import load_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "schemas.md"


def _worked_example() -> str:
    section = DOC.read_text().split("## Worked example", 1)[1]
    return re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0]


def test_every_schema_key_is_documented():
    text = DOC.read_text()
    from crossfed.data.schema import BtagCandidate, CollectionSpec, Cut, MetSpec, OverlapStep, Schema
    for model in (Schema, CollectionSpec, BtagCandidate, Cut, MetSpec, OverlapStep):
        for key in model.model_fields:
            assert f"`{key}`" in text, f"{model.__name__}.{key} is not in docs/schemas.md"


def test_the_worked_example_reads_an_analysistop_ntuple(tmp_path):
    schema_path = tmp_path / "analysistop.yaml"
    schema_path.write_text(_worked_example())
    assert load_schema(schema_path).tree_names == ["nominal"]
    mev = lambda values: ak.values_astype(ak.Array(values), np.float32) * 1000.0  # noqa: E731
    flt = lambda values: ak.values_astype(ak.Array(values), np.float32)  # noqa: E731
    # event 0: a tight 40 GeV electron, a non-tight 30 GeV one; event 1: an isolated tight muon and one
    # with ptvarcone30 / pT = 0.1; four jets each, DL1r above 2.195 for the first only
    branches = {
        "el": ak.zip({"pt": mev([[40.0, 30.0], []]), "eta": flt([[0.3, -0.5], []]), "phi": flt([[0.1, 2.0], []]),
                      "e": mev([[45.0, 35.0], []]), "charge": flt([[-1, 1], []]),
                      "isTight": ak.values_astype(ak.Array([[1, 0], []]), np.int8)}),
        "mu": ak.zip({"pt": mev([[], [50.0, 35.0]]), "eta": flt([[], [1.0, -1.0]]), "phi": flt([[], [0.5, -2.0]]),
                      "e": mev([[], [80.0, 55.0]]), "charge": flt([[], [1, -1]]),
                      "ptvarcone30": mev([[], [1.0, 3.5]]), "isTight": ak.values_astype(ak.Array([[], [1, 1]]), np.int8)}),
        "jet": ak.zip({"pt": mev([[90.0, 70.0, 40.0, 30.0]] * 2), "eta": flt([[0.0, 1.0, -1.0, 2.0]] * 2),
                       "phi": flt([[3.0, -1.0, 1.2, -2.8]] * 2), "e": mev([[100.0, 110.0, 60.0, 120.0]] * 2),
                       "DL1r": flt([[4.5, 0.3, -1.2, 1.0]] * 2)}),
        "met_met": np.array([20000.0, 45000.0], np.float32), "met_phi": np.array([0.5, -1.5], np.float32),
    }
    path = write_ttree(tmp_path / "ntuple.root", "nominal", branches)
    batch, stats = read_events([str(path)], str(schema_path), selection="n_leptons == 1 and n_jets >= 4")
    assert len(batch) == 2
    assert stats.objects["electrons"] == {"read": 2, "kinematics": 2, "id": 1, "isolation": 1, "overlap": 1}
    assert stats.objects["muons"] == {"read": 2, "kinematics": 2, "id": 2, "isolation": 1, "overlap": 1}
    assert stats.btag == {"jet_DL1r > 2.195": 2} and stats.met == {"met_met, met_phi": 2}
    assert batch.types[0, :6].tolist() == [T.MET, T.ELECTRON, T.BJET, T.JET, T.JET, T.JET]
    assert batch.types[1, 1] == T.MUON and batch.features[1, 1, PT] == np.float32(50.0)
    np.testing.assert_allclose(batch.features[0, 2:6, BTAG], [4.5, 0.3, -1.2, 1.0], rtol=1e-6)


def test_the_readme_schema_example_loads(tmp_path):
    readme = (DOC.parents[1] / "README.md").read_text()
    block = re.findall(r"```yaml\n(tree: .*?)```", readme.split("## Data", 1)[1], re.DOTALL)[0]
    (tmp_path / "readme.yaml").write_text(block)
    schema = load_schema(tmp_path / "readme.yaml")
    assert schema.collections.jets.btag[0].branch == "jet_DL1r" and schema.overlap_removal[0].remove == "jets"
