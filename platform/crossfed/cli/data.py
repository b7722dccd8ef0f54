"""`crossfed inspect`: what a ROOT file holds once mapped to the common event representation."""

from __future__ import annotations

import typer

# tree name -> built-in schema, for files given without --schema
SCHEMA_BY_TREE = {"Events": "cms_nanoaod", "mini": "atlas_opendata",
                  "CollectionTree": "atlas_physlite", "EventData": "atlas_physlite"}


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def inspect(
    file: str = typer.Argument(..., help="ROOT file (TTree or RNTuple), a glob or an fsspec URL."),
    schema: str = typer.Option(None, "--schema", "-s", help="Built-in schema name or YAML file; "
                               "default: detected from the tree name (Events, mini, CollectionTree/EventData)."),
    selection: str = typer.Option(None, "--selection", help="Event selection, e.g. 'n_leptons >= 1 and met > 20'."),
    max_objects: int = typer.Option(32, "--max-objects", min=1, help="Objects kept per event (softest jets cut)."),
    chunk_size: str = typer.Option("100 MB", "--chunk-size", help="Read step: memory ('100 MB') or entries."),
    branches: bool = typer.Option(False, "--branches", help="List the file's trees/RNTuples and their branches "
                                  "or fields with types, instead of reading events (for writing a schema)."),
) -> None:
    """Show events, the object definitions' efficiencies, the b-tagger and MET source used, object
    multiplicities, pT/η ranges per object type and the selection efficiency."""
    import warnings

    from rich.console import Console

    from crossfed.config.data import parse_chunk_size
    from crossfed.data.files import expand_files
    from crossfed.data.reader import read_events
    from crossfed.errors import CrossfedError

    console = Console()
    files = expand_files([file])
    if branches:
        _print_branches(console, files)
        return
    try:
        parse_chunk_size(chunk_size)
    except ValueError as err:
        raise CrossfedError(f"--chunk-size {err}") from None
    schema = schema or detect_schema(files[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch, stats = read_events(files, schema, selection=selection, max_objects=max_objects,
                                   chunk_size=chunk_size)
    for warning in caught:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    console.print(_summary_table(file, schema, selection, stats))
    console.print(_definitions_table(schema, stats))
    console.print(_objects_table(batch, max_objects))


def _print_branches(console, files: list[str]) -> None:
    from rich.table import Table

    from crossfed.data.files import describe_contents

    path = files[0]
    if len(files) > 1:
        console.print(f"{path} (the first of {len(files)} files)", highlight=False)
    contents = describe_contents(path)
    if not contents:
        console.print(f"{path}: no TTree or RNTuple in this file", highlight=False)
    for name, kind, entries, branches in contents:
        table = Table(title=f"{kind} {name} ({entries} entries, {len(branches)} branches)", title_justify="left")
        table.add_column("branch" if kind == "TTree" else "field", overflow="fold")
        table.add_column("type", overflow="fold")
        for branch, typename in branches:
            table.add_row(branch, typename)
        console.print(table)


def detect_schema(path: str) -> str:
    from crossfed.data.files import list_trees, open_root
    from crossfed.errors import CrossfedError

    with open_root(path) as root_file:
        trees = list_trees(root_file, path)
    for tree in trees:
        if tree in SCHEMA_BY_TREE:
            return SCHEMA_BY_TREE[tree]
    known = ", ".join(f"{t} ({s})" for t, s in SCHEMA_BY_TREE.items())
    has = ", ".join(trees) if trees else "no trees at all"
    raise CrossfedError(f"{path}: cannot tell the schema from its trees ({has}); known trees: {known}; "
                        "give --schema")


def _summary_table(file: str, schema: str, selection: str | None, stats):
    from rich.table import Table

    table = Table(title="events", show_header=False)
    finite = stats.events_read - stats.events_dropped
    efficiency = f"{stats.events_selected / finite:.1%}" if finite else "n/a"
    rows = [("input", file), ("schema", schema), ("files", stats.files), ("events read", stats.events_read),
            ("dropped (NaN/inf kinematics)", stats.events_dropped)]
    rows += [("b-tag used", f"{used} ({n} events)") for used, n in stats.btag.items()]
    rows += [("b-tag passed over", f"{why} ({n} chunk(s))") for why, n in stats.btag_rejected.items()]
    rows += [("MET", f"{source} ({n} events)") for source, n in stats.met.items()]
    rows += [("selection", selection or "(none)"), ("events selected", stats.events_selected),
             ("selection efficiency", efficiency)]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _definitions_table(schema_name: str, stats):
    """Objects left after each step of the object definitions, per collection, with the cuts applied."""
    from rich.table import Table

    from crossfed.data.objects import STAGES
    from crossfed.data.schema import load_schema

    schema = load_schema(schema_name)
    table = Table(title="object definitions: objects left after each step (events with finite kinematics)")
    table.add_column("collection")
    for stage in STAGES:
        table.add_column("pT/η" if stage == "kinematics" else stage, justify="right")
    table.add_column("kept", justify="right")
    table.add_column("cuts", overflow="fold")
    for kind, survivors in stats.objects.items():
        spec = getattr(schema.collections, kind)
        cuts = [spec.describe_kinematic_cuts()] + [c.describe() for stage, c in spec.cuts()
                                                   if f"{kind} {stage} {c.describe()}" not in stats.skipped_cuts]
        kept = f"{survivors['overlap'] / survivors['read']:.1%}" if survivors["read"] else "–"
        table.add_row(kind, *(str(survivors[stage]) for stage in STAGES), kept, "; ".join(c for c in cuts if c))
    if stats.skipped_cuts:
        table.caption = "not applied (branch missing): " + "; ".join(stats.skipped_cuts)
    if schema.overlap_removal:
        overlap = ", ".join(step.describe() for step in schema.overlap_removal)
        table.caption = (table.caption + "\n" if table.caption else "") + f"overlap removal: {overlap}"
    return table


def _objects_table(batch, max_objects: int):
    import numpy as np
    from rich.table import Table

    from crossfed.data.events import ETA, PT, ObjectType

    table = Table(title=f"objects per event (first {max_objects} kept)")
    for column in ("type", "mean", "max", "pT min", "pT mean", "pT max", "η min", "η mean", "η max"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for object_type in ObjectType:
        is_type = batch.mask & (batch.types == int(object_type))
        counts = is_type.sum(axis=1)
        pt, eta = batch.features[..., PT][is_type], batch.features[..., ETA][is_type]
        ranges = [f"{f(x):.2f}" if x.size else "–" for x in (pt, eta) for f in (np.min, np.mean, np.max)]
        table.add_row(object_type.name.lower(), f"{counts.mean():.2f}" if len(batch) else "–",
                      str(counts.max()) if len(batch) else "–", *ranges)
    return table
