"""Ray for the generation tasks: the one already initialised, else a cluster's address, else an embedded Ray."""

from __future__ import annotations

import contextlib
import logging
import os
import socket

from crossfed.errors import CrossfedError

REACH_TIMEOUT_S = 5.0


@contextlib.contextmanager
def connect_ray(address: str | None = None, **options):
    """An initialised Ray is used as it is; else `address`, else RAY_ADDRESS; else a new embedded "local"
    Ray started with `options` (e.g. num_cpus) and shut down on exit. An unreachable address is a one-line error.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise CrossfedError(f"cannot connect to the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
    else:
        # "local": a new Ray for this process; a bare ray.init() would join any Ray already running here.
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 **options)
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """host:port or ray://host:port must accept a TCP connection (ray.init would retry for a minute)."""
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
