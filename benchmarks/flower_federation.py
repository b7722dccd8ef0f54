"""The federation of benchmarks/federation_overhead.py under Flower's simulation engine, for comparison.

    <bench-venv>/bin/python benchmarks/flower_federation.py work.json result.json

Runs in the benchmark's own virtual environment (flwr[simulation] pins its own Ray), with crossfed's
model code on PYTHONPATH. Two ClientApps on two supernodes of one CPU each train the same model as the
crossfed clients (crossfed.model, the pre-training tasks, SGD with momentum and gradient clipping as
crossfed's defaults) for the same local steps and batch, on synthetic events of the same shape, and
exchange the same parameter groups (federation.shared's default: backbone and heads); FedAvg (Message
API) aggregates and every client evaluates the global model each round on the same number of batches.
Each node keeps its model and optimizer between rounds, as a crossfed client does. Flower writes no
checkpoint. The strategy stamps when each round starts, when its updates are in, when they are
aggregated and when the evaluation ends; each client reports its compute time (receive weights ->
train -> send weights), all written to result.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network here

import torch  # noqa: E402
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from crossfed.config import ModelConfig  # noqa: E402
from crossfed.model import build_model, parameter_group  # noqa: E402
from crossfed.tasks import build_tasks, pretraining_loss  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import synthetic_events  # noqa: E402

WORK = json.loads(Path(sys.argv[1]).read_text())
SHARED = ("backbone", "heads")  # crossfed's default federation.shared
GRAD_CLIP = 1.0  # crossfed's default training.grad_clip


def shared_state(model) -> dict[str, torch.Tensor]:
    return {name: value for name, value in model.state_dict().items() if parameter_group(name) in SHARED}


class Node:
    """One client's model, optimizer and events, kept for the whole run (like a crossfed client's workers)."""

    def __init__(self, seed: int):
        torch.set_num_threads(1)  # one CPU per client, as crossfed's workers
        torch.manual_seed(WORK["seed"])
        self.model = build_model(ModelConfig(preset=WORK["preset"]), ["bench"], ["replaced_object"]).train()
        self.tasks = build_tasks({"replaced_object": 1.0})
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=WORK["lr"], momentum=0.9)
        self.generator = torch.Generator().manual_seed(seed)
        batch, objects = WORK["batch_size"], WORK["max_objects"]
        self.train_batches = [synthetic_events(batch, objects, torch.device("cpu"), self.generator) for _ in range(4)]
        self.eval_batches = [synthetic_events(batch, objects, torch.device("cpu"), self.generator)
                             for _ in range(WORK["eval_batches"])]

    def load(self, msg: Message) -> None:
        self.model.load_state_dict(msg.content["arrays"].to_torch_state_dict(), strict=False)

    def train(self) -> float:
        total = 0.0
        for step in range(WORK["local_steps"]):
            loss, _ = pretraining_loss(self.model, self.tasks, *self.train_batches[step % 4], "bench", self.generator,
                                       sync=False)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            total += float(loss)
        return total / WORK["local_steps"]

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        losses = [float(pretraining_loss(self.model, self.tasks, *events, "bench", torch.Generator().manual_seed(1))[0])
                  for events in self.eval_batches]
        self.model.train()
        return sum(losses) / len(losses)


NODES: dict[int, Node] = {}  # per simulation actor process: the nodes it has served
client = ClientApp()


def node_of(context: Context) -> Node:
    if context.node_id not in NODES:
        NODES[context.node_id] = Node(seed=context.node_id % 2**31)
    return NODES[context.node_id]


@client.train()
def train(msg: Message, context: Context) -> Message:
    node = node_of(context)
    started = time.perf_counter()
    node.load(msg)
    loss = node.train()
    arrays = ArrayRecord(shared_state(node.model))
    metrics = MetricRecord({"loss": loss, "num-examples": WORK["events"], "compute-s": time.perf_counter() - started})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    node = node_of(context)
    node.load(msg)
    started = time.perf_counter()
    loss = node.evaluate()
    metrics = MetricRecord({"loss": loss, "num-examples": WORK["events"] // 10,
                            "compute-s": time.perf_counter() - started})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


class TimedFedAvg(FedAvg):
    """FedAvg that stamps the phases of each round (wall clock) and keeps the clients' compute times."""

    def __init__(self):
        super().__init__(min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=2)
        self.rounds: list[dict] = []

    def configure_train(self, server_round, arrays, config, grid):
        self.rounds.append({"started": time.time()})
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        timing = self.rounds[-1]
        timing["fit_done"] = time.time()
        timing["compute_s"] = [float(r.content["metrics"]["compute-s"]) for r in replies if not r.has_error()]
        aggregated = super().aggregate_train(server_round, replies)
        timing["aggregated"] = time.time()
        return aggregated

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        self.rounds[-1]["evaluation_compute_s"] = [float(r.content["metrics"]["compute-s"]) for r in replies
                                                   if not r.has_error()]
        metrics = super().aggregate_evaluate(server_round, replies)
        self.rounds[-1]["ended"] = time.time()
        return metrics


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    torch.manual_seed(WORK["seed"])
    model = build_model(ModelConfig(preset=WORK["preset"]), ["bench"], ["replaced_object"])
    strategy = TimedFedAvg()
    strategy.start(grid=grid, initial_arrays=ArrayRecord(shared_state(model)), num_rounds=WORK["rounds"])
    Path(sys.argv[2]).write_text(json.dumps({"rounds": strategy.rounds}))


if __name__ == "__main__":
    run_simulation(server_app=server, client_app=client, num_supernodes=len(WORK["clients"]),
                   # a Ray of its own ("local"), never one that is already running on the machine
                   backend_config={"init_args": {"address": "local"}, "client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
