import optuna
import pytest

from cnnexp.errors import ConfigError
from cnnexp.tuning.space_file import parse_space
from cnnexp.tuning.storage import create_or_load, display_url, make_pruner, make_sampler, make_storage, rung_epochs


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("qmc", optuna.samplers.QMCSampler),
    ],
)
def test_samplers_by_name_are_seeded(name, cls):
    def draws(sampler):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=3)
        return [t.params for t in study.trials]

    assert isinstance(make_sampler(name, 7), cls)
    assert draws(make_sampler(name, 7)) == draws(make_sampler(name, 7))


def test_pruners_by_name_and_unknown_names():
    assert isinstance(make_pruner("median", 4), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 4), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none", 4), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("sha", 9), optuna.pruners.SuccessiveHalvingPruner)
    with pytest.raises(ConfigError, match="pruner 'asha' is not one of: median, hyperband, sha, none"):
        make_pruner("asha", 4)
    with pytest.raises(ConfigError, match="sampler 'grid' is not one of"):
        make_sampler("grid", None)


def test_storage_urls(tmp_path):
    assert display_url("postgresql+psycopg://me:pw@db:5432/studies") == "postgresql+psycopg://me:***@db:5432/studies"
    assert display_url("journal:./study.log") == "journal:./study.log"
    journal = make_storage(f"journal:{tmp_path / 'study.log'}")
    assert isinstance(journal, optuna.storages.JournalStorage)
    with pytest.raises(ConfigError, match="journal:PATH needs a file path"):
        make_storage("journal:")
    with pytest.raises(ConfigError, match="is not a database URL"):
        make_storage("study.db")


def test_only_one_creator_and_direction_is_checked(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}")
    sampler, pruner = optuna.samplers.RandomSampler(0), optuna.pruners.NopPruner()
    _, created = create_or_load("s", storage, "maximize", sampler, pruner)
    _, again = create_or_load("s", storage, "maximize", sampler, pruner)
    assert (created, again) == (True, False)
    with pytest.raises(ConfigError, match="exists with direction maximize"):
        create_or_load("s", storage, "minimize", sampler, pruner)


def test_dead_local_workers_trials_are_failed_on_rdb_storages_too(tmp_path):
    import socket
    import subprocess

    from optuna.trial import TrialState

    from cnnexp.tracking import tags
    from cnnexp.tuning.storage import _start_time, fail_dead_local_trials

    storage = make_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    gone = subprocess.Popen(["true"])
    started = _start_time(gone.pid)
    gone.wait()
    workers = {"dead": f"{socket.gethostname()}:{gone.pid}:{started}", "remote": "another-host:1:1"}
    trials = {}
    for name, worker in workers.items():
        trials[name] = study.ask()
        trials[name].suggest_float("x", 0, 1)
        trials[name].set_user_attr(tags.WORKER_ATTR, worker)
    seen = []
    assert fail_dead_local_trials(study, storage, lambda s, t: seen.append(t.number)) == 1
    states = {name: study.trials[t.number].state for name, t in trials.items()}
    # the dead local worker's trial is failed and retried at once; another machine's is left to heartbeats
    assert states == {"dead": TrialState.FAIL, "remote": TrialState.RUNNING} and seen == [trials["dead"].number]
    (retry,) = [t for t in study.trials if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == trials["dead"].number


@pytest.mark.parametrize(
    "base, warmup, first_step, sha_rungs",
    [
        # cnnexp's studies: the score after epoch e is step e, so step s is judged after s epochs.
        *[(1, 0.0, 1, [1, 3]), (1, 0.5, 1, [1, 3]), (1, 1.0, 1, [1, 3]), (1, 1.8, 2, [2, 6]), (1, 3.0, 3, [3])],
        (1, 3.2, 4, [4]),
        # Studies of earlier releases, resumed: epoch e was step e - 1, and their first cuts stay where they were.
        *[(0, 0.0, 1, [2, 4]), (0, 0.5, 1, [2, 4]), (0, 1.8, 1, [2, 4]), (0, 3.0, 2, [3, 7]), (0, 3.2, 3, [4])],
    ],
)
def test_the_first_cut_never_falls_inside_the_warm_up(base, warmup, first_step, sha_rungs):
    assert make_pruner("median", 9, warmup, base)._n_warmup_steps == first_step
    assert make_pruner("sha", 9, warmup, base)._min_resource == first_step
    assert make_pruner("hyperband", 9, warmup, base)._min_resource == first_step
    assert rung_epochs("sha", 9, warmup, base) == sha_rungs and min(sha_rungs) >= warmup
    # Never the last epoch: tune() does not judge a trial that has trained them all.
    assert rung_epochs("median", 9, warmup, base) == list(range(first_step + 1 - base, 9))
    assert rung_epochs("none", 9) == []


def test_successive_halving_stops_a_trial_behind_the_best_third_at_its_first_rung():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("sha", 9, warmup_epochs=0.5))
    decisions = []
    for value in (0.9, 0.8, 0.7, 0.95, 0.5, 0.92):
        trial = study.ask()
        trial.report(value, 1)  # epoch 1, past the half-epoch warm-up: the first rung
        decisions.append(trial.should_prune())
        if not decisions[-1]:
            trial.report(value, 2)  # epoch 2: between rungs, never judged
            assert not trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if decisions[-1] else study.tell(trial, value)
    # Fewer than 6 at the rung: only a new best goes on; then the best third (2 of 6: 0.95 and 0.92).
    assert decisions == [False, True, True, False, True, False]


def test_new_studies_number_epochs_from_1_and_older_studies_keep_counting_from_0():
    from cnnexp.tracking import tags
    from cnnexp.tuning.pruning import explain, step_base

    storage = optuna.storages.InMemoryStorage()
    sampler, pruner = make_sampler("random", 0), optuna.pruners.MedianPruner(0, 0)
    new, created = create_or_load("new", storage, "maximize", sampler, pruner)
    optuna.create_study(study_name="old", storage=storage, direction="maximize")  # as cnnexp <= issue 13 made it
    old, loaded = create_or_load("old", storage, "maximize", sampler, pruner)
    assert (created, loaded) == (True, False)
    assert tags.REPORT_STEP_ATTR in new.user_attrs and tags.REPORT_STEP_ATTR not in old.user_attrs
    assert step_base(old) == 1  # unmarked, but no trial has reported yet: nothing to be consistent with
    old.add_trial(optuna.trial.create_trial(value=0.6, intermediate_values={0: 0.5, 1: 0.6}))  # an old trial
    assert (step_base(new), step_base(old)) == (1, 0)
    for study in (new, old):  # the score after the first epoch, at each study's own step for it
        trial = study.ask()
        trial.report(0.5, step_base(study))
        assert explain(study, study._storage.get_trial(trial._trial_id), step_base(study))[tags.PRUNED_AT] == "1"


def test_a_space_reports_its_longest_trial_warm_up():
    doc = {
        "dataset": "digits",
        "trials": {"epochs": 10},
        "params": {"model.dropout": {"type": "float", "low": 0, "high": 0.5}},
    }
    assert parse_space(doc, "s").trial_warmup_epochs() == pytest.approx(2.0)  # the default one-cycle: 20%
    doc["fixed"] = {"train.lr_schedule": "wsd", "train.warmup_epochs": 1}
    assert parse_space(doc, "s").trial_warmup_epochs() == 1
    doc["params"]["train.lr_schedule"] = {"type": "categorical", "choices": ["wsd", "onecycle"]}
    del doc["fixed"]["train.lr_schedule"]
    assert parse_space(doc, "s").trial_warmup_epochs() == pytest.approx(2.0)


def test_tpe_is_parallel_aware():
    assert make_sampler("tpe", 0)._constant_liar is True
    assert make_sampler("tpe", 0, constant_liar=False)._constant_liar is False
