"""`finetune -c`: every kind of reference resolves to the right experiment's model, against a real MLflow
store holding an MLflow model as a pre-training run logs it (`rounds._log_final_model`, the real function),
with the clients' model folders as they export them at their sites (`mlflow_model.export_model_folder`);
wrong references and other presets are one-line user errors naming what is wrong."""

import json
import shutil

import mlflow
import numpy as np
import pytest
import torch
import uproot

from crossfed import tracking
from crossfed.data.records import dataset_records
from crossfed.config import config_from_dict
from crossfed.errors import CrossfedError
from crossfed.federation.result import save_state
from crossfed.model import build_model
from crossfed.model_source import check_model_settings, resolve_model_source
from crossfed.serving import mlflow_model


def config_for(preset="tiny"):
    pretrain = {"pretrain": {"files": ["events.root"]}}  # in the test's folder; only fingerprinted
    return config_from_dict({
        "name": "source-test",
        "experiments": {"cms": {"schema": "cms_nanoaod", **pretrain}, "atlas": {"schema": "atlas_opendata", **pretrain}},
        "model": {"preset": preset},
        "federation": {"rounds": 2},
    })


def client_state(config, experiment, seed):
    torch.manual_seed(seed)
    model = build_model(config.model, [experiment], ["replaced_object"])
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture
def pretrained(tmp_path, monkeypatch):
    """A registered federated run whose model folder holds cms's and atlas's client models."""
    from crossfed.federation.rounds import _log_final_model, plan_rounds

    monkeypatch.chdir(tmp_path)
    with uproot.recreate(tmp_path / "events.root") as file:
        file["Events"] = {"MET_pt": np.ones(3, dtype=np.float32)}
    config = config_for()
    states = {name: client_state(config, name, seed) for seed, name in enumerate(["cms", "atlas"])}
    files = {name: mlflow_model.export_model_folder(str(tmp_path / f"{name}_model"), state,
                                                     mlflow_model.model_info("foundation", config, [name]))
             for name, state in states.items()}
    save_state(tmp_path / "global.npz", {k: v for k, v in states["cms"].items() if k.startswith("backbone.")})
    plan = plan_rounds(config, "federated", None)
    records = dataset_records(config)  # as the clients' data checks make them, at their sites
    with tracking.start_run(config, tracking.run_name(config, "federated"), mode="federated",
                            nested_tags=tracking.fingerprint_tags(records)) as run:
        tracking.log_datasets(records)
        _log_final_model(config, plan, run.info.run_id, {"global_state_path": str(tmp_path / "global.npz"),
                                                          "client_models": files}, register=True)
    mlflow.MlflowClient().set_registered_model_alias("source-test", "champion", "1")
    return run.info.run_id, states, files


def test_each_reference_gives_the_experiments_own_model(pretrained):
    run_id, states, files = pretrained
    for reference in [run_id, f"runs:/{run_id}/model", "models:/source-test/1", "models:/source-test@champion"]:
        for experiment in ("cms", "atlas"):
            source = resolve_model_source(reference, experiment)
            own = [k for k in states[experiment] if k.startswith(f"adapters.{experiment}.")]
            assert own and sorted(source.state) == sorted(states[experiment]), reference
            for key in own:
                np.testing.assert_array_equal(source.state[key], states[experiment][key], err_msg=reference)
            assert source.run_id == run_id and source.file == files[experiment]  # at the client's site
            assert source.settings["preset"] == "tiny"
    assert resolve_model_source("models:/source-test@champion", "cms").reference == "models:/source-test/1"
    assert resolve_model_source(run_id, "cms").reference == run_id
    by_file = resolve_model_source(files["atlas"], "atlas")
    assert by_file.run_id is None and set(by_file.state) == set(states["atlas"])
    for nothing in (None, "none", "None"):
        assert resolve_model_source(nothing, "cms").from_scratch


def test_a_private_adapter_elsewhere_is_never_replaced_silently(pretrained):
    """Client models stay at their sites (not in MLflow): where cms's folder is not readable, its model is
    refused with where it is and how to take the shared parameters only."""
    run_id, states, files = pretrained
    logged, _ = mlflow_model.read_model_folder(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model"))
    assert logged and not mlflow_model.adapters_held(logged), "the global model holds no private adapter"
    shutil.rmtree(files["cms"])
    for reference in (run_id, "models:/source-test/1"):
        with pytest.raises(CrossfedError, match=f"cms's model keeps its adapter private at its site \\({files['cms']}, "
                                                f"not here\\): fine-tune there, or .* -c runs:/{run_id}/model/artifacts/state.npz"):
            resolve_model_source(reference, "cms")
    shared = resolve_model_source(f"runs:/{run_id}/model/artifacts/state.npz", "cms")
    assert sorted(shared.state) == sorted(k for k in states["cms"] if k.startswith("backbone."))
    assert resolve_model_source(run_id, "atlas").file == files["atlas"]


def test_the_registered_version_says_how_it_was_trained(pretrained):
    run_id, _, _ = pretrained
    version = mlflow.MlflowClient().get_model_version("source-test", "1")
    assert version.tags == {"method": "federated", "experiments": "cms,atlas", "strategy": "fedavg", "rounds": "2"}
    card = version.description  # the model card
    assert "pre-trained on cms,atlas: federated pre-training, strategy fedavg, 2 rounds" in card and run_id in card
    fingerprints = mlflow.get_run(run_id).data.tags
    assert f"cms.pretrain (fingerprint {fingerprints['crossfed.data.cms.pretrain']}, 3 events in its files)" in card
    assert f"atlas.pretrain (fingerprint {fingerprints['crossfed.data.atlas.pretrain']})" in card  # no atlas tree
    assert "no differential privacy" in card
    assert "device-hours not measured" in card and "energy not measured" in card  # this run logged no footprint


def test_the_runs_datasets_are_its_mlflow_inputs(pretrained, tmp_path):
    """Each dataset is a run input (the UI's Datasets column): fingerprint as digest, the files as source,
    schema, selection and event counts as profile; the events themselves are not uploaded."""
    run_id, _, _ = pretrained
    run = mlflow.get_run(run_id)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"cms.pretrain", "atlas.pretrain"}
    cms = inputs["cms.pretrain"]
    assert cms.dataset.digest == run.data.tags["crossfed.data.cms.pretrain"]
    assert [t.value for t in cms.tags if t.key == "mlflow.data.context"] == ["pretrain"]
    assert json.loads(cms.dataset.source) == {"uris": [(tmp_path / "events.root").as_uri()]}
    assert json.loads(cms.dataset.profile) == {"data_schema": "cms_nanoaod", "selection": "none", "max_events": None,
                                               "files": 1, "events_in_files": 3}
    assert "features" in cms.dataset.schema and cms.dataset.source_type == "root_files"
    assert not [a for a in mlflow.MlflowClient().list_artifacts(run_id) if a.path.endswith(".root")]


def test_wrong_references_are_one_line_errors(pretrained, tmp_path):
    run_id, _, _ = pretrained
    cases = {
        "no-such-file.npz": "no such file, and no MLflow run with that id or name",
        "models:/source-test/7": "no such registered model version",
        "models:/source-test": "expected models:/NAME/VERSION or models:/NAME@ALIAS",
        "runs:/nothing": "expected runs:/RUN_ID/PATH",
        f"runs:/{run_id}/config.yaml": "not a readable model state",
        str(tmp_path): "no artifacts/crossfed.json in the model folder",
    }
    for reference, message in cases.items():
        with pytest.raises(CrossfedError, match=message) as raised:
            resolve_model_source(reference, "cms")
        assert "\n" not in str(raised.value)
    with tracking.start_run(config_for(), "no-model", mode="federated") as empty:
        pass
    with pytest.raises(CrossfedError, match="logged no model"):
        resolve_model_source(empty.info.run_id, "cms")


def test_a_model_of_another_preset_names_both_presets(pretrained, tmp_path):
    run_id, _, _ = pretrained
    wide = config_for("kishimoto-11m")
    with pytest.raises(CrossfedError, match=r"is a 'tiny' model, the config's model.preset is 'kishimoto-11m' "
                                            r"\(dim 48 vs 384, depth 2 vs 6"):
        check_model_settings(resolve_model_source(run_id, "cms"), wide)
    # a bare file carries no settings: its preset is read off the backbone's shapes
    save_state(tmp_path / "bare.npz", client_state(config_for(), "cms", 0))
    with pytest.raises(CrossfedError, match=r"bare.npz is a 'tiny' model, the config's model.preset is 'kishimoto"):
        check_model_settings(resolve_model_source(str(tmp_path / "bare.npz"), "cms"), wide)
    check_model_settings(resolve_model_source(run_id, "cms"), config_for())  # the same settings pass


def test_runs_logging_the_same_dataset_at_once_all_record_it(tmp_path, monkeypatch):
    """A study's pre-trainings run concurrently and log the same pools: MLflow's SQL store looks a dataset
    up, then inserts it, so two runs can race to insert it; every run must still end up with its input."""
    import threading

    monkeypatch.chdir(tmp_path)
    with uproot.recreate(tmp_path / "events.root") as file:
        file["Events"] = {"MET_pt": np.ones(3, dtype=np.float32)}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'race.db'}")
    experiment_id = mlflow.set_experiment("race").experiment_id
    records = dataset_records(config_for())
    barrier, errors, run_ids = threading.Barrier(6), [], []

    def one():
        try:
            with mlflow.start_run() as run:
                run_ids.append(run.info.run_id)
                barrier.wait(timeout=60)
                tracking.log_datasets(records)
        except Exception as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    client = mlflow.MlflowClient()
    for run_id in run_ids:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert sorted(i.dataset.name for i in inputs) == sorted(records), run_id
    assert len(client.search_runs([experiment_id])) == 6
