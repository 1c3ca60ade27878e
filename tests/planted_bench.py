"""A small planted bench in an Optuna SQLite storage, in the stored format of cellc.harness.record.

The studies record their task's trivial score (JSB 11.0, TIMIT 90.0), as benches do now: a report
of it needs no task data.
Metric = f(learning rate) + a per-cell shift + small noise: learning rate is the only
hyper-parameter that matters, ``nfg`` is shifted (worse), ``np`` repeats vanilla's scores within +/-0.01 (a
tenth of JSB's equivalence margin: equivalent).
TIMIT trials also carry the secondary metric ``FER39 %`` = metric - 5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from cellc.harness.profiles import SearchSpace
from cellc.harness.record import STUDY_FORMAT, StudySettings, study_name

BENCH = "planted"
TASKS = {
    "jsb": ({"name": "jsb", "title": "JSB Chorales", "metric": "NLL per time step (nats, summed over the 88 units)",
             "metric_short": "NLL", "lower_is_better": True, "bidirectional": False, "input_size": 88,
             "output_size": 88, "trivial_score": 11.0}, "real"),
    "timit": ({"name": "timit", "title": "TIMIT", "metric": "frame error % (61 phones)", "metric_short": "FER %",
               "lower_is_better": True, "bidirectional": True, "input_size": 39, "output_size": 61,
               "secondary_metrics": {"FER39 %": "frame error % after folding 61 -> 39 phones"},
               "trivial_score": 90.0}, "proxy"),
}
SHIFT = {"vanilla": 0.0, "np": 0.0, "nfg": 1.5}  # other cells: as vanilla


def jitter(cell: str, number: int) -> float:
    """np: a deterministic spread within +/-0.01 (identical scores would show nothing: no TOST on no spread)."""
    return 0.01 * ((number * 7919) % 13 - 6) / 6 if cell == "np" else 0.0


def plant_bench(path: Path, trials: int = 24, cells: tuple[str, ...] = ("vanilla", "nfg", "np"),
                tasks: tuple[str, ...] = ("jsb", "timit"), seed: int = 0) -> str:
    url = f"sqlite:///{path / 'studies.db'}"
    storage = optuna.storages.RDBStorage(url)
    space = SearchSpace()
    settings = StudySettings(profile="quick", trials=trials, max_epochs=12, patience=4, train_subset=60, batch_size=1,
                             init_std=0.1, backend="auto", space=space, seed=seed)
    dists = {
        "hidden": IntDistribution(20, 200, log=True),
        "lr": FloatDistribution(1e-6, 1e-2, log=True),
        "one_minus_momentum": FloatDistribution(0.01, 1.0, log=True),
        "noise": FloatDistribution(0.0, 1.0),
    }
    for t_index, task in enumerate(tasks):
        info, source = TASKS[task]
        rng = np.random.default_rng(seed + 100 * t_index)
        draws = []
        for _ in range(trials):
            lr = 10 ** rng.uniform(-6, -2)
            draws.append({"hidden": int(round(10 ** rng.uniform(np.log10(20), np.log10(200)))), "lr": lr,
                          "one_minus_momentum": 10 ** rng.uniform(-2, 0), "noise": rng.uniform(0, 1),
                          "eps": rng.normal(0, 0.05)})
        for cell in cells:
            study = optuna.create_study(storage=storage, study_name=study_name(BENCH, task, cell), direction="minimize")
            attrs = {"format": STUDY_FORMAT, "bench": BENCH, "task": task, "cell": cell, "task_info": info,
                     "data_source": source, "command": f"cellc bench --profile quick --name {BENCH}",
                     "settings": settings.model_dump()}
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            for number, d in enumerate(draws):
                metric = 8.0 + 0.5 * (np.log10(d["lr"]) + 3.5) ** 2 + SHIFT.get(cell, 0.0) + d["eps"] + jitter(cell, number)
                diverged = number == trials - 1 and cell == "nfg"
                hp = {"hidden": d["hidden"], "lr": d["lr"], "momentum": 1 - d["one_minus_momentum"], "noise": d["noise"]}
                user = {"owner": "host:1:1", "seed": seed + number, "hyperparams": hp,
                        "status": "diverged" if diverged else "ok", "param_count": 4 * d["hidden"] * (88 + d["hidden"]),
                        "train_curve": [metric + 1, metric + 0.2], "valid_curve": [metric + 0.5, metric + 0.1],
                        "best_valid": metric + 0.1, "best_epoch": 2, "test_at_best": metric, "epochs": 2,
                        "wall_time_s": 10.0 + d["hidden"] / 5, "cpu_time_s": 9.0 + d["hidden"] / 5,
                        "data_source": source, "error": None}
                if "secondary_metrics" in info:  # planted: the folded error is 5 points below the metric
                    user["test_secondary_at_best"] = {"FER39 %": metric - 5.0}
                params = {k: d[k] for k in dists}
                if diverged:
                    trial = optuna.trial.create_trial(params=params, distributions=dists, user_attrs=user,
                                                      state=TrialState.PRUNED)
                else:
                    trial = optuna.trial.create_trial(params=params, distributions=dists, user_attrs=user,
                                                      value=metric + 0.1)
                study.add_trial(trial)
            failed = optuna.trial.create_trial(params={k: draws[0][k] for k in dists}, distributions=dists,
                                               user_attrs={"status": "interrupted", "error": "interrupted"},
                                               state=TrialState.FAIL)
            study.add_trial(failed)
    return url
