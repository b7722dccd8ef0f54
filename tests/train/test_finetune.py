"""Fine-tuning a tiny model on generated tt̄H vs tt̄, loading pre-trained states, and the CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from crossfed.errors import CrossfedError
from crossfed.train.finetune import finetune, load_labelled_events, split_indices_checked

# ~600 generated events: 45% train (240 balanced labelled), 15% validation, 40% test (~240 events).
DATA = {"validation_fraction": 0.15, "test_fraction": 0.4}
FINETUNE = {"epochs": 15, "lr": 0.003, "batch_size": 64, "mode": "full"}


def test_finetuned_tiny_model_separates_tth_from_ttbar(make_config):
    config = make_config(finetune=FINETUNE, data=DATA)
    events = load_labelled_events(config, "cms")
    metrics = finetune(config, "cms", 240, None, data=events)
    # Measured 0.81-0.85 over seeds 0-3 (240 labelled events, 15 epochs); chance is 0.5.
    assert metrics["auc"] >= 0.7, metrics
    assert metrics["labelled_events"] == 240 and metrics["test_events"] == int(0.4 * len(events))
    assert len(metrics.fpr) == len(metrics.tpr) and metrics.tpr[-1] == 1.0
    assert metrics["rejection_at_0.3"] >= metrics["rejection_at_0.5"] > 1.0


def test_training_events_never_overlap_the_test_split(make_config):
    config = make_config(data=DATA)
    events = load_labelled_events(config, "cms")
    train, validation, test = split_indices_checked(events, config, "cms")
    assert not set(train) & set(test) and not set(validation) & set(test)
    with pytest.raises(CrossfedError, match="training split has"):
        finetune(config, "cms", 10_000, None, data=events)


def test_pretrained_state_is_loaded_and_mismatches_are_user_errors(make_config, tmp_path):
    from crossfed.model import build_model

    config = make_config(finetune={**FINETUNE, "epochs": 1, "mode": "frozen"}, data=DATA)
    events = load_labelled_events(config, "cms")
    torch.manual_seed(7)
    pretrained = build_model(config.model, ["cms"], ["replaced_object"])
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.state_dict(), path)
    metrics = finetune(config, "cms", 100, path, data=events)
    assert 0.0 <= metrics["auc"] <= 1.0

    wider = make_config(data=DATA).model.model_copy(update={"dim": 64})
    other = build_model(wider, ["cms"], ["replaced_object"])
    with pytest.raises(CrossfedError, match="shape"):
        finetune(config, "cms", 100, {k: v.numpy() for k, v in other.state_dict().items()}, data=events)
    with pytest.raises(CrossfedError, match="no backbone"):
        finetune(config, "cms", 100, {"heads.x": np.zeros(3)}, data=events)
    with pytest.raises(CrossfedError, match="no such checkpoint"):
        finetune(config, "cms", 100, tmp_path / "missing.pt", data=events)


def test_frozen_mode_trains_only_the_classifier_on_encodings_computed_once(make_config):
    """Frozen: the optimizer sees the classifier head alone (the pre-trained adapter and backbone stay as
    they are), and handing in the encodings gives exactly what encoding inside finetune gives."""
    from crossfed.model import build_model
    from crossfed.train import finetune as finetune_module
    from crossfed.train.finetune import encode_events

    config = make_config(finetune={**FINETUNE, "epochs": 2, "mode": "frozen"}, data=DATA)
    events = load_labelled_events(config, "cms")
    torch.manual_seed(11)
    state = {k: v.numpy() for k, v in build_model(config.model, ["cms"], ["replaced_object"]).state_dict().items()}
    seen = []
    original = finetune_module._optimizer
    finetune_module._optimizer = lambda module, cfg: seen.append([n for n, _ in module.named_parameters()]) or \
        original(module, cfg)
    try:
        inside = finetune(config, "cms", 100, state, data=events, seed=5)
    finally:
        finetune_module._optimizer = original
    assert seen and not any(n.startswith(("backbone.", "adapters.")) for n in seen[0]), seen
    encoded = encode_events(config, "cms", state, events)
    assert encoded.shape == (len(events), config.model.dim or 48)
    given = finetune(config, "cms", 100, state, data=events, seed=5, features=encoded)
    np.testing.assert_array_equal(inside.scores, given.scores)
    assert inside["auc"] == given["auc"]
    other_seed = finetune(config, "cms", 100, state, data=events, seed=6, features=encoded)
    assert not np.array_equal(other_seed.scores, given.scores), "the seed must draw another subset and head"


def test_fine_tuning_seed_draws_the_labelled_subset(make_config):
    """One seed, one labelled subset: the same seed repeats a fine-tuning exactly, another differs."""
    config = make_config(finetune={**FINETUNE, "epochs": 1}, data=DATA)
    events = load_labelled_events(config, "cms")
    first, again = (finetune(config, "cms", 60, None, data=events, seed=1) for _ in range(2))
    np.testing.assert_array_equal(first.scores, again.scores)
    assert len(first.scores) == len(first.labels) == first["test_events"]
    assert not np.array_equal(first.scores, finetune(config, "cms", 60, None, data=events, seed=2).scores)


def test_cli_prints_the_ladder_table_logs_a_run_per_rung_and_refuses_bad_input_first(make_config, tmp_path):
    import mlflow

    from crossfed.federation.result import save_state
    from crossfed.model import build_model

    config = make_config(finetune={**FINETUNE, "epochs": 1}, data=DATA)
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())

    def crossfed(*args):
        return subprocess.run([sys.executable, "-m", "crossfed", "finetune", str(path), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    tiny = build_model(config.model, ["cms"], ["replaced_object"])
    save_state(tmp_path / "tiny.npz", {k: v.numpy() for k, v in tiny.state_dict().items()})
    bad_input = {
        ("-e", "lhcb"): "unknown experiment",
        ("-c", "nowhere.npz"): "-c nowhere.npz: not a file, and no MLflow store at sqlite:///",
        ("-c", "tiny.npz", "--set", "model.preset=kishimoto-11m"):
            "tiny.npz is a 'tiny' model, the config's model.preset is 'kishimoto-11m'",
        ("--set", "finetune.lr=-1"): "finetune.lr",
    }
    for args, message in bad_input.items():
        bad = crossfed(*args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "mlflow.db").exists()  # bad input is refused before any run is logged

    done = crossfed("-n", "40", "-n", "80", "-c", "none", "--set", "seed=9")
    assert done.returncode == 0, done.stderr
    assert "AUC" in done.stdout and "80" in done.stdout and "from scratch" in done.stdout
    store = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    assert sorted(r.data.params["labelled_events"] for r in runs) == ["40", "80"]
    for run in runs:
        assert run.info.run_id in done.stdout and run.data.params["seed"] == "9"
        assert run.data.tags["crossfed.source_model"] == run.data.params["source_model"] == "none"
        inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}  # the labelled data, as inputs
        assert sorted(inputs) == ["cms.finetune.background", "cms.finetune.signal"]
        assert inputs["cms.finetune.signal"].digest == run.data.tags["crossfed.data.cms.finetune.signal"]
    check_the_registered_classifiers(store, runs, config, tmp_path, done.stdout)


def check_the_registered_classifiers(store, runs, config, tmp_path, stdout):
    """Each rung's classifier is a registered MLflow model with its model card; `crossfed score` scores a
    ROOT file with it as the pyfunc model does on the same events; bad input is one line, exit 2."""
    import mlflow

    from crossfed.data.reader import read_events

    name = "crossfed-cms-classifier"  # <the config's name>-<experiment>-classifier
    versions = {v.run_id: v for v in store.search_model_versions(f"name = '{name}'")}
    assert set(versions) == {r.info.run_id for r in runs}
    for run in runs:
        card = versions[run.info.run_id].description
        assert f"classifier of cms, fine-tuned on {run.data.params['labelled_events']} labelled events" in card
        assert f"AUC {run.data.metrics['auc']:.4g}" in card and "device-hours not measured" in card
        assert f"cms.finetune.signal (fingerprint {run.data.tags['crossfed.data.cms.finetune.signal']}" in card
    newest = max(versions.values(), key=lambda v: int(v.version)).version
    assert f"crossfed score models:/{name}/{newest} FILE --schema cms_nanoaod" in stdout

    signal_file = config.experiments["cms"].finetune.signal.files[0]
    uri = f"models:/{name}/{newest}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def score(*args):
        return subprocess.run([sys.executable, "-m", "crossfed", "score", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    done = score(uri, signal_file, "--schema", "cms_nanoaod", "--out", "scores.parquet")
    assert done.returncode == 0, done.stderr
    import pyarrow.parquet as pq

    scored = pq.read_table(tmp_path / "scores.parquet")["score"].to_numpy()
    events, _ = read_events([signal_file], "cms_nanoaod", max_objects=config.data.max_objects)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    loaded = mlflow.pyfunc.load_model(uri)
    expected = loaded.predict({"features": events.features, "types": events.types, "mask": events.mask})
    assert scored.shape == (len(events),) and np.all((scored >= 0) & (scored <= 1))
    np.testing.assert_allclose(scored, expected, rtol=1e-5, atol=1e-6)

    bad_input = {
        (uri, "missing.root", "--schema", "cms_nanoaod", "--out", "s.npz"): "missing.root",
        (uri, signal_file, "--schema", "cms_nanoaod", "--out", "s.csv"): "--out s.csv: expected a file ending in",
        (uri, signal_file, "--schema", "no_such_schema", "--out", "s.npz"): "no_such_schema",
        (f"models:/{name}/99", signal_file, "--schema", "cms_nanoaod", "--out", "s.npz"): f"models:/{name}/99",
    }
    for args, message in bad_input.items():
        bad = score(*args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.csv").exists()
    check_mlflow_serves_it(uri, env, events, expected)


def check_mlflow_serves_it(uri, env, events, expected):
    """`mlflow models serve`, as docs/models.md shows it, answers the events' scores over HTTP."""
    import json
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    count = 5
    body = {"inputs": {"features": events.features[:count].tolist(), "types": events.types[:count].tolist(),
                       "mask": events.mask[:count].tolist()}, "params": {"experiment": "cms"}}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    predictions = json.loads(answer.read())["predictions"]
                break
            except OSError:  # not listening yet
                assert time.monotonic() < deadline, "mlflow models serve did not answer within 180 s"
                time.sleep(1)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    np.testing.assert_allclose(np.asarray(predictions, dtype=float).ravel(), expected[:count], rtol=1e-5, atol=1e-6)
