"""ASHA over federation rounds that keeps its rung scores across an interrupted sweep.

Ray Tune does not checkpoint the scheduler: `Tuner.restore` rebuilds it from the pickle written when the
sweep started, so a resumed sweep's ASHA would have forgotten every score and let poor trials run to
the end. This one writes its rungs, and the trials it stopped, to a JSON file after every decision and
reads them back when it is unpickled: a trial stopped just as the sweep was interrupted (Tune restores it
as unfinished) is stopped again at its first report. It counts federation rounds (the `round` each trial
reports), not Tune's `training_iteration`, which a restored trial starts again from 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler

from crossfed.atomic import write_text_atomically


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
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self.stopped:
            return self.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP:
            self.stopped.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def rung_scores(self) -> list[list[dict[str, float]]]:
        """Per bracket, per rung (highest milestone first): trial id -> its signed score at that rung."""
        return [[dict(recorded) for _, recorded in bracket._rungs] for bracket in self._brackets]

    def _save(self) -> None:
        # atomic: an interruption never leaves half a file
        write_text_atomically(self.state_file, json.dumps({"rungs": self.rung_scores(), "stopped": sorted(self.stopped)}))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        path = Path(self.state_file)
        if path.is_file():
            saved = json.loads(path.read_text())
            self.stopped = set(saved["stopped"])
            for bracket, rungs in zip(self._brackets, saved["rungs"]):
                for (_, recorded), scores in zip(bracket._rungs, rungs):
                    recorded.clear()
                    recorded.update(scores)
