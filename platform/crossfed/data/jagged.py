"""Objects grouped by event, as flat numpy columns: the reader's working representation of a collection.

The objects of event i are entries offsets[i]:offsets[i+1]; each entry is a row of a table of flat columns
(one value per object read). Selecting and reordering objects only moves the int64 row numbers (`rows`),
so a column is gathered once, when a step needs its values, and the features of the objects that reach
the padded output are gathered once at the end. Sums per event use np.bincount, which adds each event's
values in order starting from 0.0, as awkward's ak.sum does, so the reader gives the bits the awkward
record implementation gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import awkward as ak
import numpy as np


@dataclass
class Jagged:
    offsets: np.ndarray  # int64 [n_events + 1], starting at 0
    table: dict[str, np.ndarray]  # name -> flat values, one per row
    rows: np.ndarray | None = None  # the table row of each object; None: every row, in order
    _gathered: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def empty(n_events: int, dtypes: dict[str, type]) -> Jagged:
        """No object in any of `n_events` events; `dtypes`: column name -> numpy dtype."""
        return Jagged(np.zeros(n_events + 1, np.int64), {name: np.zeros(0, dtype) for name, dtype in dtypes.items()})

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @property
    def size(self) -> int:
        """Objects in all events."""
        return int(self.offsets[-1])

    def __getitem__(self, name: str) -> np.ndarray:
        """One value per object, in object order."""
        if self.rows is None:
            return self.table[name]
        if name not in self._gathered:
            self._gathered[name] = self.table[name][self.rows]
        return self._gathered[name]

    @cached_property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @cached_property
    def event(self) -> np.ndarray:
        """The event of each object."""
        return np.repeat(np.arange(self.n_events), self.counts)

    def row_numbers(self) -> np.ndarray:
        return np.arange(self.size) if self.rows is None else self.rows

    def with_columns(self, **columns: np.ndarray) -> Jagged:
        """The same objects with new or replaced table columns (one value per table row)."""
        return Jagged(self.offsets, {**self.table, **columns}, self.rows)

    def select(self, names) -> Jagged:
        return Jagged(self.offsets, {name: self.table[name] for name in names}, self.rows)

    def keep(self, mask: np.ndarray) -> Jagged:
        """The objects where `mask` (one bool per object) is True, in every event."""
        if mask.all():
            return self
        kept_before = np.concatenate([[0], np.cumsum(mask)])
        return Jagged(kept_before[self.offsets], self.table, self.row_numbers()[mask])

    def events(self, mask: np.ndarray) -> Jagged:
        """The events where `mask` (one bool per event) is True."""
        if mask.all():
            return self
        return Jagged(np.concatenate([[0], np.cumsum(self.counts[mask])]), self.table,
                      self.row_numbers()[np.repeat(mask, self.counts)])

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Per event, the sum of `values` (one per object) in object order from 0.0, as ak.sum(axis=1)."""
        return np.bincount(self.event, weights=values, minlength=self.n_events)

    def any(self, mask: np.ndarray) -> np.ndarray:
        """Per event, whether `mask` is True for one of its objects."""
        hit = np.zeros(self.n_events, bool)
        hit[self.event[mask]] = True
        return hit

    def max(self, name: str, default: float) -> np.ndarray:
        """Per event, the largest value of `name` (`default` where the event has no object)."""
        largest = np.full(self.n_events, -np.inf)
        np.maximum.at(largest, self.event, self[name])
        largest[self.counts == 0] = default
        return largest

    def sorted_by(self, name: str) -> Jagged:
        """Objects ordered by decreasing `name` within each event, ties kept in order (ak.argsort, stable)."""
        if self.size < 2:
            return self
        lists = ak.contents.ListOffsetArray(ak.index.Index64(self.offsets), ak.contents.NumpyArray(self[name]))
        local = ak.to_numpy(ak.flatten(ak.argsort(ak.Array(lists), axis=1, ascending=False, stable=True)))
        return Jagged(self.offsets, self.table, self.row_numbers()[local + self.offsets[:-1][self.event]])

    @staticmethod
    def concat(parts: list[Jagged], names) -> Jagged:
        """Per event, the objects of every part one after the other (the parts cover the same events)."""
        order = np.argsort(np.concatenate([p.event for p in parts]), kind="stable")
        first_row = np.cumsum([0] + [len(p.table[names[0]]) for p in parts])
        rows = np.concatenate([p.row_numbers() + start for p, start in zip(parts, first_row)])[order]
        return Jagged(np.concatenate([[0], np.cumsum(sum(p.counts for p in parts))]),
                      {name: np.concatenate([p.table[name] for p in parts]) for name in names}, rows)


def ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """arange(start, start + length) for each pair, concatenated, and the pair each value comes from."""
    which = np.repeat(np.arange(len(lengths)), lengths)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) + (starts - ends + lengths)[which], which


def from_awkward(arrays: dict[str, ak.Array], branches: dict[str, str]) -> Jagged:
    """Jagged branches of one collection (a list per event, all of the same lengths) -> Jagged.

    `arrays` and `branches` share their keys (the column names); `branches` names the file's branches in
    the ValueError raised for a branch that is not one list per event or whose lengths differ.
    """
    columns, offsets, first = {}, None, None
    for key, array in arrays.items():
        if array.ndim != 2:
            raise ValueError(f"branch {branches[key]!r} holds {'one value' if array.ndim == 1 else 'nested lists'} "
                             "per event, not one value per object")
        these, columns[key] = _offsets_and_values(array)
        if offsets is None:
            offsets, first = these, key
        elif not np.array_equal(these, offsets):
            raise ValueError(f"branches {branches[first]!r} and {branches[key]!r} have different numbers of "
                             "objects per event")
    return Jagged(offsets, columns)


def _offsets_and_values(array: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of a list-per-event array; without copies for uproot's usual layout."""
    layout = ak.to_layout(array)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets, dtype=np.int64)
        return offsets - offsets[0], np.asarray(layout.content.data)[offsets[0]:offsets[-1]]
    counts = ak.to_numpy(ak.num(array, axis=1))
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), ak.to_numpy(ak.flatten(array, axis=1))
