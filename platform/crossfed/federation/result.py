"""What a federation run leaves behind: its result, and atomic round checkpoints under `<output_dir>/<run_id>/`.

Layout of a run folder:
  rounds/round_<k>/global.npz   the global shared state after round k
  rounds/round_<k>/driver.pkl   round number, strategy state, privacy accountant, driver RNG, history
  latest                        the number of the last completed round (replaced atomically)
  clients/<name>/round_<k>/     each client's full state (its own folder; written before `latest` moves)
  global_final.npz              the final global shared state
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossfed.atomic import discard, write_atomically, write_text_atomically
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
    """Write a state dict as .npz atomically."""
    write_atomically(path, lambda temporary: _savez(temporary, state))


def _savez(path: Path, state: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary's name
        np.savez(f, **state)


def load_state(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def write_round_checkpoint(run_dir: Path, round_number: int, global_state: dict, driver_state: dict) -> Path:
    """Commit round k: write its folder atomically, then move `latest` to it (atomically too)."""
    rounds = run_dir / "rounds"
    final = rounds / f"round_{round_number:05d}"

    def write(folder: Path) -> None:
        folder.mkdir()
        _savez(folder / "global.npz", global_state)
        (folder / "driver.pkl").write_bytes(pickle.dumps(driver_state))

    write_atomically(final, write)
    write_text_atomically(run_dir / "latest", str(round_number))
    for older in rounds.iterdir():  # only the last completed round is needed to resume (and no leftovers)
        if older != final:
            discard(older)
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
