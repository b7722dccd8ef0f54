"""The engine's plain parts: how each mode is planned (round checkpoints: tests/storage/test_run_storage.py)."""

from __future__ import annotations

import pytest

from crossfed.config import config_from_dict
from crossfed.errors import CrossfedError
from crossfed.federation.rounds import plan_rounds


def config(**sections):
    experiments = {
        name: {"schema": "cms_nanoaod", "pretrain": {"files": [f"{name}.root"]},
               "cluster": {"node_group": name, "workers": 2}}
        for name in ("cms", "atlas")
    }
    return config_from_dict({"experiments": experiments, **sections})


def test_federated_plan_has_one_pinned_client_per_experiment_and_shares_the_configured_groups():
    plan = plan_rounds(config(federation={"rounds": 3, "local_steps": 5}), "federated", None)
    assert [(c.name, c.experiments, c.cluster.node_group) for c in plan.clients] == [
        ("cms", ["cms"], "cms"), ("atlas", ["atlas"], "atlas")]
    assert plan.shared == ["backbone", "heads"] and plan.steps_per_round == [5, 5, 5] and plan.federated


def test_baselines_spread_training_steps_over_the_rounds_and_share_everything():
    cfg = config(federation={"rounds": 3}, training={"steps": 10})
    local = plan_rounds(cfg, "local", "atlas")
    assert [(c.name, c.experiments, c.cluster.node_group) for c in local.clients] == [("atlas", ["atlas"], "atlas")]
    assert local.steps_per_round == [4, 3, 3] and not local.federated
    assert local.shared == ["adapter", "backbone", "heads"]
    pooled = plan_rounds(cfg, "centralized", None)
    assert [(c.name, c.experiments, c.cluster.node_group, c.cluster.workers) for c in pooled.clients] == [
        ("centralized", ["cms", "atlas"], None, 2)]
    assert plan_rounds(config(federation={"rounds": 5}, training={"steps": 2}), "local", "cms").steps_per_round == [1, 1]


def test_bad_mode_or_experiment_is_a_user_error():
    with pytest.raises(CrossfedError, match="mode 'swarm'"):
        plan_rounds(config(), "swarm", None)
    with pytest.raises(CrossfedError, match=r"local mode needs --experiment, one of cms, atlas \(got 'lhcb'\)"):
        plan_rounds(config(), "local", "lhcb")
