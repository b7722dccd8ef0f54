"""Same seed, same file, whatever the number of workers; a different seed gives different events."""

import awkward as ak
import uproot

from crossfed.generate import core


def _arrays(path, tree):
    return uproot.open(path)[tree].arrays()


def test_same_seed_same_events_for_any_worker_count(tmp_path, monkeypatch):
    monkeypatch.setattr(core, "CHUNK_EVENTS", 4)  # 8 events -> 2 chunks, spread over 2 spawned workers
    one = core.generate("ttbar", "atlas", 8, 7, tmp_path / "one.root", workers=1, progress=False)
    two = core.generate("ttbar", "atlas", 8, 7, tmp_path / "two.root", workers=2, progress=False)
    core.generate("ttbar", "atlas", 4, 8, tmp_path / "other.root", workers=1, progress=False)  # another seed
    assert one["workers"] == 1 and two["workers"] == 2
    a, b = _arrays(tmp_path / "one.root", "mini"), _arrays(tmp_path / "two.root", "mini")
    assert len(a) == len(b) == 8
    for field in a.fields:
        assert ak.all(ak.ravel(a[field]) == ak.ravel(b[field])), field
    assert one["n_generated"] == two["n_generated"] and one["cross_section_pb"] == two["cross_section_pb"]
    c = _arrays(tmp_path / "other.root", "mini")
    assert c.jet_pt.tolist() != a.jet_pt[:4].tolist()
