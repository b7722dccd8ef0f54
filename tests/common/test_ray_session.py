"""connect_ray: one rule for every command to find its Ray (initialised, address, RAY_ADDRESS, embedded)."""

from __future__ import annotations


def test_embedded_ray_is_started_and_shut_down_and_an_initialised_one_is_left_alone():
    import ray

    from crossfed.ray_session import connect_ray

    assert not ray.is_initialized()
    with connect_ray(num_cpus=3, include_dashboard=False):
        assert ray.cluster_resources()["CPU"] == 3  # a new Ray with this process's options
        with connect_ray(num_cpus=1):  # an inner command uses the Ray it finds, and leaves it running
            assert ray.cluster_resources()["CPU"] == 3
        assert ray.is_initialized()
    assert not ray.is_initialized()


def test_ray_address_joins_that_cluster_without_the_options_only_a_new_ray_takes(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from crossfed.ray_session import connect_ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        with connect_ray(num_cpus=5, include_dashboard=False, log_to_driver=False):
            assert ray.cluster_resources()["CPU"] == 1  # the cluster's, not a new Ray with 5
            assert ray.get_runtime_context().gcs_address == cluster.address
        assert not ray.is_initialized()
        monkeypatch.delenv("RAY_ADDRESS")
        with connect_ray(cluster.address):  # --address does the same
            assert ray.cluster_resources()["CPU"] == 1
        assert not ray.is_initialized()
    finally:
        cluster.shutdown()
