"""Study configs: bad input is one line before any event is generated; the built-in studies are what their
comments promise; the plan trains each setup once with equal budgets."""

import subprocess
import sys

import pytest
import yaml

from crossfed.errors import CrossfedError
from crossfed.study import plan
from crossfed.study.config import load_study, preset_names, study_from_dict

MINIMAL = {"scenarios": {"symmetric": {"events": 1000}}, "generation": {"labelled_events": 500},
           "finetune": {"labelled_events": [100]}}


def crossfed(*args, cwd):
    return subprocess.run([sys.executable, "-m", "crossfed", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def with_changes(**sections) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.mark.parametrize("change, message", [
    ({"tasks": {"zh": {"signal": "ttH", "background": "ttbar"}}},
     "tasks.zh.signal: unknown process 'ttH' (did you mean 'tth'?)"),
    ({"finetune": {"labelled_events": [100, 2000]}},
     "finetune.labelled_events: 2000 labelled events need 1000 per class, the training split holds about 200"),
    ({"scenarios": {"data_poor": {"events": 1000, "poor": "atlas", "ratio": 0}}},
     "scenarios.data_poor.ratio: Input should be greater than 0"),
    ({"scenarios": {"data_poor": {"events": 1000, "poor": "atlas", "ratio": -10}}},
     "scenarios.data_poor.ratio: Input should be greater than 0"),
    ({"scenarios": {"data_poor": {"events": 1000, "poor": "lhcb", "ratio": 10}}},
     "scenarios.data_poor.poor: 'lhcb' is not an experiment"),
    ({"training": {"steps": 500}}, "training: steps is set by the study"),
    ({"scenarios": {"scaling": {"events": [1000, 100], "labelled_events": [300]}}},
     "scenarios.scaling.labelled_events: [300] are not in finetune.labelled_events"),
    ({"processes": {"zprime": ["NoSuchKey:whatever = on"]}, "tasks": {"z": {"signal": "zprime", "background": "ttbar"}}},
     "processes.zprime: Pythia rejected the setting"),
])
def test_bad_study_is_one_line_and_exit_2_before_anything_is_generated(tmp_path, change, message):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(with_changes(**change)))
    done = crossfed("study", tmp_path / "bad.yaml", "--workdir", tmp_path / "work",
                    "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert str(tmp_path / "bad.yaml") in lines[0]
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists(), "nothing may be written"


def test_given_data_too_small_for_the_ladder_fails_before_training(samples, tmp_path):
    """With datasets given, the split is known only once they are read: still before any training or logging."""
    raw = with_changes(experiments={
        name: {"schema": schema, "pretrain": {"files": [str(samples[name]["ttbar"])]},
               "labelled": {"tth": {"files": [str(samples[name]["tth"])]}, "ttbar": {"files": [str(samples[name]["ttbar"])]}}}
        for name, schema in (("cms", "cms_nanoaod"), ("atlas", "atlas_opendata"))},
        scenarios={"symmetric": {"events": 200}}, finetune={"labelled_events": [400]},
        data={"cache_dir": str(tmp_path / "cache"), "test_fraction": 0.0})
    (tmp_path / "given.yaml").write_text(yaml.safe_dump(raw))
    done = crossfed("study", tmp_path / "given.yaml", "--workdir", tmp_path / "work",
                    "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "finetune.labelled_events: 400 labelled events need 200 per class; the training split of " in done.stderr
    assert "'s tth_vs_ttbar events holds" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_study_name_and_unknown_demo_scale():
    with pytest.raises(CrossfedError, match="no such study config file or built-in study.*did you mean 'study'"):
        load_study("studdy")
    done = crossfed("demo", "--scale", "huge", cwd=".")
    assert done.returncode == 2 and "huge" in done.stderr and "default" in done.stderr


@pytest.mark.parametrize("name", ["ci", "demo", "study", "large"])
def test_built_in_studies_are_valid(name):
    assert name in preset_names()
    study = load_study(name)
    assert plan.scenarios(study) and plan.setups(study)


def test_the_study_scale_is_a_study_and_large_is_the_kek_model():
    study = load_study("study")
    assert study.repeats.pretrain_seeds >= 3 and study.repeats.finetune_seeds >= 5
    # >= 10^4 test events per class (the split is random: 2 % margin over the expectation).
    assert study.generation.labelled_events * study.labelled.test_fraction >= 10_000 * 1.02
    assert set(study.tasks) == {"tth_vs_ttbar", "hplus_vs_ttbar"}
    assert {s.kind for s in plan.scenarios(study)} == {"symmetric", "data_poor", "scaling"}
    assert study.scenarios.data_poor.ratio == 10 and min(study.scenarios.scaling.events) == 1000
    large = load_study("large")
    assert large.model.preset == "kishimoto-11m" and large.pool_events() >= 100_000
    assert large.finetune.mode == "lower_lr"


def test_setups_are_shared_between_scenarios_and_budgets_are_equal():
    study = study_from_dict(with_changes(
        scenarios={"symmetric": {"events": 1000}, "data_poor": {"events": 1000, "poor": "atlas", "ratio": 10},
                   "scaling": {"events": [100, 1000], "labelled_events": [100]}},
        repeats={"pretrain_seeds": 3}), "test")
    setups = plan.setups(study)
    keys = [s.key() for s in setups]
    assert len(keys) == len(set(keys))
    # Per seed: symmetric 4 (fed, 2 local, central); data-poor fed + central + local atlas=100; scaling 100:
    # fed + local cms=100 (local atlas=100 is the data-poor one); scaling 1000 is the symmetric scenario.
    assert len([s for s in setups if s.method != "scratch"]) == 3 * (4 + 3 + 2)
    assert len([s for s in setups if s.method == "scratch"]) == 1
    poor, symmetric = (plan.scenarios(study)[i] for i in (1, 0))
    assert plan.setup_for(poor, "local", "cms", 0) == plan.setup_for(symmetric, "local", "cms", 0)
    assert plan.setup_for(poor, "local", "atlas", 0).events == (("atlas", 100),)
    steps = study.steps_per_experiment()
    for setup in setups:
        if setup.method != "scratch":
            assert plan.steps(study, setup) == steps * len(setup.events)  # centralized: the clients' sum
    assert plan.Setup.from_tags(setups[0].tags()) == setups[0]


def test_a_study_is_submitted_as_a_ray_job_after_validation(tmp_path):
    """`crossfed submit --command study` runs `python -m crossfed study`; a bad study config fails before any
    connection."""
    from crossfed.submit import build_entrypoint

    assert build_entrypoint("study", "studies/mine.yaml") == "python -m crossfed study studies/mine.yaml"
    project = tmp_path / "project"
    project.mkdir()
    (project / "bad.yaml").write_text(yaml.safe_dump(with_changes(scenarios={"data_poor": {
        "events": 1000, "poor": "atlas", "ratio": 0}})))
    done = crossfed("submit", "bad.yaml", "--command", "study", "--address", "http://127.0.0.1:9", cwd=project)
    assert done.returncode == 2 and "scenarios.data_poor.ratio: Input should be greater than 0" in done.stderr
