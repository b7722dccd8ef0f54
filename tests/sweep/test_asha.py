"""ASHA over rounds keeps its rung scores through the pickle round trip Tuner.restore makes."""

import pickle

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from crossfed.sweep.asha import RoundASHA


def scheduler(tmp_path):
    asha = RoundASHA(rounds=3, grace_period=1, reduction_factor=2, state_file=tmp_path / "asha-rungs.json")
    asha.set_search_properties("global/val_loss", "min")
    return asha


def report(asha, trial, round_number, loss):
    return asha.on_trial_result(None, trial, {"round": round_number, "global/val_loss": loss})


def test_rung_scores_survive_a_restore_and_still_stop_poor_trials(tmp_path):
    asha = scheduler(tmp_path)
    good, fair, poor = (Trial("federation", trial_id=name, stub=True) for name in ("good", "fair", "poor"))
    for trial in (good, fair, poor):
        asha.on_trial_add(None, trial)
    assert report(asha, good, 1, 1.0) == TrialScheduler.CONTINUE
    assert report(asha, fair, 1, 1.2) == TrialScheduler.STOP  # worse than the median of what it met
    before = asha.rung_scores()

    restored = pickle.loads(pickle.dumps(scheduler(tmp_path)))  # Tuner.restore unpickles the sweep's first state
    assert restored.rung_scores() == before
    restored.on_trial_add(None, poor)
    assert report(restored, poor, 1, 5.0) == TrialScheduler.STOP, "a restored ASHA must remember earlier rounds"

    # Tune may restore a trial it had been told to stop (the sweep was interrupted just then): it stays stopped,
    # whatever it reports.
    again = pickle.loads(pickle.dumps(scheduler(tmp_path)))
    for trial in (good, fair):
        again.on_trial_add(None, trial)
    assert report(again, fair, 2, 0.1) == TrialScheduler.STOP
    assert report(again, good, 2, 1.0) == TrialScheduler.CONTINUE


def test_a_fresh_scheduler_has_no_scores(tmp_path):
    restored = pickle.loads(pickle.dumps(scheduler(tmp_path)))
    assert all(not recorded for rungs in restored.rung_scores() for recorded in rungs)
    poor = Trial("federation", trial_id="poor", stub=True)
    restored.on_trial_add(None, poor)
    assert report(restored, poor, 1, 5.0) == TrialScheduler.CONTINUE  # the first result at a rung passes
