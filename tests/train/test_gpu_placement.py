"""GPU placement as Ray Train does it: the workers of one node share CUDA_VISIBLE_DEVICES, LOCAL_RANK is the
index of the worker's GPU in it, LOCAL_WORLD_SIZE the node's worker count.

Checked on CPU: a 2-node ray.cluster_utils.Cluster whose nodes declare 2 (fake) GPUs each; Ray assigns GPU
ids to the actors as on a real GPU node, and the ranks (training on CPU, gloo) report the environment they
were set up with.
"""

import pytest

from crossfed.train.workers import WorkerGroup, local_environments


def test_local_environments_share_a_nodes_gpus_and_rank_by_device():
    placements = [("b", ["3"]), ("a", ["1"]), ("b", ["2"]), ("a", ["0"]), ("b", ["10"])]
    env = local_environments(placements)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in env] == ["2,3,10", "0,1", "2,3,10", "0,1", "2,3,10"]
    assert [e["LOCAL_RANK"] for e in env] == ["1", "1", "0", "0", "2"]  # the GPU's index in the visible list
    assert [e["LOCAL_WORLD_SIZE"] for e in env] == ["3", "2", "3", "2", "3"]


def test_local_environments_on_cpu_and_on_shared_gpus():
    cpu = local_environments([("a", []), ("b", []), ("a", [])])
    assert cpu == [{"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"},
                   {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}]
    halves = local_environments([("a", ["0"]), ("a", ["0"])])  # two workers on one GPU (gpus_per_worker 0.5)
    assert [e["LOCAL_RANK"] for e in halves] == ["0", "1"]
    assert {e["CUDA_VISIBLE_DEVICES"] for e in halves} == {"0"}


@pytest.fixture(scope="module")
def gpu_cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=2, num_gpus=2) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    yield [node.node_id for node in nodes]
    ray.shutdown()
    cluster.shutdown()


def test_workers_of_one_node_share_its_gpus_on_a_two_node_cluster(gpu_cluster, make_config):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from crossfed.federation.placement import _free_resources_per_node

    config = make_config(training={"device": "cpu", "zero_stage": 1})
    group_of_bundles = placement_group([{"CPU": 1, "GPU": 1}] * 4, strategy="SPREAD")
    ray.get(group_of_bundles.ready(), timeout=60)
    free = _free_resources_per_node()  # the placement group's GPUs are taken, through Ray's public APIs
    assert [free[node]["GPU"] for node in gpu_cluster] == [0.0, 0.0]
    group = WorkerGroup(config, ["cms"], num_workers=4, cpus_per_worker=1, gpus_per_worker=1,
                        placement_group=group_of_bundles)
    try:
        placements = ray.get([w.placement.remote() for w in group.workers])
        environments = ray.get([w.environment.remote() for w in group.workers])
        assert sorted(node for node, _ in placements) == sorted(gpu_cluster * 2)  # two ranks per node
        for node in gpu_cluster:
            ranks = [r for r, (n, _) in enumerate(placements) if n == node]
            own = [placements[r][1] for r in ranks]
            assert all(len(gpus) == 1 for gpus in own)  # Ray gave each actor one GPU of its own
            visible = {environments[r]["CUDA_VISIBLE_DEVICES"] for r in ranks}
            assert visible == {",".join(sorted(g[0] for g in own))}  # ... and each now sees both
            assert sorted(environments[r]["LOCAL_RANK"] for r in ranks) == ["0", "1"]
            for r in ranks:
                assert environments[r]["LOCAL_WORLD_SIZE"] == "2"
                assert environments[r]["CUDA_VISIBLE_DEVICES"].split(",")[int(environments[r]["LOCAL_RANK"])] \
                    == placements[r][1][0]  # LOCAL_RANK indexes the rank's own GPU
        assert [e["RANK"] for e in environments] == ["0", "1", "2", "3"]
        assert {e["WORLD_SIZE"] for e in environments} == {"4"}
        states = group.call("shared_state", ["backbone"])  # the 4 ranks formed one process group
        assert all(states[0].keys() == s.keys() for s in states)
    finally:
        group.shutdown()
        remove_placement_group(group_of_bundles)
