"""The demo end to end at test size: real generated events, real Ray + DeepSpeed pre-training, real
fine-tuning, a real MLflow SQLite store; then `crossfed report` rebuilds the same table from MLflow."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from crossfed import demo, report
from crossfed.config import load_config
from crossfed.generate.recipe import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]


def crossfed(*args, cwd):
    return subprocess.run([sys.executable, "-m", "crossfed", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=420)


@pytest.fixture(scope="module")
def demo_run(samples, tmp_path_factory):
    """One reduced demo (scale ci on the shared sample files) run through the CLI with --config."""
    root = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    files = {name: {"pretrain": [str(samples[name]["ttbar"]), str(samples[name]["tth"])],
                    "signal": [str(samples[name]["tth"])], "background": [str(samples[name]["ttbar"])]}
             for name in demo.DEMO_EXPERIMENTS}
    config = demo.demo_config(demo.SCALES["ci"], files, root / "work", uri)
    (root / "demo.yaml").write_text(config.to_yaml())
    done = crossfed("demo", "--config", root / "demo.yaml", "--workdir", root / "work", cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (results_file,) = (root / "work" / "plots").glob("*/results.json")
    return dict(root=root, uri=uri, config=config, stdout=done.stdout, results=json.loads(results_file.read_text()),
                plots_dir=results_file.parent)


def assert_valid_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, (path, image.shape)
    assert image[..., :3].std() > 0.01, f"{path} is blank"


def test_demo_table_covers_every_experiment_method_and_size(demo_run):
    rows = demo_run["results"]["rows"]
    ladder = list(demo.SCALES["ci"].ladder)
    expected = {(e, m, n) for e in demo.DEMO_EXPERIMENTS for m in report.METHOD_ORDER for n in ladder}
    assert {(r["experiment"], r["method"], r["labelled_events"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
        assert row["rejection_at_eps_s_0.3"] >= 1.0  # 1/eps_B, eps_B <= 1
    # Different pre-training must give different classifiers: identical AUCs would mean the states were ignored.
    for experiment in demo.DEMO_EXPERIMENTS:
        aucs = {r["method"]: r["auc"] for r in rows if r["experiment"] == experiment and r["labelled_events"] == ladder[-1]}
        assert len(set(aucs.values())) > 1, aucs
    assert "federated" in demo_run["stdout"] and "mlflow ui --backend-store-uri" in demo_run["stdout"]


def test_demo_ends_by_naming_each_pretrained_model_for_finetune(demo_run):
    from mlflow import MlflowClient

    commands = {line.split()[0]: line for line in demo_run["stdout"].splitlines() if "crossfed finetune" in line}
    for method in ("federated", "local", "centralized"):
        for experiment in demo.DEMO_EXPERIMENTS:
            line = commands[f"{method}/{experiment}"]
            found = re.search(rf"crossfed finetune {re.escape(str(demo_run['root'] / 'demo.yaml'))} -e {experiment} "
                              r"-c ([0-9a-f]{32})   \(file: (.+)\)$", line)
            assert found, line
            info = json.loads(Path(MlflowClient(demo_run["uri"]).download_artifacts(found[1], "model/crossfed.json"))
                              .read_text())
            assert info["experiments"][experiment] == found[2], line  # the run names the same model
            assert Path(found[2]).is_file(), line


def test_demo_writes_and_logs_valid_plots(demo_run):
    for name in report.PLOT_NAMES:
        assert_valid_png(demo_run["plots_dir"] / name)
    from mlflow import MlflowClient

    client = MlflowClient(demo_run["uri"])
    logged = {Path(a.path).name for a in client.list_artifacts(demo_run["results"]["parent_run_id"], "plots")}
    assert logged == set(report.PLOT_NAMES)


def test_every_demo_run_carries_config_versions_and_data_fingerprints(demo_run):
    from mlflow import MlflowClient

    client = MlflowClient(demo_run["uri"])
    parent = client.get_run(demo_run["results"]["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`{report.PARENT}` = '{parent.info.run_id}'")
    kinds = {run.data.tags[report.KIND] for run in children}
    assert kinds == {"pretrain", "finetune"} and parent.info.status == "FINISHED"
    for run in [parent, *children]:
        tags = run.data.tags
        assert tags["crossfed.version.crossfed"] and tags["crossfed.data.cms.finetune.signal"], run.info.run_name
        assert run.data.params["model.preset"] == "tiny", run.info.run_name
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_name


def test_demo_logs_pretraining_runs_with_a_loss_per_round(demo_run):
    from mlflow import MlflowClient

    client = MlflowClient(demo_run["uri"])
    parent = client.get_run(demo_run["results"]["parent_run_id"])
    rebuilt = report.collect(client, parent)
    assert set(rebuilt.loss_histories) == {"federated", "local/cms", "local/atlas", "centralized"}
    for name, points in rebuilt.loss_histories.items():
        assert [step for step, _ in points] == list(range(1, demo.SCALES["ci"].rounds + 1)), name
        assert all(math.isfinite(loss) and loss > 0 for _, loss in points), name


def test_report_rebuilds_the_same_table_from_mlflow(demo_run, tmp_path):
    parent_id = demo_run["results"]["parent_run_id"]
    rebuilt = report.build_report(parent_id, tmp_path / "plots", demo_run["uri"])
    printed = {(r["experiment"], r["method"], r["labelled_events"]): (r["auc"], r["rejection_at_eps_s_0.3"])
               for r in demo_run["results"]["rows"]}
    assert rebuilt.table_values() == printed
    for name in report.PLOT_NAMES:
        assert_valid_png(tmp_path / "plots" / name)
    # The CLI, by run name this time (the newest run called "demo").
    done = crossfed("report", "demo", "--out", tmp_path / "cli", "--tracking-uri", demo_run["uri"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert parent_id in done.stdout
    first = rebuilt.results[0]
    assert f"{first.auc:.3f}" in done.stdout
    for name in report.PLOT_NAMES:
        assert_valid_png(tmp_path / "cli" / name)


def test_report_of_an_unknown_run_is_one_line_and_exit_2(demo_run, tmp_path):
    done = crossfed("report", "no-such-run", "--tracking-uri", demo_run["uri"], cwd=tmp_path)
    assert done.returncode == 2
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "no-such-run" in last_line and "Traceback" not in done.stderr
    missing = crossfed("report", "demo", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert missing.returncode == 2 and "no MLflow store" in missing.stderr
    assert not (tmp_path / "none.db").exists(), "a report must not create an empty store"


def test_unknown_scale_is_one_line_and_exit_2(tmp_path):
    done = crossfed("demo", "--scale", "huge", "--workdir", tmp_path, cwd=tmp_path)
    assert done.returncode == 2 and "huge" in done.stderr and "default" in done.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written for a rejected command"


def test_demo_config_with_missing_data_names_the_dataset_and_exits_2(samples, tmp_path):
    files = {name: {"pretrain": [str(samples[name]["ttbar"])], "signal": [str(samples[name]["tth"])],
                    "background": [str(samples[name]["ttbar"])]} for name in demo.DEMO_EXPERIMENTS}
    files["atlas"]["signal"] = [str(tmp_path / "no-such-tth.root")]
    config = demo.demo_config(demo.SCALES["ci"], files, tmp_path / "work", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "demo.yaml").write_text(config.to_yaml())
    done = crossfed("demo", "--config", tmp_path / "demo.yaml", "--workdir", tmp_path / "work", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "experiments.atlas.finetune.signal:" in done.stderr and "no-such-tth.root: no such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "work").exists(), "nothing written"


@pytest.mark.parametrize("name", list(demo.SCALES))
def test_every_scale_is_a_valid_study(name, tmp_path):
    """Each scale's recipe and run config validate, and its largest ladder step fits the training split."""
    scale = demo.SCALES[name]
    recipe = tmp_path / "recipe.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(demo.sample_recipe(scale)))
    assert load_recipe(recipe).labelled["tth_vs_ttbar"].events == scale.labelled_events
    files = {e: {"pretrain": ["p.root"], "signal": ["s.root"], "background": ["b.root"]} for e in demo.DEMO_EXPERIMENTS}
    config = demo.demo_config(scale, files, tmp_path, "sqlite:///x.db")
    training_fraction = 1 - config.data.validation_fraction - config.data.test_fraction
    per_class_in_training = scale.labelled_events * training_fraction
    assert max(scale.ladder) / 2 <= 0.9 * per_class_in_training  # 10% margin for the random split
    assert config.federation.rounds * config.federation.local_steps == config.training.steps


def test_shipped_demo_config_is_valid():
    config = load_config(REPO_ROOT / "jobs" / "configs" / "demo.yaml")
    assert set(config.experiments) == set(demo.DEMO_EXPERIMENTS)
    assert config.finetune.labelled_events
