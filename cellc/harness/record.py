"""The stored format of studies and trials (what analysis and reports read).

Storage is Optuna's (any SQLAlchemy URL; default ``sqlite:///<out>/studies.db``). A *bench*
(named after its profile unless ``--name`` is given) holds one Optuna study per (task, cell),
named ``"<bench>/<task>/<cell>"``.

Study user attributes (``study.user_attrs``), written when the study is created:

==================  ==========================================================================
``format``          ``STUDY_FORMAT`` (int), bumped on incompatible changes
``bench``           bench name, e.g. ``"quick"``
``task``            task CLI name, e.g. ``"jsb"``
``cell``            cell name (spec name or path), e.g. ``"vanilla"``
``task_info``       :meth:`cellc.tasks.base.Task.describe` (title, metric, lower_is_better, ...,
                    the trivial predictor and the equivalence margin) and ``trivial_score``, the
                    task's :meth:`~cellc.tasks.base.Task.trivial_score` on the data it ran on (absent
                    in older studies: the report computes it from the task's data)
``settings``        the :class:`StudySettings` dump: profile name, target trials, max_epochs,
                    patience, warmup, train_subset, batch_size, init_std, backend, search space,
                    seed (the profile as this task ran it, after the task's own sizing; studies
                    stored before ``warmup`` existed read as warmup 0, which is what they ran)
``data_source``     ``"real"``, ``"rebuilt from music21"``, ``"proxy"``; also per trial
``data_identity``   :func:`data_identity`: ``{"source", "location", "sizes", "proxy"}`` (``proxy``: the
                    proxy corpus's generator and config, i.e. its size and seed; None for other data).
                    Resuming needs the same source, sizes and proxy (the location may differ between
                    machines sharing a storage). Absent in older studies: unknown, accepted
``cell_identity``   :func:`cellc.harness.cells.cell_identity`: ``{"hash", "equations_text",
                    "equations_latex", "formula", "description"}`` of the cell as compiled when the
                    study was created; resuming needs the same ``hash``. Absent in older studies
``command``         the ``cellc bench ...`` command that reproduces the bench
``estimates``       one entry per bench run that made a start-up estimate (not with ``--no-estimate``):
                    ``{"date", "trials" (still to run then), "cpu_hours", "wall_hours", "workers", "host"}``,
                    the same for every study of the bench run; absent in older studies
``environment``     ``{"cpu", "cores", "system", "python", "torch", "cellc", "commit", "workers"}`` of
                    the latest run that worked on the study (updated on resume, like ``command``;
                    ``commit``: the last commit that changed cellc/, absent in older studies)
==================  ==========================================================================

Trial states: ``COMPLETE`` (status ``ok``; value = best validation metric), ``PRUNED`` (status
``diverged``; kept and counted, no value), ``FAIL`` (status ``failed`` / ``interrupted``: a crashed
worker, an exception, or a killed run; *not* counted, the search runs another trial instead),
``RUNNING`` (in flight; the ``owner`` attribute says which process).

Trial params (Optuna): ``hidden`` (int), ``lr``, ``one_minus_momentum``, ``noise``.

Trial user attributes (:class:`TrialRecord` is their typed view):

==================  ==========================================================================
``owner``           ``"host:pid:start"`` of the process running it (for stale-trial detection; host is
                    ``$CELLC_HOST`` / ``cellc bench --host`` where given)
``seed``            training seed (search seed + trial number)
``hyperparams``     ``{"hidden", "lr", "momentum", "noise"}`` as used for training
``status``          ``"ok"`` | ``"diverged"`` | ``"failed"`` | ``"interrupted"``
``param_count``     trainable parameters of the whole network (recurrent layer + output layer)
``train_curve``     list per epoch: metric over the epoch's training updates (noisy inputs)
``valid_curve``     list per epoch: validation metric
``best_valid``      best validation metric (None if the first epoch diverged)
``best_epoch``      1-based epoch of ``best_valid``
``test_at_best``    test metric with the weights of ``best_epoch`` (None if none)
``test_secondary_at_best``  ``{name: value}`` of the task's secondary metrics
                    (``task_info["secondary_metrics"]``, e.g. TIMIT's ``"FER39 %"``) on the test
                    split with the same weights; ``{}`` for tasks without any, for trials with no
                    test score, and for trials stored before this attribute existed
``epochs``          epochs run
``wall_time_s``     wall-clock seconds of the trial (in its worker)
``cpu_time_s``      CPU seconds of the trial's worker process
``data_source``     as in the study attributes
``device``          ``"cpu"`` or ``"cuda"`` (:meth:`cellc.harness.device.Placement.describe`); absent in trials
                    stored before ``--device`` existed, which all ran on the CPU (read as ``"cpu"``)
``device_name``     the CPU model or the GPU's name (absent before: the study's ``environment["cpu"]``)
``precision``       ``"float32"`` or ``"bf16 autocast"`` (absent before: float32, all they could run)
``error``           message for failed trials, else None
==================  ==========================================================================

Exported, a bench's trials become one versioned JSON Lines file: :mod:`cellc.harness.trials_file`
documents that schema (``cellc export``, ``cellc report --trials``, ``cellc copy``).
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict

from cellc.errors import UsageError
from cellc.harness.profiles import SearchSpace
from cellc.machine import cpu_model

STUDY_FORMAT = 1


class StudySettings(BaseModel):
    """Everything that must match when a study is resumed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    trials: int
    max_epochs: int
    patience: int
    warmup: int = 0  # absent in studies stored before it existed; they ran without warm-up
    train_subset: int | None
    batch_size: int
    init_std: float | None
    backend: str
    space: SearchSpace
    seed: int

    def comparable(self) -> dict[str, Any]:
        """Settings that change what a trial means (the target trial count may change on resume)."""
        return self.model_dump(exclude={"trials"})


class TrialRecord(BaseModel):
    """One stored trial, as analysis code sees it."""

    model_config = ConfigDict(frozen=True)

    number: int
    state: str  # Optuna state name: COMPLETE, PRUNED, FAIL, RUNNING, ...
    task: str
    cell: str
    status: str
    hyperparams: dict[str, float]
    param_count: int | None
    train_curve: list[float]
    valid_curve: list[float]
    best_valid: float | None
    best_epoch: int | None
    test_at_best: float | None
    test_secondary_at_best: dict[str, float] = {}
    epochs: int
    wall_time_s: float
    cpu_time_s: float
    data_source: str
    error: str | None
    seed: int | None = None  # training seed (search seed + trial number)
    host: str | None = None  # where it ran (the host part of its owner)
    device: str | None = None  # "cpu" / "cuda"; None: stored before devices were recorded (the CPU)
    device_name: str | None = None
    precision: str | None = None  # "float32" / "bf16 autocast"; None: stored before (float32)

    def placement(self, study_cpu: str | None = None) -> tuple[str, str, str]:
        """(device, its name, precision), older trials read as what they ran: the CPU (named by the study's
        environment, ``study_cpu``), float32."""
        return (self.device or "cpu", self.device_name or study_cpu or "unrecorded CPU", self.precision or "float32")

    @property
    def finished(self) -> bool:
        """Kept and counted toward the target (ok or diverged)."""
        return self.state in ("COMPLETE", "PRUNED")


def environment(workers: int) -> dict[str, Any]:
    """Where trials run: CPU model, cores, OS, Python / torch / cellc versions, worker processes."""
    import platform

    import torch

    from cellc import __version__

    from cellc.analysis.context import code_commit

    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count() or 1, "system": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(), "torch": torch.__version__, "cellc": __version__,
            "commit": code_commit(), "workers": workers}


# Bench names become folder and file names (reports/<bench>.md, reports/<bench>/): like spec
# names, lower-case letters, digits, '-' and '_' only, so that e.g. ``..`` cannot escape.
BENCH_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")


def checked_bench_name(name: str, setting: str = "--name") -> str:
    """``name`` if it is a valid bench name, else a UsageError naming ``setting``."""
    if not BENCH_NAME.fullmatch(name):
        raise UsageError(
            f"{setting} {name!r}: a bench name is 1-64 lower-case letters, digits, '-' or '_' "
            "(starting with a letter or digit)"
        )
    return name


DATA_IDENTITY_KEYS = ("source", "sizes", "proxy")  # compared on resume; "location" is informative


def data_identity(source: str, location: str, sizes: dict[str, int], marker: dict[str, Any] | None) -> dict[str, Any]:
    """Where a task's data came from, as stored with a study (see the table above)."""
    proxy = None if marker is None else {"generator": marker.get("generator"), "config": marker.get("config")}
    return {"source": source, "location": location, "sizes": dict(sizes), "proxy": proxy}


def study_name(bench: str, task: str, cell: str) -> str:
    return f"{bench}/{task}/{cell}"


def host_name() -> str:
    """This machine's name in trial owners: ``$CELLC_HOST`` (``cellc bench --host``) if set, else the hostname.

    Processes with different names never judge each other's trials by process id, only by heartbeat: give
    each its own name where the hostname is not unique (containers, several benches acting as hosts).
    """
    name = os.environ.get("CELLC_HOST") or socket.gethostname()
    return name.replace(":", "_")  # the owner's fields are separated by colons


def owner_id() -> str:
    """Identifies this process across machines sharing a storage: host, pid and process start time."""
    return f"{host_name()}:{os.getpid()}:{_process_start(os.getpid())}"


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_is_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it lives on another host (cannot tell)."""
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != host_name():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == "?" or _process_start(pid) == start


def record_from_trial(trial: FrozenTrial, study_attrs: dict[str, Any]) -> TrialRecord:
    attrs = trial.user_attrs
    status = attrs.get("status") or ("interrupted" if trial.state == TrialState.FAIL else "running")
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        task=study_attrs.get("task", "?"),
        cell=study_attrs.get("cell", "?"),
        status=status,
        hyperparams=attrs.get("hyperparams", {}),
        param_count=attrs.get("param_count"),
        train_curve=attrs.get("train_curve", []),
        valid_curve=attrs.get("valid_curve", []),
        best_valid=attrs.get("best_valid"),
        best_epoch=attrs.get("best_epoch"),
        test_at_best=attrs.get("test_at_best"),
        test_secondary_at_best=attrs.get("test_secondary_at_best") or {},
        epochs=attrs.get("epochs", 0),
        wall_time_s=attrs.get("wall_time_s", 0.0),
        cpu_time_s=attrs.get("cpu_time_s", 0.0),
        data_source=attrs.get("data_source", study_attrs.get("data_source", "?")),
        error=attrs.get("error"),
        seed=attrs.get("seed"),
        host=str(attrs["owner"]).rsplit(":", 2)[0] if attrs.get("owner") else None,
        device=attrs.get("device"),
        device_name=attrs.get("device_name"),
        precision=attrs.get("precision"),
    )


def study_records(study: optuna.Study) -> list[TrialRecord]:
    attrs = study.user_attrs
    return [record_from_trial(t, attrs) for t in study.get_trials(deepcopy=False)]
