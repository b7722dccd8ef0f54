"""Pre-training throughput: forward + backward + SGD steps of the replaced-object task.

For each preset: events/s and model FLOPs utilisation (MFU = achieved model FLOPs/s ÷ peak). Model
FLOPs per step = 3 × forward FLOPs per event (crossfed.model.forward_flops_per_event) × batch size.
CPU runs fp32; CUDA runs bf16 autocast. The timed loop has no host syncs: metrics stay on the device.

    python benchmarks/train_throughput.py --preset tiny --steps 5
    python benchmarks/train_throughput.py --preset kishimoto-11m --device cuda --compile

Goal on one H100 for kishimoto-11m: >= 2e5 events/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from crossfed.config import ModelConfig
from crossfed.model import PRESETS, build_model, count_parameters, forward_flops_per_event
from crossfed.tasks import build_tasks, pretraining_loss

PEAK_TFLOPS = {"H100": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def synthetic_events(batch: int, objects: int, device: torch.device, generator: torch.Generator):
    """Random but physically shaped events, between 4 and `objects` real objects each, built on `device`."""
    def uniform(*shape):
        return torch.rand(shape, generator=generator, device=device)

    pt = 20 + 200 * uniform(batch, objects)
    eta = 5 * uniform(batch, objects) - 2.5
    phi = (2 * uniform(batch, objects) - 1) * torch.pi
    charge = (3 * uniform(batch, objects)).floor() - 1
    features = torch.stack([pt, eta, phi, pt * torch.cosh(eta), charge, uniform(batch, objects)], -1)
    types = (7 * uniform(batch, objects)).long().to(torch.int8)
    n_real = 4 + ((objects - 3) * uniform(batch)).long()
    mask = torch.arange(objects, device=device)[None] < n_real[:, None]
    return features, types, mask


def measure_cpu_peak_tflops(size: int = 1024, repeats: int = 10) -> float:
    """fp32 matmul rate on this CPU (best of `repeats`, with the benchmark's thread count), the practical
    peak for CPU MFU; the best single run keeps a busy shared machine from understating it."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def default_peak_tflops(device: torch.device) -> float | None:
    if device.type == "cpu":
        return measure_cpu_peak_tflops()
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def benchmark(preset: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset=preset), ["bench"], ["replaced_object"]).to(device).train()
    if args.compile:
        model.adapters.compile()
        model.backbone.compile()
    tasks = build_tasks({"replaced_object": 1.0})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    generator = torch.Generator(device=device).manual_seed(0)
    events = synthetic_events(args.batch_size, args.objects, device, generator)
    bf16 = device.type == "cuda" and not args.fp32

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = pretraining_loss(model, tasks, *events, "bench", generator, sync=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        loss = step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    events_per_s = args.batch_size * args.steps / elapsed
    flops_per_event = 3 * forward_flops_per_event(model, args.objects)
    return dict(preset=preset, params=count_parameters(model), events_per_s=events_per_s,
                tflops=events_per_s * flops_per_event / 1e12, step_ms=1e3 * elapsed / args.steps,
                loss=float(loss.detach()))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), action="append", help="repeatable; default: all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--objects", type=int, default=16, help="max objects per event")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the adapters and the backbone")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak for MFU; default: H100 bf16 989, A100 312, CPU: measured fp32 matmul")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = args.peak_tflops or default_peak_tflops(device)
    precision = "fp32" if device.type == "cpu" or args.fp32 else "bf16 autocast"
    peak_text = f"peak {peak:.3g} TFLOP/s" if peak else "peak unknown (give --peak-tflops)"
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"{precision}, batch {args.batch_size}, {args.objects} objects, {args.steps} timed steps, "
          f"{torch.get_num_threads()} CPU threads, {peak_text}")
    print(f"{'preset':<15}{'params':>13}{'step ms':>10}{'events/s':>12}{'TFLOP/s':>10}{'MFU':>8}{'loss':>8}")
    for preset in args.preset or list(PRESETS):
        r = benchmark(preset, args, device)
        mfu = f"{100 * r['tflops'] / peak:.1f}%" if peak else "n/a"
        print(f"{preset:<15}{r['params']:>13,}{r['step_ms']:>10.1f}{r['events_per_s']:>12,.0f}"
              f"{r['tflops']:>10.3g}{mfu:>8}{r['loss']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
