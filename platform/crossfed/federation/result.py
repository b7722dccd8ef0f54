"""What a federation run leaves behind: its result, and atomic round checkpoints under `<output_dir>/<run_id>/`.

Layout of a run folder:
  rounds/round_<k>/global.npz   the global shared state after round k
  rounds/round_<k>/driver.pkl   round number, strategy state, privacy accountant, driver RNG, history
  latest                        the number of the last completed round (replaced atomically)
  clients/<name>/round_<k>/     each client's full state (its own folder; written before `latest` moves)
  global_final.npz              the final global shared state
"""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossfed.errors import CrossfedError


@dataclass
class FederationResult:
    run_id: str
    run_dir: str
    global_state_path: str
    history: list[dict] = field(default_factory=list)  # one record of scalar metrics per completed round
    # client name -> its full final model (.npz: shared + private parameters + buffers), at the client's site
    client_models: dict[str, str] = field(default_factory=dict)


def save_state(path: Path, state: dict[str, np.ndarray]) -> None:
    """Write a state dict as .npz atomically (tmp file + rename)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **state)
    os.replace(tmp, path)


def load_state(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def write_round_checkpoint(run_dir: Path, round_number: int, global_state: dict, driver_state: dict) -> Path:
    """Commit round k: build the folder under a temporary name, rename it, then move `latest`."""
    rounds = run_dir / "rounds"
    rounds.mkdir(parents=True, exist_ok=True)
    final = rounds / f"round_{round_number:05d}"
    tmp = rounds / f".round_{round_number:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.savez(tmp / "global.npz", **global_state)
    (tmp / "driver.pkl").write_bytes(pickle.dumps(driver_state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = run_dir / ".latest.tmp"
    latest_tmp.write_text(str(round_number))
    os.replace(latest_tmp, run_dir / "latest")
    for older in rounds.glob("round_*"):  # only the last completed round is needed to resume
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def read_latest_checkpoint(run_dir: Path) -> tuple[int, dict, dict]:
    """(round number, global state, driver state) of the last completed round of a run."""
    latest = run_dir / "latest"
    if not latest.is_file():
        raise CrossfedError(f"{run_dir}: no completed round to resume from (no 'latest' file)")
    round_number = int(latest.read_text().strip())
    folder = run_dir / "rounds" / f"round_{round_number:05d}"
    if not (folder / "global.npz").is_file():
        raise CrossfedError(f"{folder}: checkpoint of round {round_number} is missing global.npz")
    driver_state = pickle.loads((folder / "driver.pkl").read_bytes())
    return round_number, load_state(folder / "global.npz"), driver_state
