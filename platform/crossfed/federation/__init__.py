"""Federated learning: aggregation strategies, update validation, privacy, and the Ray driver/client actors.

`run_federation` and `FederationResult` are imported lazily so that `crossfed.federation.strategies`
(pure numpy) does not pull in Ray and MLflow.
"""

__all__ = ["MODES", "FederationResult", "run_federation"]

# What `run_federation` can run: the federation, one experiment alone, or all experiments' events pooled.
MODES = ("federated", "local", "centralized")


def __getattr__(name: str):
    if name == "run_federation":
        from crossfed.federation.rounds import run_federation

        return run_federation
    if name == "FederationResult":
        from crossfed.federation.result import FederationResult

        return FederationResult
    raise AttributeError(f"module 'crossfed.federation' has no attribute {name!r}")
