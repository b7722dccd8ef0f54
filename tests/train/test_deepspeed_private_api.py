"""The private DeepSpeed calls train/shared_state.py still needs, exercised on the installed version.

pyproject.toml bounds deepspeed at the newest version this passes on. ZeRO-3 has no public way to write
the optimizer's fp32 master partition of an unevenly split parameter (`safe_set_full_fp32_param` slices past
the padded last partition), so shared_state.py uses `param._z3_optimizer`,
`_get_fp32_opt_state_partition` and `_get_param_partition_rank`. Two real gloo ranks, in subprocesses
(torch.distributed state must not leak into the test process), joined as crossfed's workers join
(`trainer.init_distributed`, which keeps DeepSpeed's CPU backend from compiling an op training never uses).
"""

import inspect
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RANK_SCRIPT = r'''
import os, sys
os.environ.update(DS_ACCELERATOR="cpu", RANK=sys.argv[1], LOCAL_RANK=sys.argv[1], WORLD_SIZE="2",
                  MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
import numpy as np, torch, deepspeed
from crossfed.train.shared_state import read_parameters, write_parameters
from crossfed.train.trainer import init_distributed

init_distributed(int(sys.argv[1]), 2, "cpu")
# crossfed's ranks skip DeepSpeed's shared-memory all-reduce op (a minute's JIT compile on a fresh node,
# used only by inference_all_reduce): the backend came up without it, and training below still works.
assert deepspeed.comm.comm.cdb.shm_comm_op is None, "shm op built"
torch.manual_seed(0)
model = torch.nn.Linear(3, 5)  # 15 weights, 5 biases: partitions of 8 and 3 over 2 ranks, padded
config = {"train_micro_batch_size_per_gpu": 2, "zero_allow_untested_optimizer": True,
          "zero_optimization": {"stage": 3}}
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                  optimizer=torch.optim.SGD(model.parameters(), lr=0.0), config=config)
named = list(engine.module.named_parameters())
assert all(hasattr(p, "_z3_optimizer") and hasattr(p, "ds_tensor") for _, p in named), "ZeRO-3 attributes"
new = {name: np.arange(np.prod(p.ds_shape), dtype=np.float32).reshape(tuple(p.ds_shape)) / 7
       for name, p in named}
write_parameters(engine, named, new)
# The master partition (private calls) holds this rank's slice of the new values ...
for name, p in named:
    optimizer = p._z3_optimizer
    partition, _ = optimizer._get_fp32_opt_state_partition(p, release_swap_buffers=False)
    start = optimizer._get_param_partition_rank(p) * p.ds_tensor.ds_numel
    piece = new[name].flatten()[start:start + partition.numel()]
    assert np.array_equal(partition.detach().numpy()[:piece.size], piece), name
# ... so a step (lr 0) copies the loaded values, not stale ones, into the working parameters.
x = torch.ones(2, 3)
engine.backward(engine(x).sum())
engine.step()
state = read_parameters(engine, named)
assert all(np.array_equal(state[name], new[name]) for name in new), "master copy not written"
expected = torch.ones(2, 3) @ torch.as_tensor(new["weight"]).T + torch.as_tensor(new["bias"])
assert torch.allclose(engine(x), expected), "forward does not see the loaded weights"
# An orderly teardown: left to the interpreter's exit, gloo's threads were once destroyed while joinable
# ("terminate called without an active exception", SIGABRT after "ok").
torch.distributed.barrier()
torch.distributed.destroy_process_group()
print("ok")
'''


def test_installed_deepspeed_is_within_the_tested_bound():
    import tomllib

    spec = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                if d.startswith("deepspeed"))
    bound = spec.split("<=")[1]
    installed = tuple(int(x) for x in version("deepspeed").split(".")[:3])
    assert installed <= tuple(int(x) for x in bound.split(".")), f"deepspeed {version('deepspeed')} > {bound}"


def test_zero3_private_calls_still_write_the_master_copy():
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    assert "release_swap_buffers" in inspect.signature(DeepSpeedZeroOptimizer_Stage3._get_fp32_opt_state_partition).parameters
    assert callable(DeepSpeedZeroOptimizer_Stage3._get_param_partition_rank)

    from crossfed.train.workers import free_port

    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=300)[0] for rank in ranks]
    for rank, output in zip(ranks, outputs):
        assert rank.returncode == 0 and output.rstrip().endswith("ok"), output[-3000:]


def test_deepspeed_is_imported_without_mlflow_which_then_still_imports():
    """`trainer.import_deepspeed` keeps DeepSpeed's autotuner from importing MLflow (a second of every
    rank's start-up), and leaves MLflow importable."""
    script = ("import os, sys; os.environ['DS_ACCELERATOR'] = 'cpu'\n"
              "from crossfed.train.trainer import import_deepspeed\n"
              "deepspeed = import_deepspeed()\n"
              "assert 'mlflow' not in sys.modules and deepspeed.init_distributed\n"
              "import mlflow\n"
              "print(mlflow.__version__)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "platform")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == version("mlflow")
