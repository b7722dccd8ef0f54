"""Optional dependencies, each imported here and nowhere else (the way uproot's `extras.py` does it).

`pip install crossfed` is enough to validate, inspect, train, federate and report. Some parts need more:

    generate  pythia8mc, fastjet    event generation (`crossfed generate`)
    s3        s3fs                  s3:// paths for data, generated files and run storage
    energy    codecarbon            energy from hardware counters (NVML, RAPL) in the resource footprint
    gpu       nvidia-ml-py          GPU utilisation, memory and power in each client's system metrics
    optuna    optuna                sweeps with `algorithm: optuna`

Each function returns the module or raises a `CrossfedError` (one line, exit 2) naming the extra to install.
"""

from __future__ import annotations

from types import ModuleType

from crossfed.errors import CrossfedError

def _missing(module: str, extra: str, purpose: str, err: ImportError) -> CrossfedError:
    return CrossfedError(
        f"{purpose} needs the '{module}' package, which is not installed ({err}): pip install 'crossfed[{extra}]'")


# Plain import statements (not importlib), so that deptry sees which package each extra is for.
def pythia8mc() -> ModuleType:
    try:
        import pythia8mc
    except ImportError as err:
        raise _missing("pythia8mc", "generate", "event generation (Pythia 8)", err) from None
    return pythia8mc


def fastjet() -> ModuleType:
    try:
        import fastjet
    except ImportError as err:
        raise _missing("fastjet", "generate", "event generation (jet clustering)", err) from None
    return fastjet


def optuna() -> ModuleType:
    try:
        import optuna
    except ImportError as err:
        raise _missing("optuna", "optuna", "a sweep with algorithm 'optuna'", err) from None
    return optuna


def codecarbon() -> ModuleType:
    """CodeCarbon, the energy meter; callers that only meter treat the error as 'energy not measured'."""
    try:
        import codecarbon
    except ImportError as err:
        raise _missing("codecarbon", "energy", "measuring energy", err) from None
    return codecarbon


def pynvml() -> ModuleType:
    """NVIDIA's NVML bindings; the system metrics treat the error as 'no GPU metrics on this node'."""
    try:
        import pynvml
    except ImportError as err:
        raise _missing("nvidia-ml-py", "gpu", "GPU system metrics", err) from None
    return pynvml


def url_driver(url: str) -> None:
    """Check that the fsspec driver of `url`'s protocol is installed (s3fs for s3://), before fsspec fails."""
    protocol = url.split("://", 1)[0].lower() if "://" in url else ""
    if protocol in ("s3", "s3a"):
        try:
            import s3fs  # noqa: F401 - fsspec loads it by protocol name
        except ImportError as err:
            raise _missing("s3fs", "s3", f"{url}: an {protocol}:// path", err) from None
