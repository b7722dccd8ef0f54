"""MLflow tracking against a real SQLite store in tmp_path, with real ROOT files as the datasets."""

import mlflow
import numpy as np
import pytest
import uproot
import yaml

from crossfed import tracking
from crossfed.data.records import dataset_records
from crossfed.config import TrackingConfig, config_from_dict
from crossfed.errors import CrossfedError
from crossfed.serving import mlflow_model


def write_root(path, values):
    with uproot.recreate(path) as file:
        file["Events"] = {"MET_pt": np.asarray(values, dtype=np.float32)}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default store and its artifacts land here
    write_root(tmp_path / "cms_1.root", [10.0, 20.0])
    write_root(tmp_path / "cms_2.root", [30.0])
    write_root(tmp_path / "atlas.root", [5.0, 6.0, 7.0])
    return tmp_path


def run_config(workdir, **overrides):
    raw = {
        "name": "x" * 7000,  # longer than MLflow's 6000-character parameter limit
        "experiments": {
            "cms": {"schema": "cms_nanoaod", "pretrain": {"files": [str(workdir / "cms_*.root")]}},
            "atlas": {"schema": "atlas_opendata", "pretrain": {"files": [str(workdir / "atlas.root")]}},
        },
        "federation": {"strategy": {"name": "fedadam"}, "shared": ["backbone"]},
        **overrides,
    }
    return config_from_dict(raw)


def test_tracking_uri_defaults_to_sqlite_in_the_working_directory(workdir):
    assert tracking.tracking_uri(TrackingConfig()) == f"sqlite:///{workdir.resolve()}/mlflow.db"
    assert tracking.tracking_uri(TrackingConfig(uri="http://mlflow:5000")) == "http://mlflow:5000"


def test_run_records_config_versions_data_and_a_registered_model(workdir):
    config = run_config(workdir)
    fingerprints = dataset_fingerprints(config)  # where the data is (a federation: its clients)
    with tracking.start_run(config, "pretrain-1", mode="federated", nested_tags=fingerprints) as parent:
        mlflow.log_metric("loss", 0.5)
        state = {"backbone.w": np.arange(6, dtype=np.float32).reshape(2, 3), "heads.b": np.ones(2, np.float32)}
        mlflow_model.log_model(state, mlflow_model.model_info("foundation", config, ["cms"]), "model")
    with tracking.start_run(config, "child", mode="local", parent_run_id=parent.info.run_id,
                            nested_tags={"crossfed.experiment": "cms"}) as child:
        pass

    assert (workdir / "mlflow.db").is_file()
    run = tracking.find_run("pretrain-1")
    assert run.info.run_id == parent.info.run_id
    assert mlflow.get_experiment(run.info.experiment_id).name == "crossfed"
    params, tags = run.data.params, run.data.tags
    assert params["federation.strategy.name"] == "fedadam"
    assert params["experiments.cms.schema"] == "cms_nanoaod"
    assert params["federation.shared"] == '["backbone"]'
    assert len(params["name"]) == 6000 and params["name"].endswith("...")
    assert tags["crossfed.mode"] == "federated"
    assert tags["crossfed.version.mlflow"] == mlflow.__version__
    assert tags["crossfed.version.uproot"] == uproot.__version__
    for package in ["crossfed", "python", "torch", "ray", "deepspeed"]:
        assert tags[f"crossfed.version.{package}"]
    assert len(tags["crossfed.data.cms.pretrain"]) == 16
    assert tags["crossfed.data.cms.pretrain"] != tags["crossfed.data.atlas.pretrain"]

    config_text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")
    assert yaml.safe_load(config_text)["federation"]["strategy"]["name"] == "fedadam"

    child_run = tracking.find_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.tags["crossfed.experiment"] == "cms"
    assert child_run.data.tags["crossfed.mode"] == "local"

    assert tracking.register_model(run.info.run_id, "model", "crossfed-foundation") == "1"
    assert tracking.register_model(run.info.run_id, "model", "crossfed-foundation") == "2"
    version = mlflow.MlflowClient().get_model_version("crossfed-foundation", "2")
    assert version.run_id == run.info.run_id
    loaded, info = mlflow_model.read_model_folder(mlflow.artifacts.download_artifacts("models:/crossfed-foundation/2"))
    np.testing.assert_array_equal(loaded["backbone.w"], state["backbone.w"])
    np.testing.assert_array_equal(loaded["heads.b"], state["heads.b"])
    assert info["kind"] == "foundation" and info["experiments"] == ["cms"]

    with pytest.raises(CrossfedError, match="logged no model 'nothing-here'"):
        tracking.register_model(run.info.run_id, "nothing-here", "crossfed-foundation")
    with pytest.raises(CrossfedError, match="no MLflow run"):
        tracking.find_run("no-such-run")


def test_starting_a_run_opens_no_data(workdir):
    (workdir / "cms_1.root").unlink()  # data that only exists at its site
    with tracking.start_run(run_config(workdir), "no-data-here", mode="federated") as run:
        pass
    assert not any(tag.startswith("crossfed.data.") for tag in tracking.find_run(run.info.run_id).data.tags)


def dataset_fingerprints(config, experiments=None):
    return tracking.fingerprint_tags(dataset_records(config, experiments))


def test_fingerprint_follows_file_contents(workdir):
    config = run_config(workdir)
    before = dataset_fingerprints(config)
    assert set(before) == {"crossfed.data.cms.pretrain", "crossfed.data.atlas.pretrain"}
    assert dataset_fingerprints(config, ["atlas"]) == {"crossfed.data.atlas.pretrain": before[
        "crossfed.data.atlas.pretrain"]}  # one client's own experiments only
    assert dataset_fingerprints(config) == before  # deterministic

    write_root(workdir / "cms_2.root", [31.0])  # one event changed in one file
    after = dataset_fingerprints(config)
    assert after["crossfed.data.cms.pretrain"] != before["crossfed.data.cms.pretrain"]
    assert after["crossfed.data.atlas.pretrain"] == before["crossfed.data.atlas.pretrain"]

    (workdir / "atlas.root").unlink()
    with pytest.raises(CrossfedError, match=r"experiments.atlas.pretrain: .*atlas.root: no such file"):
        dataset_fingerprints(config)


def test_every_run_has_a_description_version_commit_and_a_name_of_its_own(workdir):
    import re

    import crossfed

    config = run_config(workdir, name="cfx")
    first, second = tracking.run_name(config, "federated"), tracking.run_name(config, "local")
    assert re.fullmatch(r"cfx-federated-\d{4}-\d{6}", first) and second.startswith("cfx-local-")
    with tracking.start_run(config, first, mode="federated") as plain:
        pass
    with tracking.start_run(config, second, mode="local", description="Local pre-training of cms.") as described:
        pass
    client = mlflow.MlflowClient()
    tags = client.get_run(plain.info.run_id).data.tags
    assert tags["mlflow.note.content"] == "crossfed federated of config 'cfx'"
    assert client.get_run(described.info.run_id).data.tags["mlflow.note.content"] == "Local pre-training of cms."
    assert tags["crossfed.version"] == crossfed.__version__
    # the tests run from a git checkout: its commit is the run's source
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["crossfed.git_commit"])
    assert tags["mlflow.source.git.commit"] == tags["crossfed.git_commit"].removesuffix("-dirty")


def test_the_registered_model_is_named_after_the_config_unless_set(workdir):
    assert tracking.registered_model_name(run_config(workdir, name="ci-demo")) == "ci-demo"
    assert tracking.registered_model_name(run_config(workdir, name="a/b")) == "a-b"
    named = run_config(workdir, name="ci-demo", tracking={"registered_model": "foundation"})
    assert tracking.registered_model_name(named) == "foundation"
