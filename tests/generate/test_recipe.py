"""Dataset recipes: validation, the cross-section-weighted mixture, and a tiny real recipe end to end."""

import awkward as ak
import pytest
import uproot

from crossfed.errors import CrossfedError
from crossfed.generate import read_metadata
from crossfed.generate.recipe import load_recipe, make_recipe, mixture_counts


def test_shipped_recipes_are_valid():
    for name in ("demo", "study"):
        recipe = load_recipe(f"jobs/datasets/{name}.yaml")
        assert recipe.detectors == ["cms", "atlas"]
        assert {"ttbar", "wjets", "zjets", "single_top"} <= set(recipe.collision_data.processes)
        assert {(t.signal, t.background) for t in recipe.labelled.values()} == {("tth", "ttbar"), ("hplus", "ttbar")}


def test_recipe_rejects_unknown_process(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\noutput_dir: out\nlabelled: {t: {signal: stop, background: ttbar, events: 5}}\n")
    with pytest.raises(CrossfedError, match="unknown process 'stop'"):
        load_recipe(path)


def test_mixture_follows_rates_and_adds_up():
    counts = mixture_counts({"ttbar": 150.0, "wjets": 45.0, "single_top": 5.0}, 1000)
    assert counts == {"ttbar": 750, "wjets": 225, "single_top": 25}
    assert sum(mixture_counts({"a": 1.0, "b": 1.0, "c": 1.0}, 100).values()) == 100
    with pytest.raises(CrossfedError):
        mixture_counts({"a": 0.0}, 10)


def test_tiny_recipe_end_to_end(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\noutput_dir: data\nseed: 3\ndetectors: [cms]\nworkers: 1\n"
        "collision_data: {events: 10, processes: [ttbar, single_top], pilot_events: 40}\n"
        "labelled: {tth_vs_ttbar: {signal: tth, background: ttbar, events: 4}}\n"
    )
    summaries = make_recipe(path, progress=False)
    folder = tmp_path / "data" / "cms"
    assert {p.name for p in folder.iterdir()} == {"collision_data.root", "tth.root", "ttbar.root"}
    mixture = read_metadata(folder / "collision_data.root")
    assert mixture["n_events"] == 10 and set(mixture["mixture"]) == {"ttbar", "single_top"}
    assert sum(m["n_events"] for m in mixture["mixture"].values()) == 10
    assert all(m["cross_section_pb"] > 0 for m in mixture["mixture"].values())
    events = uproot.open(folder / "collision_data.root")["Events"].arrays()
    assert len(events) == 10 and ak.all(events.nJet == ak.num(events.Jet_pt))
    assert sorted(events.event.tolist()) == list(range(1, 11))  # renumbered after the merge
    assert {"nJet", "Jet_btagDeepFlavB", "nMuon", "MET_pt"} <= set(events.fields)
    assert read_metadata(folder / "tth.root")["n_events"] == 4
    assert len(summaries) == 3
