"""Federation overhead per round, at start-up and at shutdown: crossfed, and Flower on the same work.

    python benchmarks/federation_overhead.py --preset tiny --local-steps 20 --batch-size 256 --rounds 6
    python benchmarks/federation_overhead.py --preset kishimoto-11m --local-steps 5 --batch-size 64 --flower

crossfed runs a real federation: two clients of one CPU worker each (DeepSpeed ZeRO-0, FedAvg), each on
its own NanoAOD-like file read through the tensor cache (filled before the clock starts), evaluated and
checkpointed every round (`--evaluate-every`, `--checkpoint-every` for fewer; each commit written before
the next round, as `checkpoint.background` defaults, or meanwhile with `--background-commits`), with each
client's system metrics (`--no-system-metrics`: without, as Flower runs), logged to a local MLflow store
(created before the clock starts, as a site's store exists before its runs; `--fresh-store` counts the
creation in start-up). With --flower (the optional extra `bench`), the same model, data shape, local
steps, batch and two clients run under Flower's simulation engine in a virtual environment the benchmark
makes for it (.crossfed/bench-venv: flwr[simulation] pins its own Ray, which must not replace crossfed's),
and the ratios are printed, with the floor of the round-overhead ratio at equal work: the time Flower's
clients spend computing the evaluation, which any engine spends.

Each federation runs in a fresh process, so start-up counts from the process launch (imports, Ray,
tracking, workers) to the moment the first round begins, and shutdown from the end of the last round
to the process exit. Per round: the wall time, the slowest client's training compute and the overhead
(wall − compute), split by phase. crossfed's phases come from the driver's round record (`time/...`
keys); where the record only holds a sum of phases the sum is shown, and logging (the round's metrics,
the clients' system samples) is timed in the process that logs. Start of round 1 (not in today's record)
is estimated as the end of round 1 minus its `time/round_s` and minus the median time the later rounds
spent after `time/round_s` ended, unless the record has `time/round_started_unix`.
Figures are medians over rounds 2.. (round 1 warms up), with the range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".crossfed" / "bench-venv"
FLOWER_SCRIPT = Path(__file__).resolve().parent / "flower_federation.py"
# The extra `bench` in pyproject.toml; installed into VENV, never into crossfed's own environment.
FLOWER_REQUIREMENTS = ["flwr[simulation]==1.42.*", "torch==2.13.0", "pydantic>=2.6", "pyyaml>=6"]
# The phases of a round, as the driver's record would time them (time/<phase>_s).
PHASES = ("broadcast", "train", "upload", "validation", "aggregation", "evaluation", "checkpoint")
CLIENTS = ("client_a", "client_b")


# ---- the work both frameworks do ----------------------------------------------------------------------

def workload(args) -> dict:
    """What both federations run: JSON-able, handed to the child processes."""
    return {"preset": args.preset, "rounds": args.rounds, "local_steps": args.local_steps,
            "batch_size": args.batch_size, "max_objects": args.max_objects, "eval_batches": args.eval_batches,
            "events": args.events, "clients": list(CLIENTS), "lr": 0.01, "seed": 0, "fresh_store": args.fresh_store,
            "checkpoint_every": args.checkpoint_every, "evaluate_every": args.evaluate_every,
            "background_commits": args.background_commits, "system_metrics": not args.no_system_metrics}


def crossfed_config(work: dict, scratch: Path, files: dict[str, str]) -> dict:
    return {
        "name": "federation-overhead",
        "seed": work["seed"],
        "output_dir": str(scratch / "runs"),
        "experiments": {name: {"schema": "cms_nanoaod", "pretrain": {"files": [files[name]]},
                               "cluster": {"workers": 1, "cpus_per_worker": 1}} for name in work["clients"]},
        "data": {"max_objects": work["max_objects"], "cache_dir": str(scratch / "cache")},
        "model": {"preset": work["preset"]},
        "training": {"batch_size": work["batch_size"], "lr": work["lr"], "schedule": "constant",
                     "eval_batches": work["eval_batches"], "device": "cpu"},
        "federation": {"rounds": work["rounds"], "local_steps": work["local_steps"], "min_clients": 2,
                       "evaluate_every": work["evaluate_every"]},
        "checkpoint": {"every": work["checkpoint_every"], "background": work["background_commits"]},
        "tracking": {"uri": f"sqlite:///{scratch / 'mlflow.db'}", "experiment": "federation-overhead",
                     "system_metrics": work["system_metrics"]},
    }


def prepare_crossfed(work: dict, scratch: Path) -> dict:
    """Write each client's events, fill the tensor cache and create the MLflow store (not timed): the config
    to run. A store is created once per site, not per run: a fresh SQLite store first runs MLflow's schema
    migrations, seconds that no later run pays (`--fresh-store` times them too)."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from root_samples import random_nanoaod_branches, write_ttree

    from crossfed.config import config_from_dict
    from crossfed.data import load_dataset

    files = {name: str(write_ttree(scratch / f"{name}.root", "Events", random_nanoaod_branches(work["events"], seed=i)))
             for i, name in enumerate(work["clients"], 1)}
    raw = crossfed_config(work, scratch, files)
    config = config_from_dict(raw)
    for experiment in config.experiments.values():
        load_dataset(experiment.pretrain, experiment.data_schema, config.data)
    if not work.get("fresh_store"):
        import mlflow

        mlflow.set_tracking_uri(raw["tracking"]["uri"])
        mlflow.set_experiment(raw["tracking"]["experiment"])
    return raw


# ---- child process: one crossfed federation --------------------------------------------------------------

STARTUP_STEPS = {  # what `run_federation` does before round 1, as the child's span timer names it
    "connect_ray": "Ray starts",
    "check_data_at_its_site": "data checked at each site",
    "tracking_run": "MLflow run made",
    "_start_driver": "run given to the driver: clients' workers up, round 0 committed",
}


def time_startup_steps(spans: dict[str, tuple[float, float]]) -> None:
    """Wrap the start-up steps of `crossfed.federation.rounds` so that each records (start, end) wall times
    in `spans` (a context manager: until it is entered). Steps may overlap (the workers start meanwhile)."""
    import contextlib
    import functools

    from crossfed.federation import rounds

    def timed(name: str, original):
        if name in ("connect_ray", "tracking_run"):
            @contextlib.contextmanager
            def entered(*args, **kwargs):
                started = time.time()
                with original(*args, **kwargs) as value:
                    spans[name] = (started, time.time())
                    yield value
            return entered

        @functools.wraps(original)
        def call(*args, **kwargs):
            started = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                spans[name] = (started, time.time())
        return call

    for name in STARTUP_STEPS:
        setattr(rounds, name, timed(name, getattr(rounds, name)))


def run_crossfed_child(config_path: Path, out: Path) -> None:
    """Run the federation of this config; write round end times, records, logging and start-up step times
    as JSON."""
    from crossfed.config import config_from_dict
    from crossfed.federation import rounds

    spans = {"imports": (float(os.environ["CROSSFED_BENCH_LAUNCHED"]), time.time())}
    time_startup_steps(spans)

    logging_s: dict[int, float] = {}
    run_rounds = rounds._run_rounds

    def with_timed_logging(*args, **kwargs):
        # MLflow is imported by now (the run is open); importing it only here keeps start-up the CLI's,
        # which imports it in the background while Ray starts.
        import mlflow

        log_metrics = mlflow.log_metrics

        def timed_log_metrics(metrics, step=None, **kwargs):  # the driver's caller logs each round record
            started = time.perf_counter()
            log_metrics(metrics, step=step, **kwargs)
            logging_s[step] = logging_s.get(step, 0.0) + time.perf_counter() - started

        mlflow.log_metrics = timed_log_metrics
        return run_rounds(*args, **kwargs)

    rounds._run_rounds = with_timed_logging
    round_ends: list[float] = []
    log_system = rounds.SystemMetricsLog.log

    def timed_log_system(self, samples):  # after each round's record, before `on_round`: that round's logging
        started = time.perf_counter()
        log_system(self, samples)
        step = len(round_ends) + 1
        logging_s[step] = logging_s.get(step, 0.0) + time.perf_counter() - started

    rounds.SystemMetricsLog.log = timed_log_system
    config = config_from_dict(json.loads(config_path.read_text()))
    result = rounds.run_federation(config, on_round=lambda number, record: round_ends.append(time.time()))
    out.write_text(json.dumps({"round_ends": round_ends, "records": result.history,
                               "logging_s": [logging_s.get(r["round"], 0.0) for r in result.history],
                               "returned": time.time(), "startup_spans": spans}))


# ---- the parent: launch, collect, summarise ------------------------------------------------------------------

def launch(command: list[str], out: Path, env: dict | None = None) -> tuple[dict, float, float]:
    """Run a child federation; (its JSON, launch time, exit time), wall-clock seconds since the epoch."""
    launched = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    exited = time.time()
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise SystemExit(f"{' '.join(command[:3])} ... failed (exit {done.returncode}):\n{tail}")
    return json.loads(out.read_text()), launched, exited


def crossfed_rounds(result: dict) -> list[dict]:
    """Per round: wall, train (slowest client's compute), overhead and its phases, from the records."""
    records, ends, logging = result["records"], result["round_ends"], result["logging_s"]
    after_record = [ends[k] - ends[k - 1] - records[k]["time/round_s"] for k in range(1, len(ends))]
    round_one = records[0]["time/round_s"] + (statistics.median(after_record) if after_record else logging[0])
    rounds = []
    for k, record in enumerate(records):
        wall = ends[k] - ends[k - 1] if k else round_one
        if "time/round_started_unix" in record:  # the driver stamps when a round begins: exact walls
            wall = ends[k] - record["time/round_started_unix"]
        train = record.get("time/train_s", record["time/local_compute_s"])
        rounds.append({"round": record["round"], "wall_s": wall, "train_s": train, "overhead_s": wall - train,
                       "phases": phase_split(record, wall, logging[k])})
    return rounds


def phase_split(record: dict, wall: float, logging_s: float) -> dict[str, float]:
    """The round's time by phase: the driver's time/<phase>_s where it records them, else the sums it
    records today (transfer = broadcast + upload; aggregation = validation + aggregation; the rest of
    time/round_s = evaluation + the clients' checkpoints; after the record = the driver's checkpoint, with
    the fetch of the clients' system samples)."""
    if all(f"time/{phase}_s" in record for phase in PHASES):
        split = {phase: record[f"time/{phase}_s"] for phase in PHASES}
    else:
        compute, transfer = record["time/local_compute_s"], record["time/transfer_s"]
        aggregation = record["time/aggregation_s"]
        split = {"broadcast+upload": transfer, "train": compute, "validation+aggregation": aggregation,
                 "evaluation+client checkpoints": record["time/round_s"] - compute - transfer - aggregation,
                 "driver checkpoint": wall - record["time/round_s"] - logging_s}
    split["logging"] = logging_s
    split["other"] = wall - sum(split.values())
    return split


def summary(rounds: list[dict], startup_s: float, shutdown_s: float) -> dict:
    """Medians and ranges over rounds 2.., and start-up both as defined (launch -> round 1 begins) and
    with round 1's extra cost over a steady round (Flower starts its client actors inside round 1)."""
    steady = rounds[1:] or rounds
    figures = {key: [r[key] for r in steady] for key in ("wall_s", "train_s", "overhead_s", "evaluation_compute_s")
               if key in steady[0]}
    medians = {key: statistics.median(values) for key, values in figures.items()}
    return {"rounds": rounds, "startup_s": startup_s, "shutdown_s": shutdown_s,
            "startup_with_warmup_s": startup_s + rounds[0]["wall_s"] - medians["wall_s"], **medians,
            **{f"{key}_range": (min(values), max(values)) for key, values in figures.items()}}


def measure_crossfed(work: dict, scratch: Path) -> dict:
    config_path, out = scratch / "config.json", scratch / "crossfed.json"
    config_path.write_text(json.dumps(prepare_crossfed(work, scratch)))
    env = {**os.environ, "CROSSFED_BENCH_LAUNCHED": repr(time.time())}
    result, launched, exited = launch([sys.executable, __file__, "--child", str(config_path), str(out)], out, env)
    rounds = crossfed_rounds(result)
    first_round_start = result["round_ends"][0] - rounds[0]["wall_s"]
    figures = summary(rounds, first_round_start - launched, exited - result["round_ends"][-1])
    figures["startup_steps"] = {name: (begin - launched, end - begin)
                                for name, (begin, end) in result["startup_spans"].items()}
    return figures


def ensure_flower_venv(quiet: bool = True) -> Path:
    """The benchmark's own environment for Flower (created once): flwr[simulation] brings Ray 2.55."""
    python = VENV / "bin" / "python"
    marker = VENV / "crossfed-bench-requirements.json"
    if python.is_file() and marker.is_file() and json.loads(marker.read_text()) == FLOWER_REQUIREMENTS:
        return python
    print(f"creating {VENV.relative_to(REPO)} with {' '.join(FLOWER_REQUIREMENTS)} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # Without PYTHONPATH: a checkout on it shows pip crossfed's metadata, whose dependencies it then reports missing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(python), "-m", "pip", "install", *(["-q"] if quiet else []), *FLOWER_REQUIREMENTS],
                   check=True, env=env)
    marker.write_text(json.dumps(FLOWER_REQUIREMENTS))
    return python


def measure_flower(work: dict, scratch: Path) -> dict:
    python = ensure_flower_venv()
    work_path, out = scratch / "flower-work.json", scratch / "flower.json"
    work_path.write_text(json.dumps(work))
    # crossfed's model code from this checkout; nothing else of crossfed's environment
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform"), "RAY_ADDRESS": ""}
    result, launched, exited = launch([str(python), str(FLOWER_SCRIPT), str(work_path), str(out)], out, env)
    timings = result["rounds"]
    return summary(flower_rounds(timings), timings[0]["started"] - launched, exited - timings[-1]["ended"])


def flower_rounds(timings: list[dict]) -> list[dict]:
    """Per round, from the strategy's timestamps and the clients' compute times (flower_federation.py)."""
    rounds = []
    for k, timing in enumerate(timings):
        end = timings[k + 1]["started"] if k + 1 < len(timings) else timing["ended"]
        wall, train = end - timing["started"], max(timing["compute_s"])
        rounds.append({"round": k + 1, "wall_s": wall, "train_s": train, "overhead_s": wall - train,
                       "evaluation_compute_s": max(timing["evaluation_compute_s"]),
                       "phases": {"fit (broadcast+train+upload)": timing["fit_done"] - timing["started"],
                                  "aggregation": timing["aggregated"] - timing["fit_done"],
                                  "evaluation": timing["ended"] - timing["aggregated"],
                                  "between rounds": end - timing["ended"]}})
    return rounds


def print_engine(name: str, result: dict) -> None:
    print(f"\n{name}: start-up {result['startup_s']:.2f} s (launch -> round 1 begins), "
          f"{result['startup_with_warmup_s']:.2f} s with round 1's extra over a steady round; "
          f"shutdown {result['shutdown_s']:.2f} s (last round -> exit)")
    if "startup_steps" in result:
        print("start-up by step, s after launch (start + duration; steps overlap where the workers start meanwhile):")
        for name, (begin, duration) in result["startup_steps"].items():
            print(f"  {begin:7.2f} + {duration:6.2f}  {STARTUP_STEPS.get(name, 'imports (crossfed, Ray)')}")
        print(f"  {result['startup_s']:7.2f}           round 1 begins")
    phases = list(result["rounds"][0]["phases"])
    print(f"{'round':>5}{'wall s':>9}{'train s':>9}{'overhead s':>12}{'%':>6}  " + "  ".join(phases))
    for r in result["rounds"]:
        share = 100 * r["overhead_s"] / r["wall_s"]
        print(f"{r['round']:>5}{r['wall_s']:>9.3f}{r['train_s']:>9.3f}{r['overhead_s']:>12.3f}{share:>6.1f}  "
              + "  ".join(f"{r['phases'][p]:>{len(p)}.3f}" for p in phases))
    low, high = result["overhead_s_range"]
    print(f"median over rounds 2..: wall {result['wall_s']:.3f} s, train {result['train_s']:.3f} s, overhead "
          f"{result['overhead_s']:.3f} s ({low:.3f}-{high:.3f}), {100 * result['overhead_s'] / result['wall_s']:.1f} % "
          "of the round")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-objects", type=int, default=16)
    parser.add_argument("--eval-batches", type=int, default=8, help="validation batches per client per round")
    parser.add_argument("--events", type=int, default=5000, help="events per client")
    parser.add_argument("--fresh-store", action="store_true",
                        help="time the MLflow store's creation too (its schema migrations; once per site)")
    parser.add_argument("--checkpoint-every", type=int, default=1,
                        help="crossfed's checkpoint.every (Flower's simulation checkpoints nothing)")
    parser.add_argument("--background-commits", action="store_true",
                        help="crossfed's checkpoint.background: true (each commit written while the next round trains)")
    parser.add_argument("--evaluate-every", type=int, default=1,
                        help="crossfed's federation.evaluate_every (Flower's run evaluates every round)")
    parser.add_argument("--no-system-metrics", action="store_true",
                        help="crossfed's tracking.system_metrics: false (Flower's simulation monitors nothing)")
    parser.add_argument("--flower", action="store_true", help="also run Flower (creates .crossfed/bench-venv once)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_crossfed_child(*args.child)
        return
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 warms up)")
    work = workload(args)
    print(f"2 clients x 1 CPU worker, preset {args.preset}, {args.rounds} rounds of {args.local_steps} local steps "
          f"x {args.batch_size} events ({args.max_objects} objects), {args.eval_batches} evaluation batches per client")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        results["crossfed"] = measure_crossfed(work, Path(scratch))
        print_engine("crossfed", results["crossfed"])
        if args.flower:
            results["flower"] = measure_flower(work, Path(scratch))
            print_engine("Flower", results["flower"])
    if "flower" in results:
        ours, theirs = results["crossfed"], results["flower"]
        ratio = lambda key: ours[key] / theirs[key]  # noqa: E731
        per_train = (ours["overhead_s"] / ours["train_s"]) / (theirs["overhead_s"] / theirs["train_s"])
        print(f"\ncrossfed / Flower: round overhead {ratio('overhead_s'):.2f}x ({per_train:.2f}x per second of "
              f"training, which a shared machine's changing load skews less), start-up {ratio('startup_s'):.2f}x "
              f"({ratio('startup_with_warmup_s'):.2f}x with round 1's warm-up), shutdown {ratio('shutdown_s'):.2f}x, "
              f"round wall {ratio('wall_s'):.2f}x")
        # The forward passes of the evaluation are the same work in any engine, on the same cores: at equal
        # work (evaluation every round) no engine's round overhead is below them.
        floor = theirs["evaluation_compute_s"] / theirs["overhead_s"]
        print(f"floor of the round-overhead ratio at equal work: Flower's clients spend "
              f"{theirs['evaluation_compute_s']:.3f} s of its {theirs['overhead_s']:.3f} s overhead computing the "
              f"evaluation itself ({floor:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"workload": work, **results}, indent=1))


if __name__ == "__main__":
    main()
