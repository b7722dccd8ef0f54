"""Helpers for the trainer tests: a run config on the generated samples, and one local Ray per module."""

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402

from crossfed.config import config_from_dict  # noqa: E402


def _make_config(samples, cache_dir, experiments=("cms",), training=None, finetune=None, data=None, federation=None):
    """A tiny-model run config whose experiments pre-train on generated tt̄ + tt̄H events."""
    schemas = {"cms": "cms_nanoaod", "atlas": "atlas_opendata"}
    raw = {
        "seed": 3,
        "experiments": {
            name: {
                "schema": schemas[name],
                "pretrain": {"files": [str(samples[name]["ttbar"]), str(samples[name]["tth"])]},
                "finetune": {"signal": {"files": [str(samples[name]["tth"])]},
                             "background": {"files": [str(samples[name]["ttbar"])]}},
            }
            for name in experiments
        },
        "data": {"max_objects": 12, "cache_dir": str(cache_dir), **(data or {})},
        "model": {"preset": "tiny"},
        "training": {"batch_size": 32, "lr": 0.05, "schedule": "constant", **(training or {})},
        "finetune": finetune or {},
        "federation": federation or {},
    }
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def local_ray():
    """One in-process Ray per test module (it dies with the process; we shut it down ourselves)."""
    import ray

    # address="local": always a fresh cluster, never another engineer's running one.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def make_config(samples, tmp_path):
    """make_config(experiments=("cms",), training={...}, ...) -> RunConfig on the generated samples."""
    return lambda **sections: _make_config(samples, tmp_path / "cache", **sections)
