"""The study storage's stale-trial rule: a worker killed between making a trial and its
first heartbeat must not leave the other workers waiting for that trial forever."""

from __future__ import annotations

import threading
import time

import optuna

from drcl import tune


def make(tmp_path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="s", storage=tune._rdb(f"sqlite:///{tmp_path}/s.db"))


def test_a_trial_left_without_a_heartbeat_is_failed_after_the_grace_period(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(tune, "GRACE_S", 1)
    study = make(tmp_path)
    orphan = study.ask()  # made, then its worker died before the first heartbeat
    time.sleep(1.1)  # the grace period
    tune._settle(study)  # returns instead of waiting forever
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.number == orphan.number and trial.state == optuna.trial.TrialState.FAIL


def test_a_trial_whose_worker_beats_is_waited_for(tmp_path):
    study = make(tmp_path)  # the grace period as shipped: the heartbeat stays fresh
    live = study.ask()
    study._storage.record_heartbeat(live._trial_id)
    timer = threading.Timer(0.5, lambda: study.tell(live, 0.5))
    timer.start()
    tune._settle(study)  # waits for the live worker's trial to end
    timer.join()
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.5
