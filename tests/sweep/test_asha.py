"""ASHA over rounds keeps its rung scores through the pickle round trip Tuner.restore makes."""

import pickle

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from crossfed.sweep.asha import RoundASHA


def scheduler(tmp_path):
    asha = RoundASHA(rounds=3, grace_period=1, reduction_factor=2, state_file=tmp_path / "asha.pkl")
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

    restored = pickle.loads(pickle.dumps(scheduler(tmp_path)))  # Tuner.restore unpickles the sweep's first state
    assert restored.set_search_properties("global/val_loss", "min")  # Tune sets them again on resume
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
    poor = Trial("federation", trial_id="poor", stub=True)
    restored.on_trial_add(None, poor)
    assert report(restored, poor, 1, 5.0) == TrialScheduler.CONTINUE  # the first result at a rung passes


def test_rungs_end_at_the_last_round_and_a_trial_there_is_never_stopped(tmp_path):
    """max_t is the number of rounds (not rounds + 1, which shifts the rungs): rounds 1, 2, 4 here; at the
    last round a trial is scored but finishes (stop_last_trials=False), so its final model is logged."""
    asha = RoundASHA(rounds=4, grace_period=1, reduction_factor=2, state_file=tmp_path / "asha.pkl")
    asha.set_search_properties("global/val_loss", "min")
    good, poor = (Trial("federation", trial_id=name, stub=True) for name in ("good", "poor"))
    for trial in (good, poor):
        asha.on_trial_add(None, trial)
    for round_number in (1, 2, 3):
        assert report(asha, good, round_number, 1.0) == TrialScheduler.CONTINUE
    assert report(asha, good, 4, 1.0) == TrialScheduler.CONTINUE  # rung 4 = max_t records it ...
    assert report(asha, poor, 4, 9.0) == TrialScheduler.CONTINUE  # ... but never stops a finishing trial
    assert report(asha, poor, 2, 9.0) == TrialScheduler.STOP  # before the last round, a poor trial still stops
