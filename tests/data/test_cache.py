"""The tensor cache: hits skip ROOT entirely, any change of content, schema or selection misses."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import uproot
from root_samples import nanoaod_branches, write_ttree

import crossfed.data.files
from crossfed.config import DataConfig, DatasetConfig
from crossfed.data import load_dataset
from crossfed.data.cache import cached_read


def _read(path, cache_dir, selection=None, schema="cms_nanoaod"):
    return cached_read([str(path)], schema, selection=selection, max_objects=8, chunk_size="100 MB",
                       max_events=None, cache_dir=cache_dir)


def _no_root(*args, **kwargs):
    raise AssertionError("a cache hit must not open a ROOT file")


def test_second_read_comes_from_the_cache_without_opening_root(nanoaod_file, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first, first_stats = _read(nanoaod_file, cache_dir)
    assert not first_stats.from_cache and len(list(cache_dir.glob("*.npz"))) == 1
    assert not list(cache_dir.glob("*.tmp"))  # atomic write leaves no temporary file behind
    monkeypatch.setattr(uproot, "open", _no_root)
    monkeypatch.setattr(crossfed.data.files.uproot, "open", _no_root)
    second, second_stats = _read(nanoaod_file, cache_dir)
    assert second_stats.from_cache and second_stats.events_read == first_stats.events_read == 3
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.types, first.types)
    np.testing.assert_array_equal(second.mask, first.mask)


def test_content_schema_and_selection_changes_miss(nanoaod_file, tmp_path):
    cache_dir = tmp_path / "cache"
    _read(nanoaod_file, cache_dir)
    assert not _read(nanoaod_file, cache_dir, selection="n_jets >= 1")[1].from_cache
    schema = tmp_path / "cms.yaml"
    shutil.copy(crossfed.data.schema.SCHEMA_DIR / "cms_nanoaod.yaml", schema)
    assert _read(nanoaod_file, cache_dir, schema=str(schema))[1].from_cache  # same content, other name: hit
    schema.write_text(schema.read_text().replace("0.2783", "0.5"))
    assert not _read(nanoaod_file, cache_dir, schema=str(schema))[1].from_cache
    # new content under the same name and size: the content hash notices
    branches = nanoaod_branches()
    branches["MET_pt"] = branches["MET_pt"] + 1.0
    write_ttree(nanoaod_file, "Events", branches)
    batch, stats = _read(nanoaod_file, cache_dir)
    assert not stats.from_cache and batch.features[0, 0, 0] == pytest.approx(36.0)


def test_a_file_is_hashed_once_until_it_is_copied_over_even_with_its_size_and_mtime(tmp_path, monkeypatch):
    import os

    import crossfed.data.cache as cache

    hashed = []
    hash_file = cache._hash_file
    monkeypatch.setattr(cache, "_hash_file", lambda path: hashed.append(path) or hash_file(path))
    monkeypatch.setattr(cache, "RACY_S", 0.0)  # the files here were written a moment ago
    events, cache_dir = tmp_path / "events.root", tmp_path / "cache"
    events.write_bytes(b"root" + bytes(1000))
    first = cache.file_fingerprint(str(events), cache_dir)
    assert cache.file_fingerprint(str(events), cache_dir) == first == cache.file_fingerprint(str(events))
    assert hashed == [str(events), str(events)]  # the second call found it remembered; the third has no cache
    # the same size and mtime, other bytes (cp -p over it): its ctime changed, so it is hashed again
    stat = os.stat(events)
    events.write_bytes(b"root" + bytes(999) + b"x")
    os.utime(events, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.file_fingerprint(str(events), cache_dir) != first and len(hashed) == 3
    # a file changed moments ago is hashed every time (a change in the same clock tick would go unseen)
    monkeypatch.setattr(cache, "RACY_S", 60.0)
    fresh = tmp_path / "fresh.root"
    fresh.write_bytes(b"root")
    cache.file_fingerprint(str(fresh), cache_dir)
    cache.file_fingerprint(str(fresh), cache_dir)
    assert hashed[-2:] == [str(fresh), str(fresh)]


def test_load_dataset_uses_the_config(nanoaod_file, tmp_path):
    data = DataConfig(cache_dir=str(tmp_path / "cache"), max_objects=5, chunk_size="1")
    dataset = DatasetConfig(files=[str(nanoaod_file)], selection="n_jets >= 1", max_events=1)
    batch = load_dataset(dataset, "cms_nanoaod", data)
    assert batch.features.shape == (1, 5, 6) and batch.types[0, 0] == 6
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
