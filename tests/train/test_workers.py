"""Two CPU ranks per WorkerGroup on a local Ray: shared-state round trips at every ZeRO stage, forward after
loading, checkpoint restore, and pre-training on generated events."""

import numpy as np
import pytest
import torch

from crossfed.errors import CrossfedError
from crossfed.train.workers import WorkerGroup

SHARED = ["backbone", "heads"]


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _perturbed(state: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in state.items()}


def _plain_model(config, state):
    """A plain torch model (no DeepSpeed) holding the given full state."""
    from crossfed.model import build_model

    model = build_model(config.model, ["cms"], list(config.training.tasks))
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    return model.eval()


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_shared_state_load_forward_checkpoint_at_zero_stage(stage, make_config, local_ray, tmp_path):
    # Linear schedule over 4 steps: lr > 0 for steps 0-3, exactly 0 from step 4 on.
    config = make_config(
        training={"zero_stage": stage, "schedule": "linear", "steps": 4})
    group = WorkerGroup(config, ["cms"], num_workers=2)
    try:
        # 1. Reading then writing round-trips exactly, on every rank.
        initial = group.call("shared_state", SHARED)
        _assert_same(initial[0], initial[1])
        new = _perturbed(initial[0], seed=stage)
        group.call("load_shared_state", new)
        for state in group.call("shared_state", SHARED):
            _assert_same(state, new)

        # 2. Forward sees the new weights: same tokens as a plain torch model loaded with them.
        rng = np.random.default_rng(0)
        features = rng.normal(size=(6, 12, 6)).astype(np.float32)
        features[..., 0] = np.abs(features[..., 0]) * 40 + 20
        features[..., 3] = features[..., 0] * 1.5
        types = rng.choice([0, 1, 4, 5], size=(6, 12)).astype(np.int8)
        mask = np.ones((6, 12), bool)
        mask[:, 9:] = False
        full_state = group.call("model_state")[0]
        _assert_same({k: full_state[k] for k in new}, new)
        expected = _plain_model(config, full_state).encode(
            torch.as_tensor(features), torch.as_tensor(types.astype(np.int64)), torch.as_tensor(mask), "cms")
        for tokens in group.call("encode", features, types, mask, "cms"):
            np.testing.assert_allclose(tokens, expected.detach().numpy(), rtol=1e-5, atol=1e-5)
        stale = _plain_model(config, {**full_state, **initial[0]}).encode(
            torch.as_tensor(features), torch.as_tensor(types.astype(np.int64)), torch.as_tensor(mask), "cms")
        assert not np.allclose(stale.detach().numpy(), expected.detach().numpy(), atol=1e-3)

        # 3. Checkpoint -> 2 steps; restore -> the same 2 steps give identical losses and weights.
        group.call("save_checkpoint", str(tmp_path / "ckpt"))
        first = group.call("train", 2)
        after_first = group.call("shared_state", SHARED)[0]
        group.call("load_checkpoint", str(tmp_path / "ckpt"))
        second = group.call("train", 2)
        after_second = group.call("shared_state", SHARED)[0]
        assert first[0]["loss"] == second[0]["loss"]
        _assert_same(after_first, after_second)
        # The adapters' running statistics come from both ranks' batches: the same on every rank, so the
        # one copy a checkpoint keeps restores both exactly.
        buffers = [{k: v for k, v in state.items() if ".normaliser." in k} for state in group.call("model_state")]
        assert buffers[0] and int(buffers[0]["adapters.cms.normaliser.updates"]) == 2
        _assert_same(buffers[0], buffers[1])
        assert not np.array_equal(after_first["backbone.norm.weight"], new["backbone.norm.weight"])

        # 4. Past the schedule's end the lr is 0: a step after loading keeps the loaded weights exactly.
        group.call("train", 2)
        newer = _perturbed(new, seed=100 + stage)
        group.call("load_shared_state", newer)
        result = group.call("train", 1)
        assert result[0]["lr"] == 0.0
        _assert_same(group.call("shared_state", SHARED)[0], newer)
    finally:
        group.shutdown()


def test_pretraining_loss_falls_centralized_on_generated_events(make_config, local_ray, tmp_path):
    """Centralized mode at ZeRO-3: one group trains on CMS-like and ATLAS-like events through their own adapters;
    FedProx gathers the parameters it needs (registered external parameters)."""
    config = make_config(experiments=("cms", "atlas"),
                         training={"zero_stage": 3, "steps": 100, "lr": 0.1, "schedule": "cosine",
                                   "warmup_steps": 3, "batch_size": 64, "optimizer": "sgd"},
                         federation={"strategy": {"name": "fedprox"}})
    group = WorkerGroup(config, ["cms", "atlas"], num_workers=2)
    try:
        before = group.call("evaluate")
        assert before[0] == before[1] and before[0] == group.call("evaluate")[0]  # deterministic
        metrics = group.call("train", 40)[0]
        after = group.call("evaluate")[0]
        assert metrics["num_examples"] > 0 and after["loss"] < before[0]["loss"] - 0.1, (before, after)
        assert after["replaced_object/accuracy"] > before[0]["replaced_object/accuracy"]

        # FedProx: a strong proximal term keeps the weights near the loaded global state.
        anchor = group.call("shared_state", SHARED)[0]
        group.call("load_shared_state", anchor)
        group.call("train", 3, proximal_mu=0.0)
        free = group.call("shared_state", SHARED)[0]
        group.call("load_shared_state", anchor)
        prox = group.call("train", 3, proximal_mu=50.0)[0]
        held = group.call("shared_state", SHARED)[0]
        assert prox["proximal"] >= 0
        distance = lambda s: sum(float(((s[k] - anchor[k]) ** 2).sum()) for k in anchor)  # noqa: E731
        assert distance(held) < distance(free)
    finally:
        group.shutdown()


def test_bad_experiment_is_a_user_error(make_config):
    from crossfed.train.trainer import LocalTrainer

    with pytest.raises(CrossfedError, match="unknown experiment"):
        LocalTrainer(make_config(), ["lhcb"])  # checked before any process group or engine is built


def test_bf16_trains_and_keeps_an_exact_fp32_shared_state(make_config, local_ray):
    """A bf16 engine (ZeRO-2) trains with finite losses; the shared state it reads and writes is the fp32
    master copy, so a round trip is exact. (fp16 needs a GPU: DeepSpeed's CPU accelerator lacks it.)"""
    config = make_config(training={"precision": "bf16", "zero_stage": 2, "lr": 0.01})
    group = WorkerGroup(config, ["cms"], num_workers=1)
    try:
        metrics = group.call("train", 3)[0]
        assert np.isfinite(metrics["loss"]), metrics
        state = group.call("shared_state", ["backbone", "heads"])[0]
        assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in state.values())
        shifted = {k: v + np.float32(0.125) for k, v in state.items()}
        group.call("load_shared_state", shifted)
        back = group.call("shared_state", ["backbone", "heads"])[0]
        for key in state:
            np.testing.assert_array_equal(back[key], shifted[key], err_msg=key)
    finally:
        group.shutdown()


def test_fp16_on_a_device_without_it_is_a_one_line_user_error(make_config):
    from deepspeed.accelerator import get_accelerator

    from crossfed.train.deepspeed_config import deepspeed_config

    if get_accelerator().is_fp16_supported():
        pytest.skip("this device trains in fp16")
    config = make_config(training={"precision": "fp16"})
    with pytest.raises(CrossfedError, match="training.precision: fp16 is not supported by DeepSpeed on this device"):
        deepspeed_config(config.training, world_size=1)


def test_a_lone_zero0_rank_skips_the_gradient_all_reduce_with_the_same_result(make_config, local_ray):
    """One rank at ZeRO-0 averages with itself: the engine skips the all-reduce (issue 18: ~1 ms a step) and
    the weights after three steps are bit for bit those of a run that does it."""
    def train_lone_rank(config, force_all_reduce: bool):
        """Three steps of a world-size-1 LocalTrainer, as built or with the engine's backward all-reduce
        forced on. -> (all-reduce calls, final weights). Defined here so Ray pickles it by value."""
        from crossfed.train.trainer import LocalTrainer

        trainer = LocalTrainer(config, ["cms"])
        engine, calls = trainer.engine, []
        if force_all_reduce:
            engine.enable_backward_allreduce = True
        original = engine.allreduce_gradients
        engine.allreduce_gradients = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
        trainer.train(3)
        return len(calls), {name: p.detach().clone() for name, p in trainer.model.named_parameters()}

    train = local_ray.remote(max_calls=1)(train_lone_rank)  # max_calls=1: each process group dies with its worker
    config = make_config(training={"zero_stage": 0, "grad_clip": 1.0})
    (skipped_calls, skipped), (reduced_calls, reduced) = local_ray.get([train.remote(config, False),
                                                                        train.remote(config, True)])
    assert skipped_calls == 0 and reduced_calls == 3
    _assert_same(skipped, reduced)


def test_rank_0_gives_its_rendezvous_address_without_importing_torch():
    """Every rank of a group then imports torch at once in `setup`, not after rank 0 has."""
    import subprocess
    import sys

    check = ("import sys; from crossfed.train import workers; "
             "assert 0 < workers.free_port() < 65536; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
