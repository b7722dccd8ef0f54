"""Read and write full float32 parameters of a DeepSpeed engine, identically at ZeRO stage 0, 1, 2 and 3.

A DeepSpeed engine can hold a parameter in two places: the *working* copy the forward pass uses (fp32, fp16
or bf16; at ZeRO-3 partitioned across ranks) and the optimizer's fp32 *master* copy (ZeRO 1-3, fp16, bf16;
partitioned at ZeRO 1-3). The optimizer step writes the master copy and then copies it into the working
copy, so a load that only writes one of them is undone or ignored:

- writing only the master copy (`safe_set_full_fp32_param`): forward keeps the old weights until the
  next optimizer step;
- writing only the working copy: the next optimizer step overwrites it from the stale master copy.

So loading writes both, and touches nothing else (optimizer moments, scheduler, step count stay).
Reading prefers the master copy (exact fp32 even when training in fp16/bf16) and gathers at ZeRO-3.
All functions here are collective: every rank of the group calls them with the same names, in order.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def _master_copies(optimizer) -> dict[int, torch.Tensor]:
    """fp32 master tensors of the fp16 optimizer used at ZeRO-0 (other setups expose `_hp_mapping`)."""
    fp16_groups = getattr(optimizer, "fp16_groups", None)
    fp32_groups = getattr(optimizer, "fp32_groups", None)
    if fp16_groups is None or fp32_groups is None:
        return {}
    return {id(p16): p32 for g16, g32 in zip(fp16_groups, fp32_groups) for p16, p32 in zip(g16, g32)}


def _gathered(param: torch.nn.Parameter, modifier_rank: int | None = None):
    if hasattr(param, "ds_id"):  # partitioned by ZeRO-3
        import deepspeed

        return deepspeed.zero.GatheredParameters([param], modifier_rank=modifier_rank)
    return contextlib.nullcontext()


def read_parameters(engine, named_parameters: list[tuple[str, torch.nn.Parameter]]) -> dict[str, np.ndarray]:
    """Full float32 copies of the given parameters (the optimizer's master copy where one exists)."""
    from deepspeed.utils import safe_get_full_fp32_param

    fp16_masters = _master_copies(engine.optimizer)
    state = {}
    for name, param in named_parameters:
        full = safe_get_full_fp32_param(param)  # ZeRO 1-3 and bf16 master copies; collective
        if full is None and id(param) in fp16_masters:
            full = fp16_masters[id(param)]
        if full is None:  # plain fp32 at ZeRO-0, or a frozen parameter (no master copy)
            with _gathered(param):
                full = param.detach()
                state[name] = full.float().cpu().numpy().copy()
            continue
        state[name] = full.detach().float().cpu().numpy().reshape(tuple(_full_shape(param))).copy()
    return state


def write_parameters(engine, named_parameters: list[tuple[str, torch.nn.Parameter]], state: dict[str, np.ndarray]):
    """Write full float32 values into both the working parameters and the optimizer's master copy."""
    from deepspeed.utils import safe_set_full_fp32_param

    fp16_masters = _master_copies(engine.optimizer)
    for name, param in named_parameters:
        value = torch.as_tensor(np.asarray(state[name], dtype=np.float32))
        shape = tuple(_full_shape(param))
        if tuple(value.shape) != shape:
            raise ValueError(f"parameter {name}: state has shape {tuple(value.shape)}, the model {shape}")
        # Working copy. At ZeRO-3 rank 0 writes the gathered tensor and the context re-partitions it on exit
        # (every rank holds the same value, so which rank modifies does not matter).
        with _gathered(param, modifier_rank=0):
            if not hasattr(param, "ds_id") or torch.distributed.get_rank() == 0:
                with torch.no_grad():
                    param.data.copy_(value.to(device=param.device, dtype=param.dtype))
        # Master copy (this rank's partition of it).
        with torch.no_grad():
            value_on_device = value.to(param.device)
            if id(param) in fp16_masters:
                fp16_masters[id(param)].data.copy_(value_on_device)
            elif hasattr(param, "ds_id"):
                if param.requires_grad:  # frozen parameters have no master copy
                    _write_zero3_master(param, value_on_device)
            else:
                safe_set_full_fp32_param(param, value_on_device)


def _write_zero3_master(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """This rank's slice of the fp32 master copy at ZeRO-3.

    DeepSpeed's own `safe_set_full_fp32_param` fails here when the parameter does not split evenly: the
    last partition is padded and it slices the value past its end. Partitions are ds_tensor.ds_numel long.
    """
    optimizer = param._z3_optimizer
    partition, _ = optimizer._get_fp32_opt_state_partition(param, release_swap_buffers=False)
    start = optimizer._get_param_partition_rank(param) * param.ds_tensor.ds_numel
    piece = value.flatten()[start:start + partition.numel()]
    partition.data[:piece.numel()].copy_(piece)


def _full_shape(param: torch.nn.Parameter) -> torch.Size:
    return param.ds_shape if hasattr(param, "ds_shape") else param.shape
