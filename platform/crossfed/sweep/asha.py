"""ASHA over federation rounds that keeps its rung scores across an interrupted sweep.

Ray Tune does not checkpoint the scheduler: `Tuner.restore` rebuilds it from the pickle written when the
sweep started, so a resumed sweep's ASHA would have forgotten every score and let poor trials run to
the end. This one saves itself (the scheduler's public `save`) after every decision, with the trials it
stopped, and restores that file (`restore`) when it is unpickled: a trial stopped just as the sweep was
interrupted (Tune restores it as unfinished) is stopped again at its first report. It counts federation
rounds (the `round` each trial reports), not Tune's `training_iteration`, which a restored trial starts
again from 1.
"""

from __future__ import annotations

import os
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler


class RoundASHA(ASHAScheduler):
    def __init__(self, *, rounds: int, grace_period: int, reduction_factor: float, state_file: Path):
        # stop_last_trials=False: a trial that reaches the last round is not stopped there by Tune, so its
        # federation logs its final model.
        super().__init__(time_attr="round", max_t=rounds, grace_period=grace_period,
                         reduction_factor=reduction_factor, stop_last_trials=False)
        self.rounds = rounds
        self.state_file = str(state_file)
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self.stopped:
            return self.STOP
        action = super().on_trial_result(tune_controller, trial, result)  # records the score at its rung
        if action == self.STOP and result.get("round", 0) >= self.rounds:
            action = self.CONTINUE  # the last round: the trial ends by itself, after logging its model
        if action == self.STOP:
            self.stopped.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def set_search_properties(self, metric, mode, **spec) -> bool:
        # A resumed sweep's scheduler already holds the sweep's metric and mode (restored with its scores);
        # Tune sets them again, which a plain ASHA refuses once set.
        if metric is not None and self.metric == metric:
            return True
        return super().set_search_properties(metric, mode, **spec)

    def _save(self) -> None:
        partial = f"{self.state_file}.partial"  # then renamed: an interruption never leaves half a file
        self.save(partial)
        os.replace(partial, self.state_file)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if Path(self.state_file).is_file():
            self.restore(self.state_file)
