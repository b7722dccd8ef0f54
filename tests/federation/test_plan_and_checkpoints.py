"""The engine's plain parts: how each mode is planned, and the atomic round checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from crossfed.config import config_from_dict
from crossfed.errors import CrossfedError
from crossfed.federation.result import load_state, read_latest_checkpoint, write_round_checkpoint
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


def test_round_checkpoint_is_committed_whole_and_only_the_last_round_is_kept(tmp_path):
    with pytest.raises(CrossfedError, match="no completed round to resume from"):
        read_latest_checkpoint(tmp_path)
    for round_number in (1, 2):
        state = {"backbone.w": np.full((2, 3), round_number, np.float32)}
        write_round_checkpoint(tmp_path, round_number, state, {"round": round_number, "history": [round_number]})
    number, state, driver_state = read_latest_checkpoint(tmp_path)
    assert number == 2 and driver_state == {"round": 2, "history": [2]}
    np.testing.assert_array_equal(state["backbone.w"], np.full((2, 3), 2, np.float32))
    assert sorted(p.name for p in (tmp_path / "rounds").iterdir()) == ["round_00002"]
    # a crash while writing round 3 leaves its temporary folder; round 2 stays the one to resume from
    (tmp_path / "rounds" / ".round_00003.tmp").mkdir()
    assert read_latest_checkpoint(tmp_path)[0] == 2
    np.testing.assert_array_equal(load_state(tmp_path / "rounds" / "round_00002" / "global.npz")["backbone.w"],
                                  state["backbone.w"])
