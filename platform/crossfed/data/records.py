"""What a run records of its data, made where the data is: each dataset's files, fingerprint (the tensor
cache's file hashes), schema, selection and event count. No MLflow here: a site's data check imports only
the data layer (`crossfed.tracking` logs the records: tags and MLflow inputs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from crossfed.config import DatasetConfig, RunConfig
from crossfed.errors import CrossfedError


def dataset_files(dataset: DatasetConfig, where: str) -> list[str]:
    """The dataset's files as the reader expands them (globs, URLs kept), sorted; errors name `where`."""
    from crossfed.data.files import expand_files

    try:
        return sorted(set(expand_files(dataset.files)))
    except CrossfedError as err:
        raise CrossfedError(f"{where}: {err}") from None


def fingerprint(files: list[str], cache_dir: str | Path | None = None) -> str:
    """First 16 hex digits of a SHA-256 over the files' fingerprints in path order: the tensor cache's
    (`crossfed.data.cache.file_fingerprint`: local files by content, remote ROOT files by UUID and size;
    with `cache_dir`, a hash that cache already knows is not computed again)."""
    from crossfed.data.cache import file_fingerprint

    digest = hashlib.sha256()
    for path in files:
        digest.update(file_fingerprint(path, cache_dir).encode())
        digest.update(b"\0file\0")
    return digest.hexdigest()[:16]


def dataset_records(config: RunConfig, experiments: list[str] | None = None) -> dict[str, dict]:
    """What a run records of each dataset of `experiments` (default all), by key `<experiment>.pretrain`,
    `.finetune.signal`, `.finetune.background`: its files (as the reader expands them), fingerprint
    (`digest`), schema, selection, max_events, and the events its files hold before any selection
    (`entries`). Reads the files: call it where the data is (a federation's clients do, at their sites)."""
    datasets = {}
    for name, experiment in config.experiments.items():
        if experiments is not None and name not in experiments:
            continue
        datasets[f"{name}.pretrain"] = (experiment.pretrain, experiment.data_schema)
        if experiment.finetune:
            datasets[f"{name}.finetune.signal"] = (experiment.finetune.signal, experiment.data_schema)
            datasets[f"{name}.finetune.background"] = (experiment.finetune.background, experiment.data_schema)
    return {key: dataset_record(dataset, schema, f"experiments.{key}", config.data.cache_dir)
            for key, (dataset, schema) in datasets.items() if dataset is not None}


def dataset_record(dataset: DatasetConfig, schema: str, where: str, cache_dir: str | Path | None = None) -> dict:
    """One dataset's record (see `dataset_records`); errors name `where`; `cache_dir`: the tensor cache's
    folder, where the files' hashes are remembered."""
    files = dataset_files(dataset, where)
    return {"files": files, "digest": fingerprint(files, cache_dir), "schema": schema, "selection": dataset.selection,
            "max_events": dataset.max_events, "entries": count_entries(files, schema)}


def count_entries(files: list[str], schema: str) -> int | None:
    """Events in the files' trees (before selection); None when a file cannot tell (checked elsewhere)."""
    from crossfed.data.files import find_tree, open_root
    from crossfed.data.schema import load_schema

    try:
        tree_names = load_schema(schema).tree_names
        total = 0
        for path in files:
            with open_root(path) as root_file:
                total += int(find_tree(root_file, path, tree_names)[1].num_entries)
        return total
    except CrossfedError:
        return None
