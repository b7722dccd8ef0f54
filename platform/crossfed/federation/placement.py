"""Pinning a client to its experiment's node group: label selectors and a fail-fast feasibility check.

A placement group that no node can host waits forever in Ray, so before creating one we check the
request against `ray.nodes()` and the resources still free on each node, and raise a `CrossfedError`
naming the group and what it lacks.
"""

from __future__ import annotations

from crossfed.config import ClusterConfig
from crossfed.errors import CrossfedError

EXPERIMENT_LABEL = "crossfed.io/experiment"
READY_TIMEOUT_S = 120.0  # a backstop: the feasibility check should have caught an impossible group


def label_selector(cluster: ClusterConfig) -> dict[str, str] | None:
    """The node-label selector of a client's node group; None (anywhere) when no group is set."""
    return {EXPERIMENT_LABEL: cluster.node_group} if cluster.node_group else None


def client_actor_options(cluster: ClusterConfig, placement_group=None, bundle_index: int = 0) -> dict:
    """Where a client actor runs: on its node group (label selector), or inside a caller's placement group
    (a Tune trial's) in its first worker's bundle, which that group's `bundle_label_selector` pins to the
    node group. Either way on its experiment's nodes, beside its workers and its checkpoints."""
    if placement_group is None:
        return {"label_selector": label_selector(cluster)}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group,
                                                                    placement_group_bundle_index=bundle_index)}


def worker_bundle(cluster: ClusterConfig) -> dict[str, float]:
    bundle = {"CPU": float(cluster.cpus_per_worker)}
    if cluster.gpus_per_worker:
        bundle["GPU"] = float(cluster.gpus_per_worker)
    return bundle


def describe_group(cluster: ClusterConfig) -> str:
    if cluster.node_group:
        return f"node group {cluster.node_group!r} (label {EXPERIMENT_LABEL}={cluster.node_group})"
    return "node group (any node)"


def _free_resources_per_node() -> dict[str, dict[str, float]]:
    """Resources not yet reserved, per node id; falls back to totals if Ray cannot tell."""
    import ray

    try:
        from ray._private.state import available_resources_per_node

        return {node_id: dict(res) for node_id, res in available_resources_per_node().items()}
    except Exception:  # noqa: BLE001 - private API; totals still catch the impossible cases
        return {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n["Alive"]}


def _node_summary(node: dict, free: dict[str, float]) -> str:
    group = node.get("Labels", {}).get(EXPERIMENT_LABEL, "-")
    return (
        f"{node['NodeID'][:8]} (group {group}, CPU {free.get('CPU', 0):g}/{node['Resources'].get('CPU', 0):g} free, "
        f"GPU {free.get('GPU', 0):g}/{node['Resources'].get('GPU', 0):g} free)"
    )


def check_feasible(cluster: ClusterConfig, client: str, free: dict[str, dict[str, float]] | None = None) -> dict:
    """Raise CrossfedError unless the client's node group can host all its workers now.

    `free`: resources per node id still free (default: asked from Ray); the returned map has this
    client's workers taken out, so checking several clients in turn accounts for all of them.
    """
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    free = {k: dict(v) for k, v in (free if free is not None else _free_resources_per_node()).items()}
    selector = label_selector(cluster) or {}
    matching = [n for n in nodes if all(n.get("Labels", {}).get(k) == v for k, v in selector.items())]
    everyone = "; ".join(_node_summary(n, free.get(n["NodeID"], {})) for n in nodes)
    where = f"client {client!r}: {describe_group(cluster)}"
    if not matching:
        raise CrossfedError(f"{where}: no node carries this label; nodes: {everyone}")
    bundle = worker_bundle(cluster)
    # First-fit of the worker bundles into the matching nodes' free resources (bundles may spread).
    remaining = [free.setdefault(n["NodeID"], {}) for n in matching]
    for worker in range(cluster.workers):
        host = next((r for r in remaining if all(r.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())), None)
        if host is None:
            lacking = " and ".join(f"{v:g} {k}" for k, v in bundle.items())
            raise CrossfedError(
                f"{where}: no node has {lacking} free for worker {worker + 1} of {cluster.workers}; nodes: {everyone}"
            )
        for k, v in bundle.items():
            host[k] -= v
    return free


def create_worker_placement_group(cluster: ClusterConfig, client: str):
    """One bundle per worker on the client's node group; PACK keeps a client's ranks close together."""
    from ray.util.placement_group import placement_group, remove_placement_group

    check_feasible(cluster, client)
    selector = label_selector(cluster)
    group = placement_group(
        [worker_bundle(cluster) for _ in range(cluster.workers)],
        strategy="PACK",
        name=f"crossfed-{client}",
        bundle_label_selector=[dict(selector) for _ in range(cluster.workers)] if selector else None,
    )
    import ray

    ready, _ = ray.wait([group.ready()], timeout=READY_TIMEOUT_S)
    if not ready:
        remove_placement_group(group)
        raise CrossfedError(
            f"client {client!r}: {describe_group(cluster)}: could not reserve {cluster.workers} worker(s) "
            f"of {worker_bundle(cluster)} within {READY_TIMEOUT_S:g}s"
        )
    return group


def remove_and_wait(group, timeout_s: float = 60.0) -> None:
    """Remove a placement group (None: nothing to do) and return once Ray has released its resources, so
    that a feasibility check right after sees them free again."""
    if group is None:
        return
    import time

    from ray.util.placement_group import placement_group_table, remove_placement_group

    try:
        remove_placement_group(group)
    except Exception:  # noqa: BLE001 - already removed
        return
    deadline = time.monotonic() + timeout_s
    while placement_group_table(group).get("state") != "REMOVED" and time.monotonic() < deadline:
        time.sleep(0.2)
