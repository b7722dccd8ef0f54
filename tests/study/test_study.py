"""A reduced study end to end: the shared generated samples as given data, real Ray + DeepSpeed pre-training
(federated, local, centralized; two seeds), real fine-tuning as Ray tasks, a real MLflow SQLite store;
then `crossfed report` rebuilds the same tables and plots from MLflow alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

from crossfed.study import plan
from crossfed.study import report as rep
from crossfed.study.config import load_study

ROUNDS, LOCAL_STEPS, BATCH = 2, 2, 32
# About 3 minutes on 2 idle cores (18 short pre-trainings, 2 at a time); much longer on a machine shared with
# other jobs, so the study's own fixture gets more than the suite's default 10 minutes.
pytestmark = pytest.mark.timeout(2400)
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one bar per downloaded artifact otherwise


def crossfed(*args, cwd, timeout=2400, env=None):
    return subprocess.run([sys.executable, "-m", "crossfed", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def reduced_study(samples, cache_dir) -> dict:
    """Two experiments on the ~300-event samples; every scenario, two seeds, two fine-tunings each; two tasks
    sharing the tt̄ background. The tt̄H file stands in for the H± events of the second task: what is checked
    is that each task gets its own rows, not the physics."""
    return {
        "name": "reduced",
        "experiments": {
            name: {"schema": schema, "pretrain": {"files": [str(samples[name]["ttbar"]), str(samples[name]["tth"])]},
                   "labelled": {"tth": {"files": [str(samples[name]["tth"])]},
                                "hplus": {"files": [str(samples[name]["tth"])]},
                                "ttbar": {"files": [str(samples[name]["ttbar"])]}}}
            for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))
        },
        "tasks": {"tth_vs_ttbar": {"signal": "tth", "background": "ttbar"},
                  "hplus_vs_ttbar": {"signal": "hplus", "background": "ttbar"}},
        "labelled": {"validation_fraction": 0.2, "test_fraction": 0.4},
        "scenarios": {"symmetric": {"events": 240}, "data_poor": {"events": 240, "poor": "atlas", "ratio": 4},
                      "scaling": {"events": [60, 240], "labelled_events": [40]}},
        "repeats": {"pretrain_seeds": 2, "finetune_seeds": 2},
        "model": {"preset": "tiny"},
        "data": {"max_objects": 12, "validation_fraction": 0.2, "test_fraction": 0.0, "cache_dir": str(cache_dir)},
        "training": {"batch_size": BATCH, "device": "cpu"},
        "federation": {"rounds": ROUNDS, "local_steps": LOCAL_STEPS},
        "finetune": {"labelled_events": [40, 80], "mode": "frozen", "epochs": 3, "batch_size": 32},
    }


@pytest.fixture(scope="module")
def study_run(samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    (root / "reduced.yaml").write_text(yaml.safe_dump(reduced_study(samples, root / "cache")))
    # The clients' system-metrics monitors sample every second (MLflow's default is 10 s), so that even these
    # short pre-trainings log some.
    done = crossfed("study", root / "reduced.yaml", "--workdir", root / "work", "--tracking-uri", uri, cwd=root,
                    env={**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (results,) = (root / "work" / "reports").glob("*/results.json")
    return dict(root=root, uri=uri, stdout=done.stdout, stderr=done.stderr, results=json.loads(results.read_text()),
                folder=results.parent, study=load_study(root / "reduced.yaml"))


def assert_valid_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, (path, image.shape)
    assert image[..., :3].std() > 0.01, f"{path} is blank"


def test_every_method_processed_the_same_events_per_experiment(study_run):
    """Equal budgets, from what the trainers counted: each experiment's events were processed
    rounds × local_steps × batch times by every method, and the centralized run took the clients' summed steps."""
    from mlflow import MlflowClient

    per_experiment = ROUNDS * LOCAL_STEPS * BATCH
    client = MlflowClient(study_run["uri"])
    parent = study_run["results"]["parent_run_id"]
    runs = client.search_runs([client.get_run(parent).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and tags.`crossfed.kind` = 'pretrain'")
    assert len(runs) == len([s for s in plan.setups(study_run["study"]) if s.method != "scratch"]) == 18
    for run in runs:
        setup = plan.Setup.from_tags(run.data.tags)
        processed = {k.rsplit("/", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith(rep.BUDGET_EVENTS)}
        assert processed == dict.fromkeys(setup.experiments, per_experiment), (setup.key(), processed)
        assert run.data.metrics[rep.BUDGET_STEPS] == ROUNDS * LOCAL_STEPS * len(setup.experiments), setup.key()
        assert run.data.metrics[rep.BUDGET_HOURS] > 0
    budget = study_run["results"]["budget"]
    assert {(b["scenario"], b["method"]) for b in budget} == {
        (s, m) for s in ("symmetric", "data_poor") for m in ("federated", "local", "centralized")}
    for row in budget:
        assert row["events_processed_cms"] == row["events_processed_atlas"] == per_experiment, row
        assert row["optimizer_steps"] == 2 * ROUNDS * LOCAL_STEPS, row


def test_table_cells_are_the_statistics_of_the_logged_runs(study_run):
    """One cell and one paired difference recomputed by hand from the fine-tuning runs' artifacts: the mean
    of the runs, the seed part from the two pre-training seeds' means, the test part from DeLong's components."""
    from mlflow import MlflowClient

    from crossfed.study.statistics import t_quantile

    client = MlflowClient(study_run["uri"])
    parent = study_run["results"]["parent_run_id"]
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and tags.`crossfed.kind` = 'finetune'")
    arrays = {}
    for child in children:
        path = client.download_artifacts(child.info.run_id, rep.FINETUNE_ARTIFACT, str(study_run["root"] / child.info.run_id))
        setup = plan.Setup.from_tags(child.data.tags)
        with np.load(path) as stored:
            arrays[(setup.method, frozenset(setup.events), setup.seed, child.data.tags["crossfed.experiment"])] = dict(stored)

    def runs(method, seed):
        events = {("cms", 240), ("atlas", 240)} if method != "local" else {("atlas", 240)}
        return arrays[(method, frozenset(events), seed, "atlas")]

    key = "tth_vs_ttbar|80|"
    fed = [runs("federated", seed) for seed in (0, 1)]
    aucs = np.array([r[key + "auc"] for r in fed])  # [seed, fine-tuning]
    seed_variance = aucs.mean(axis=1).var(ddof=1) / 2
    v10, v01 = np.mean([r[key + "v10"] for r in fed], 0), np.mean([r[key + "v01"] for r in fed], 0)
    test_variance = v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01)
    (cell,) = [c for c in study_run["results"]["cells"] if (c["scenario"], c["task"], c["experiment"], c["method"],
                                                          c["labelled_events"]) == ("symmetric", "tth_vs_ttbar", "atlas", "federated", 80)]
    assert cell["auc_mean"] == pytest.approx(aucs.mean())
    assert cell["auc_se"] == pytest.approx(np.sqrt(seed_variance + test_variance))
    assert cell["auc_runs"] == 4 and cell["auc_replicates"] == 2

    local = [runs("local", seed) for seed in (0, 1)]
    differences = aucs - np.array([r[key + "auc"] for r in local])
    variance = differences.mean(axis=1).var(ddof=1) / 2
    dv10 = np.mean([f[key + "v10"] - lo[key + "v10"] for f, lo in zip(fed, local)], 0)
    dv01 = np.mean([f[key + "v01"] - lo[key + "v01"] for f, lo in zip(fed, local)], 0)
    variance_test = dv10.var(ddof=1) / len(dv10) + dv01.var(ddof=1) / len(dv01)
    (row,) = [d for d in study_run["results"]["differences"] if (d["scenario"], d["task"], d["experiment"], d["comparison"],
                                                               d["labelled_events"]) == ("symmetric", "tth_vs_ttbar", "atlas", "federated-local", 80)]
    se = np.sqrt(variance + variance_test)
    df = (variance + variance_test) ** 2 / variance**2  # Satterthwaite with one degree of freedom from two seeds
    assert row["auc_difference_mean"] == pytest.approx(differences.mean())
    assert row["auc_difference_se"] == pytest.approx(se)
    assert row["auc_difference_high"] == pytest.approx(differences.mean() + t_quantile(0.975, df) * se)
    assert row["verdict"] in (study_run["folder"] / "verdicts.txt").read_text()
    # The parent run carries the cell as summary metrics.
    metrics = client.get_run(parent).data.metrics
    assert metrics["auc/symmetric/tth_vs_ttbar/atlas/federated/80/mean"] == pytest.approx(aucs.mean())
    assert metrics["auc/symmetric/tth_vs_ttbar/atlas/federated/80/std"] == pytest.approx(aucs.std(ddof=1))
    assert metrics["auc_difference_half_width/median"] == pytest.approx(study_run["results"]["resolution"]["median_half_width"])


def test_the_study_prints_tables_verdicts_and_says_it_is_indicative(study_run):
    out = study_run["stdout"]
    assert "paired differences" in out and "verdicts" in out and "indicative numbers" in out
    assert "±" in out and "what each method's pre-training processed" in out
    # Per task: sym/poor × experiment × 2 comparisons × 2 ladder points, and the scaling curve's fed − local.
    differences = study_run["results"]["differences"]
    assert len(differences) == 2 * (2 * 2 * 2 * 2 + 2 * 2)
    scenarios = {c["scenario"] for c in study_run["results"]["cells"]}
    assert scenarios == {"symmetric", "data_poor", "scaling/60", "scaling/240"}
    for task in ("tth_vs_ttbar", "hplus_vs_ttbar"):  # every task its own rows, tables and verdicts
        assert f"{task}, symmetric (" in out and f"{task}, data_poor (" in out
        assert len([c for c in study_run["results"]["cells"] if c["task"] == task]) == 2 * (2 * 2 * 4 + 2 * 2)
        assert len([d for d in differences if d["task"] == task]) == len(differences) // 2


def test_the_study_ends_with_models_that_finetune_accepts(study_run, monkeypatch):
    """The first scenario's pre-trained models (first seed) as `-c` references, each resolving to a model."""
    import re

    import mlflow

    from crossfed.model_source import resolve_model_source

    printed = dict(re.findall(r"^  (\S+/seed=0): (runs:/\w+/model)$", study_run["stdout"], flags=re.MULTILINE))
    def method_and_events(key):
        method, events, _ = key.split("/")
        return method, frozenset(events.split(","))

    both = frozenset({"cms=240", "atlas=240"})
    assert {method_and_events(k) for k in printed} == {("federated", both), ("centralized", both),
                                                       ("local", frozenset({"cms=240"})), ("local", frozenset({"atlas=240"}))}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", study_run["uri"])
    mlflow.set_tracking_uri(study_run["uri"])
    for key, uri in printed.items():
        experiment = "atlas" if "atlas" in key.split("/")[1] else "cms"
        source = resolve_model_source(uri, experiment)
        assert source.state and source.run_id == uri.split("/")[1], key
        assert mlflow.MlflowClient().get_run(source.run_id).data.tags["crossfed.setup"] == key
def test_the_console_holds_crossfeds_lines_and_the_libraries_lines_go_to_the_log_file(study_run):
    """What `crossfed demo` prints (the same command code): no MLflow, alembic or Ray logger line, no Ray
    worker output; they are in the log file under the workdir."""
    library_lines = [line for line in (study_run["stdout"] + study_run["stderr"]).splitlines()
                     if any(mark in line for mark in ("INFO mlflow", "alembic", "WARNING ray", "Token authentication",
                                                       " pid=", "DeepSpeed", "[codecarbon"))]
    assert not library_lines, library_lines[:5]
    (log_file,) = (study_run["root"] / "work" / "logs").glob("study-*.log")
    logged = log_file.read_text()
    assert "Creating initial MLflow database tables" in logged and " pid=" in logged  # MLflow's, Ray workers'


def test_the_study_states_what_difference_it_resolves(study_run):
    """The half-widths of the paired differences' 95 % intervals: what a null result rules out."""
    widths = [(d["auc_difference_high"] - d["auc_difference_low"]) / 2 for d in study_run["results"]["differences"]]
    resolution = study_run["results"]["resolution"]
    assert resolution["median_half_width"] == pytest.approx(np.median(widths))
    assert resolution["largest_half_width"] == pytest.approx(max(widths))
    assert resolution["intervals"] == len(widths)
    assert resolution["resolving_0.01"] == sum(w <= 0.01 for w in widths)
    assert f"median ±{np.median(widths):.3f}" in study_run["stdout"]
    if np.median(widths) > 0.01:  # a test-sized study cannot resolve 0.01 AUC and must say so
        assert "a difference of 0.01 AUC is not resolved" in " ".join(study_run["results"]["notes"])


def test_report_rebuilds_tables_and_plots_from_mlflow_alone(study_run, tmp_path):
    from mlflow import MlflowClient

    parent = study_run["results"]["parent_run_id"]
    done = crossfed("report", "reduced", "--out", tmp_path / "rebuilt", "--tracking-uri", study_run["uri"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert parent in done.stdout
    rebuilt = json.loads((tmp_path / "rebuilt" / "results.json").read_text())
    assert rebuilt == study_run["results"]
    expected_plots = {"auc_vs_labelled_symmetric.png", "roc_symmetric.png", "auc_vs_labelled_data_poor.png",
                      "roc_data_poor.png", "scaling.png", "differences.png", "loss_per_round.png"}
    assert {p.name for p in (tmp_path / "rebuilt").glob("*.png")} == expected_plots
    for name in expected_plots:
        assert_valid_png(tmp_path / "rebuilt" / name)
    client = MlflowClient(study_run["uri"])
    assert {Path(a.path).name for a in client.list_artifacts(parent, "plots")} == expected_plots
    assert {Path(a.path).name for a in client.list_artifacts(parent, "results")} == {
        "cells.csv", "differences.csv", "budget.csv", "results.json", "verdicts.txt"}


def test_report_of_an_unknown_run_is_one_line_and_exit_2(study_run, tmp_path):
    done = crossfed("report", "no-such-run", "--tracking-uri", study_run["uri"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error:") and "no-such-run" in done.stderr
    assert "Traceback" not in done.stderr
    missing = crossfed("report", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert missing.returncode == 2 and "no MLflow store" in missing.stderr
    assert not (tmp_path / "none.db").exists(), "a report must not create an empty store"


# --- what the MLflow UI shows of a study --------------------------------------------------------------------

def study_runs(study_run) -> dict[str, list]:
    """Every run of the study's store, by crossfed.kind."""
    from mlflow import MlflowClient

    client = MlflowClient(study_run["uri"])
    experiment = client.get_run(study_run["results"]["parent_run_id"]).info.experiment_id
    runs: dict[str, list] = {}
    for run in client.search_runs([experiment], max_results=50_000):
        runs.setdefault(run.data.tags.get(rep.KIND), []).append(run)
    return runs


def test_the_parent_run_carries_the_question_the_answer_and_the_tables(study_run):
    from mlflow import MlflowClient

    client = MlflowClient(study_run["uri"])
    parent = client.get_run(study_run["results"]["parent_run_id"])
    description = parent.data.tags["mlflow.note.content"]
    assert description.startswith("Study reduced: does pre-training on ") and "together, federated" in description
    assert "cms" in description and "atlas" in description
    differences = study_run["results"]["differences"]
    fed_local = [d for d in differences if d["comparison"] == "federated-local"]
    better = sum(d["auc_difference_low"] > 0 for d in fed_local)
    worse = sum(d["auc_difference_high"] < 0 for d in fed_local)
    assert (f"federated better than local in {better} of {len(fed_local)} comparisons, worse in {worse}, "
            f"no significant difference in {len(fed_local) - better - worse}") in description
    assert "Indicative only" in description and "\n" not in description  # one paragraph
    # The study's settings as params, as study.yaml spells them.
    params = parent.data.params
    assert params["repeats.pretrain_seeds"] == "2" and params["repeats.finetune_seeds"] == "2"
    assert params["scenarios.symmetric.events"] == "240" and params["model.preset"] == "tiny"
    assert params["finetune.labelled_events"] == "[40, 80]"
    # Summary metrics, the results as MLflow tables (the UI lists them in mlflow.loggedArtifacts).
    cell = study_run["results"]["cells"][0]
    key = f"{cell['scenario']}/{cell['task']}/{cell['experiment']}/{cell['method']}/{cell['labelled_events']}"
    assert parent.data.metrics[f"auc/{key}/mean"] == pytest.approx(cell["auc_mean"])
    if "rejection_0.3_mean" in cell:
        assert parent.data.metrics[f"rejection_0.3/{key}/mean"] == pytest.approx(cell["rejection_0.3_mean"])
    logged = {entry["path"]: entry["type"] for entry in json.loads(parent.data.tags["mlflow.loggedArtifacts"])}
    assert logged == dict.fromkeys(rep.TABLES.values(), "table")
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, rep.TABLES["cells"],
                                                      str(study_run["root"] / "tables"))).read_text())
    assert len(table["data"]) == len(study_run["results"]["cells"])
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["auc_mean"] == pytest.approx(cell["auc_mean"]) and row["method"] == cell["method"]


def test_every_run_has_a_description_and_the_crossfed_version(study_run):
    from crossfed import __version__

    runs = [run for kind in study_runs(study_run).values() for run in kind]
    assert len(runs) > 100
    for run in runs:
        tags = run.data.tags
        assert tags.get("mlflow.note.content", "").strip(), (run.info.run_name, "no description")
        assert tags.get("crossfed.version") == __version__, run.info.run_name


def test_fine_tune_runs_record_their_settings_source_model_and_real_duration(study_run):
    """One run per fine-tuning under its job's run: params, the pre-training run it started from (tag and
    param), the per-epoch losses as series, opened before it trained (its duration holds the training)."""
    study = study_run["study"]
    by_kind = study_runs(study_run)
    jobs_ = {run.info.run_id: run for run in by_kind["finetune"]}
    pretrains = {run.info.run_id: run for run in by_kind["pretrain"]}
    singles = by_kind["finetune-single"]
    setups = plan.setups(study)
    per_setup = sum(len(study.experiments) if s.method == "scratch" else len(s.experiments) for s in setups)
    assert len(jobs_) == per_setup
    assert len(singles) == per_setup * len(study.tasks) * 2 * study.repeats.finetune_seeds
    epochs = study.finetune.epochs
    for run in singles:
        params, tags = run.data.params, run.data.tags
        assert params["finetune.lr"] == str(study.finetune.lr) and params["finetune.epochs"] == str(epochs)
        assert params["finetune.mode"] in ("frozen", "full") and params["labelled_events"] in ("40", "80")
        assert int(params["seed"]) >= 0 and params["task"] in study.tasks
        assert tags["crossfed.source_model"] == params["source_model"]
        job = jobs_[tags[rep.PARENT]]
        setup = plan.Setup.from_tags(tags)
        if setup.method == "scratch":
            assert params["source_model"] == "none" and params["finetune.mode"] == "full"
        else:
            source = pretrains[params["source_model"]]  # the pre-training run of the same setup
            assert plan.Setup.from_tags(source.data.tags) == setup
            assert job.data.params["source_model"] == params["source_model"]
        assert job.info.start_time <= run.info.start_time <= run.info.end_time <= job.info.end_time
        assert run.data.metrics["auc"] > 0 and run.info.status == "FINISHED"
    from mlflow import MlflowClient

    client = MlflowClient(study_run["uri"])
    # each records the labelled samples of its task as inputs (the UI's Datasets column): name, context and
    # the files' fingerprint; the events stay at the site
    from crossfed.data.records import fingerprint

    for run in singles[:8]:
        experiment, task = run.data.tags[rep.EXPERIMENT], study.tasks[run.data.params["task"]]
        inputs = {i.tags[0].value: i.dataset for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
        assert sorted(inputs) == ["finetune.background", "finetune.signal"], inputs
        for context, process in (("finetune.signal", task.signal), ("finetune.background", task.background)):
            files = study.experiments[experiment].labelled[process].files
            assert inputs[context].name == f"{experiment}.{context}"
            assert inputs[context].digest == fingerprint(sorted(files)), (context, process)
    run = singles[0]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, epochs + 1))
    # Opened before training: the run's time covers its epochs (their losses carry when they were logged).
    assert run.info.start_time <= history[0].timestamp and history[-1].timestamp <= run.info.end_time


def test_no_metric_logged_once_is_a_series_and_clients_log_system_metrics(study_run):
    """A value logged once is a summary (step 0), never a one-point series; per-round and per-epoch metrics
    have a point per round or epoch. Each pre-training client logged its node's system metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(study_run["uri"])
    by_kind = study_runs(study_run)
    checked = [run for kind in ("study", "pretrain", "finetune") for run in by_kind[kind]] + by_kind["finetune-single"][:20]
    for run in checked:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if len(steps) == 1:
                assert steps == [0], (run.info.run_name, key, steps)
            elif not key.startswith("system/"):
                assert len(set(steps)) == len(steps) > 1 and min(steps) >= 1, (run.info.run_name, key, steps)
    for run in by_kind["pretrain"]:
        clients = {k.split(".")[2] for k in run.data.tags if k.startswith("crossfed.client.") and k.endswith(".node")}
        assert clients, run.info.run_name
        for name in clients:
            assert f"system/{name}/cpu_utilization_percentage" in run.data.metrics, (run.info.run_name, name)
            assert f"system/{name}/system_memory_usage_megabytes" in run.data.metrics, (run.info.run_name, name)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_ui(study_run, tmp_path):
    """`mlflow server` on the study's store, on a free port; its base URL."""
    import time
    import urllib.request

    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", study_run["uri"],
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=study_run["root"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow-server.log").read_text()
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.mark.browser
def test_the_mlflow_ui_shows_results_source_models_and_model_version_tags(study_run, mlflow_ui, tmp_path):
    """Headless Chromium (Debian's `chromium`, driven by Playwright through executable_path, nothing
    downloaded) on `mlflow server` over the study's store: the parent run's page shows metrics and the
    description; a fine-tuning run's page its parameters and source model; a registered version's page its
    tags. Screenshots of the three pages: tmp_path/ui-*.png, and copied into $CROSSFED_TEST_ARTIFACTS when set."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium); the browser test needs it")
    import mlflow
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    from crossfed import tracking

    client = MlflowClient(study_run["uri"])
    parent = client.get_run(study_run["results"]["parent_run_id"])
    experiment = parent.info.experiment_id
    by_kind = study_runs(study_run)
    single = next(r for r in by_kind["finetune-single"] if r.data.params["source_model"] != "none")
    pretrain = next(r for r in by_kind["pretrain"] if r.data.tags["crossfed.method"] == "federated")
    mlflow.set_tracking_uri(study_run["uri"])
    version = tracking.register_model(pretrain.info.run_id, "model", "reduced-ui-test")
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # the UI loads slowly on a busy 2-core machine

        page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs/{parent.info.run_id}")
        expect(page.get_by_text("Study reduced: does pre-training on").first).to_be_visible()
        expect(page.get_by_text("Answer (paired AUC differences").first).to_be_visible()
        expect(page.get_by_text(f"Metrics ({len(parent.data.metrics)})", exact=True).first).to_be_visible()
        expect(page.get_by_text(f"Parameters ({len(parent.data.params)})", exact=True).first).to_be_visible()
        shots.append(tmp_path / "ui-parent-run.png")
        page.screenshot(path=shots[-1], full_page=True)

        page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs/{single.info.run_id}")
        expect(page.get_by_text(f"Parameters ({len(single.data.params)})", exact=True).first).to_be_visible()
        expect(page.get_by_text("finetune.lr", exact=True).first).to_be_visible()
        expect(page.get_by_text("source_model", exact=True).first).to_be_visible()
        expect(page.get_by_text(single.data.params["source_model"], exact=True).first).to_be_visible()
        shots.append(tmp_path / "ui-finetune-run.png")
        page.screenshot(path=shots[-1], full_page=True)

        page.goto(f"{mlflow_ui}/#/models/reduced-ui-test/versions/{version}")
        for key, value in tracking.model_version_tags(pretrain).items():
            expect(page.get_by_text(key, exact=True).first).to_be_visible()
            expect(page.get_by_text(value, exact=True).first).to_be_visible()
        shots.append(tmp_path / "ui-model-version.png")
        page.screenshot(path=shots[-1], full_page=True)
        browser.close()
    keep = os.environ.get("CROSSFED_TEST_ARTIFACTS")
    for shot in shots:
        assert_valid_png(shot)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / shot.name)
