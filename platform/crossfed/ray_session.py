"""`connect_ray`: how every crossfed command finds its Ray.

One rule for all of them (pretrain, sweep, demo, the federation engine itself):
1. a Ray already initialised in this process is used as it is (a test's cluster, an outer command's);
2. else the given address (`--address`), else RAY_ADDRESS: join that cluster;
3. else a new embedded Ray that lives as long as the command. Started with address "local", because a
   bare `ray.init()` would join whatever Ray happens to run on the machine (another user's, a test's).
Whatever this call connected to or started, it disconnects from or shuts down on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

# ray.init options that concern this process's connection, valid whether it joins a cluster or starts
# one; every other option (num_cpus, include_dashboard, ...) shapes a new Ray and is only used for one.
CONNECTION_OPTIONS = {"log_to_driver", "logging_level", "namespace", "runtime_env"}


@contextlib.contextmanager
def connect_ray(address: str | None = None, **options) -> Iterator[None]:
    """Use an initialised Ray, else join `address` or RAY_ADDRESS, else start an embedded local Ray.

    `options` go to `ray.init`; Ray's own log lines are kept to warnings unless `logging_level` says
    otherwise. Options that only a new Ray accepts are dropped when joining a cluster.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    options.setdefault("logging_level", logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **{k: v for k, v in options.items() if k in CONNECTION_OPTIONS})
    else:
        ray.init(address="local", **options)
    try:
        yield
    finally:
        ray.shutdown()
