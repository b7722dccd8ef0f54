"""`connect_ray`: how every crossfed command finds its Ray.

One rule for all of them (pretrain, sweep, demo, the federation engine itself):
1. a Ray already initialised in this process is used as it is (a test's cluster, an outer command's);
2. else the given address (`--address`), else RAY_ADDRESS: join that cluster;
3. else a new embedded Ray that lives as long as the command. Started with address "local", because a
   bare `ray.init()` would join whatever Ray happens to run on the machine (another user's, a test's).
Whatever this call connected to or started, it disconnects from or shuts down on exit. An address that is
malformed or does not answer is a one-line error at once (ray.init itself would retry for a minute).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

from crossfed.errors import CrossfedError

REACH_TIMEOUT_S = 5.0

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
        _check_reachable(address)
        try:
            ray.init(address=address, **{k: v for k, v in options.items() if k in CONNECTION_OPTIONS})
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise CrossfedError(f"cannot connect to the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
    else:
        ray.init(address="local", **options)
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """HOST:PORT or ray://HOST:PORT must accept a TCP connection ("auto" and "local" are Ray's own words)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise CrossfedError(f"Ray address {address!r}: expected HOST:PORT (the head's GCS, e.g. 10.0.0.1:6379), "
                            "ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        raise CrossfedError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None
