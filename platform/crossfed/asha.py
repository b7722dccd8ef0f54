"""ASHA over federation rounds that keeps its rung scores across an interrupted sweep.

Ray Tune does not checkpoint the scheduler: `Tuner.restore` rebuilds it from the pickle written when the
sweep started, so a resumed sweep's ASHA would have forgotten every score and let poor trials run to
the end. This one writes its rungs to a JSON file after every decision and reads them back when it is
unpickled. It counts federation rounds (the `round` each trial reports), not Tune's
`training_iteration`, which a restored trial starts again from 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler


class RoundASHA(ASHAScheduler):
    def __init__(self, *, rounds: int, grace_period: int, reduction_factor: float, state_file: Path):
        super().__init__(
            time_attr="round",
            # One past the last round: at max_t ASHA stops a trial at once, before its federation has
            # logged its final model.
            max_t=rounds + 1,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
        self.state_file = str(state_file)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        self._save_rungs()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save_rungs()

    def rung_scores(self) -> list[list[dict[str, float]]]:
        """Per bracket, per rung (highest milestone first): trial id -> its signed score at that rung."""
        return [[dict(recorded) for _, recorded in bracket._rungs] for bracket in self._brackets]

    def _save_rungs(self) -> None:
        path = Path(self.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rung_scores()))
        tmp.replace(path)  # atomic: an interruption never leaves half a file

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        path = Path(self.state_file)
        if path.is_file():
            for bracket, rungs in zip(self._brackets, json.loads(path.read_text())):
                for (_, recorded), saved in zip(bracket._rungs, rungs):
                    recorded.clear()
                    recorded.update(saved)
