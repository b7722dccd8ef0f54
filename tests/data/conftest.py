"""Fixtures: the hand-made events of root_samples.py written as real ROOT files."""

from __future__ import annotations

from pathlib import Path

import pytest
from root_samples import atlas_mini_branches, nanoaod_branches, physlite_fields, write_rntuple, write_ttree


@pytest.fixture
def nanoaod_file(tmp_path) -> Path:
    return write_ttree(tmp_path / "nano.root", "Events", nanoaod_branches())


@pytest.fixture
def atlas_mini_file(tmp_path) -> Path:
    return write_ttree(tmp_path / "mini.root", "mini", atlas_mini_branches())


@pytest.fixture
def physlite_rntuple_file(tmp_path) -> Path:
    return write_rntuple(tmp_path / "physlite_rntuple.root", "EventData", physlite_fields(separator=":"))
