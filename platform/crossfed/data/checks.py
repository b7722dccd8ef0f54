"""Everything about a run's data that can be checked before Ray starts (`crossfed validate`).

Per experiment: the schema resolves (built-in name or YAML file); per dataset: the selection parses,
every file or glob exists and each file is a readable ROOT file (a URL is opened, so it must be
reachable), and the first file's tree holds every branch the schema needs. Each problem is one line
naming the config key it comes from; all of them are collected, not just the first.
"""

from __future__ import annotations

from crossfed.config import DatasetConfig, ExperimentConfig
from crossfed.errors import CrossfedError


def check_experiment(name: str, experiment: ExperimentConfig) -> tuple[list[str], int]:
    """(problems, number of files checked) for one experiment's schema and datasets."""
    from crossfed.data.schema import load_schema

    key = f"experiments.{name}"
    problems, n_files = [], 0
    try:
        schema = load_schema(experiment.data_schema)
    except CrossfedError as err:
        problems.append(f"{key}.schema: {err}")
        schema = None
    datasets = {"pretrain": experiment.pretrain}
    if experiment.finetune is not None:
        datasets.update({"finetune.signal": experiment.finetune.signal,
                         "finetune.background": experiment.finetune.background})
    for part, dataset in datasets.items():
        if dataset is not None:
            found, checked = check_dataset(dataset, schema, f"{key}.{part}")
            problems += found
            n_files += checked
    return problems, n_files


def check_dataset(dataset: DatasetConfig, schema, key: str) -> tuple[list[str], int]:
    """(problems, number of files checked): the selection, every file, the first file's branches.

    `schema` None (it did not load): the files are still checked, their branches are not.
    """
    from crossfed.data.files import check_root_header, expand_files, find_tree, is_url, open_root
    from crossfed.data.reader import plan_read
    from crossfed.data.selection import parse_selection

    problems = []
    try:
        parse_selection(dataset.selection)
    except CrossfedError as err:
        problems.append(f"{key}.selection: {err}")
    try:
        files = expand_files(dataset.files)
    except CrossfedError as err:
        return problems + [f"{key}.files: {err}"], 0
    for index, path in enumerate(files):
        try:
            if index == 0 and schema is not None:  # the schema is checked against the first file's tree
                with open_root(path) as root_file:
                    tree_name, tree = find_tree(root_file, path, schema.tree_names)
                    plan_read(tree, path, tree_name, schema)
            elif is_url(path):
                open_root(path).close()  # reachable and ROOT
            else:
                check_root_header(path)
        except CrossfedError as err:
            problems.append(f"{key}.files: {err}")
    return problems, len(files)
