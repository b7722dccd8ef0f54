"""What tracking each study fine-tuning in its own MLflow run costs: one fine-tuning job of the `ci` study
(one experiment's model, frozen, on tt̄H vs tt̄ at every ladder point and fine-tuning seed), timed with its
runs logged (`jobs.finetune_job`: the job's run, one run per fine-tuning opened before it trains, settings,
source model, per-epoch losses, test metrics) and without (the same `finetune` calls, nothing logged),
alternately in one process, into a fresh SQLite store.

    python benchmarks/finetune_tracking.py --samples .crossfed/test-samples/<key> --repeats 3

--samples: a folder holding {cms,atlas}_{ttbar,tth}.root (the tests' generated set, or `crossfed
generate` output). Prints the median seconds per fine-tuning each way, the added milliseconds per
fine-tuning and the ratio. On a shared machine the two are measured back to back, so compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, required=True, help="folder with {cms,atlas}_{ttbar,tth}.root")
    parser.add_argument("--repeats", type=int, default=3, help="timed jobs each way (after one warm-up each)")
    args = parser.parse_args()

    from mlflow import MlflowClient
    from rich.console import Console

    from crossfed.study import jobs, plan, runner
    from crossfed.study.config import load_study, study_from_dict
    from crossfed.study.samples import prepare_samples
    from crossfed.tracking import run_tags
    from crossfed.train.finetune import encode_events, finetune

    folder = Path(tempfile.mkdtemp(prefix="finetune-tracking-"))
    raw = load_study("ci").model_dump(mode="json", by_alias=True, exclude={"training": {"steps"}})
    raw["experiments"] = {}  # a study has two experiments; the job fine-tunes the first's model
    for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata")):
        files = {p: str(args.samples / f"{name}_{p}.root") for p in ("ttbar", "tth")}
        raw["experiments"][name] = {"schema": schema, "pretrain": {"files": list(files.values())},
                                    "labelled": {p: {"files": [f]} for p, f in files.items()}}
    raw["data"]["cache_dir"] = str(folder / "cache")
    raw["scenarios"] = {"symmetric": {"events": 100}}
    study = study_from_dict(raw, "the benchmark's study")
    data = prepare_samples(study, folder / "samples", console=Console(quiet=True), progress=False)
    config = jobs.finetune_config(study, data, "cms", "local")  # frozen, as the pre-trained models are
    tasks = {name: (t.signal, t.background) for name, t in study.tasks.items()}
    ladder, seeds = list(study.finetune.labelled_events), [0, 1]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = runner._experiment_id(client, "benchmark", uri)
    parent = client.create_run(experiment, run_name="benchmark").info.run_id
    setup = plan.Setup("local", (("cms", 100),), 0)
    count = len(tasks) * len(ladder) * len(seeds)

    def untracked() -> None:  # the job before its runs were tracked: the same work, nothing logged
        per_task, processes = jobs.labelled_task_events(config, "cms", data["cms"], tasks)
        encoded = {p: encode_events(config, "cms", None, events) for p, events in processes.items()}
        for task, (signal, background) in tasks.items():
            features = np.concatenate([encoded[signal], encoded[background]])
            for n in ladder:
                jobs.summarise([finetune(config, "cms", n, None, data=per_task[task], seed=s, features=features)
                                for s in seeds])

    def tracked() -> None:
        log = jobs.RunLog(uri, experiment, parent, "finetune/benchmark/cms", study.name, "none", None,
                          {**run_tags(""), **setup.tags()})
        run_id, _ = jobs.finetune_job(config, "cms", None, data["cms"], tasks, ladder, seeds, log)
        client.set_terminated(run_id, "FINISHED")

    times = {"untracked": [], "tracked": []}
    for repeat in range(args.repeats + 1):
        for name, job in (("untracked", untracked), ("tracked", tracked)):
            started = time.perf_counter()
            job()
            if repeat:  # the first of each is a warm-up (imports, the tensor cache, the store's tables)
                times[name].append(time.perf_counter() - started)
    plain, logged = (statistics.median(times[k]) / count for k in ("untracked", "tracked"))
    print(f"{count} fine-tunings per job, {args.repeats} jobs each way (medians; all: "
          f"{', '.join(f'{k} ' + ' '.join(f'{t:.2f}' for t in v) + ' s' for k, v in times.items())})")
    print(f"per fine-tuning: untracked {plain * 1000:.0f} ms, tracked {logged * 1000:.0f} ms, "
          f"added {1000 * (logged - plain):.0f} ms; ratio tracked/untracked {logged / plain:.3f}")


if __name__ == "__main__":
    main()
