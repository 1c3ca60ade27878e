"""`--device` / `--amp` (issue 24, CPU half): choosing and refusing a device, moving data once, recording where each
trial trained, the report saying so (and saying when a study mixes devices), the GPU worker-memory refusal.

No GPU here: the CPU stands in as "the device", the meta device checks that every tensor of the data moves, and
the CUDA queries are monkeypatched where only their answers matter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch

import cellc
from cellc.analysis.document import placement_lines, placements
from cellc.analysis.load import StudyData
from cellc.cli import main
from cellc.errors import UsageError
from cellc.harness import device as device_module
from cellc.harness.device import CUDA_CONTEXT_BYTES, Placement, check_gpu_workers, resolve_placement
from cellc.harness.record import TrialRecord
from cellc.harness.train import OnlineEpoch, ReferenceEpoch, TrainConfig, data_as, epoch_runner, initialise, train_trial
from cellc.harness.workers import Job, JobRunner
from cellc.machine import cpu_model
from cellc.tasks import Sequence, TaskData
from cellc.tasks.base import Batch
from cellc.tasks.iam import LineTarget
from cellc.tasks.jsb import JSBChorales

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GiB = 2**30


def toy_data(seed: int = 0) -> TaskData:
    gen = torch.Generator().manual_seed(seed)

    def piece(length: int) -> Sequence:
        roll = (torch.rand(length + 1, 88, generator=gen) < 0.05).float()
        return Sequence(roll[:-1].clone(), roll[1:].clone())

    return TaskData(train=[piece(11) for _ in range(5)], valid=[piece(8) for _ in range(2)],
                    test=[piece(9) for _ in range(2)], source="synthetic")


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(hidden=6, lr=1e-2, momentum=0.9, noise=0.2, max_epochs=3, patience=3, seed=5),
                          **overrides})


# -- choosing a device ------------------------------------------------------------------------------------------

def test_placements_resolve_and_unusable_choices_are_one_line_errors(monkeypatch):
    assert resolve_placement("cpu") == Placement(device="cpu")
    assert resolve_placement("CPU", "bf16") == Placement(device="cpu", amp="bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_placement("auto").device == "cpu"
    for text, expected in (("gpu", "choose cpu, cuda"), ("cuda:x", "choose cpu, cuda"), ("cuda", "--device cuda:"),
                           ("cuda:1", "--device cuda:1:")):
        with pytest.raises(UsageError, match=expected) as info:
            resolve_placement(text)
        assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="--amp 'fp16'"):
        resolve_placement("cpu", "fp16")
    # a machine with one GPU: cuda is cuda:0, auto picks it, cuda:3 names the devices there are
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_placement("cuda").device == resolve_placement("auto").device == "cuda:0"
    with pytest.raises(UsageError, match=r"1 CUDA device\(s\) here \(cuda:0 to cuda:0\)"):
        resolve_placement("cuda:3")


def test_placement_precision_and_what_a_trial_records():
    assert Placement().describe() == {"device": "cpu", "device_name": cpu_model(), "precision": "float32"}
    assert Placement(amp="bf16").precision == "bf16 autocast"
    with Placement(amp="bf16").autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with Placement().autocast():
        assert not torch.is_autocast_enabled("cpu")
    generator = torch.Generator().manual_seed(1)
    assert Placement().noise_generator(1, generator) is generator  # a CPU trial draws what it always drew


# -- data move once, and every tensor moves ----------------------------------------------------------------------

def test_data_moves_every_tensor_once_and_leaves_labels_and_texts():
    data = toy_data()
    assert data_as(data, torch.float32, "cpu") is data  # already there: no copy per trial
    ctc = dataclasses.replace(data, train=[Sequence(torch.randn(5, 3), LineTarget(torch.tensor([1, 2]), "ab"))])
    moved = data_as(ctc, torch.float32, "meta")
    assert all(s.inputs.device.type == "meta" for split in (moved.train, moved.valid, moved.test) for s in split)
    assert all(s.targets.device.type == "meta" for s in moved.valid + moved.test)
    assert moved.train[0].targets.labels.device.type == "cpu" and moved.train[0].targets.text == "ab"
    assert data_as(moved, torch.float32, "meta") is moved
    doubled = data_as(data, torch.float64)
    assert doubled.train[0].inputs.dtype == doubled.train[0].targets.dtype == torch.float64


def test_a_batch_mask_lives_with_its_inputs_while_lengths_stay_on_the_cpu():
    batch = Batch(inputs=torch.empty(4, 2, 3, device="meta"), lengths=torch.tensor([4, 2]), targets=None)
    assert batch.mask.device.type == "meta" and batch.lengths.device.type == "cpu"
    cpu = Batch(inputs=torch.zeros(4, 2, 3), lengths=torch.tensor([4, 2]), targets=None)
    assert cpu.mask.tolist() == [[True, True], [True, True], [True, False], [True, False]]


# -- training on a placement -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vanilla():
    return cellc.build("vanilla")


def test_the_cpu_placement_trains_exactly_as_before_and_records_where(vanilla):
    default = train_trial(JSBChorales(), toy_data(), vanilla, config())
    placed = train_trial(JSBChorales(), toy_data(), vanilla, config(), placement=resolve_placement("cpu"))
    drop = {"wall_time_s", "cpu_time_s"}
    assert default.model_dump(exclude=drop) == placed.model_dump(exclude=drop)
    assert (placed.device, placed.device_name, placed.precision) == ("cpu", cpu_model(), "float32")


def test_bf16_autocast_trains_through_autograd_keeps_float32_state_and_says_so(vanilla):
    task, data = JSBChorales(), toy_data()
    network = task.build_network(vanilla, 6)
    initialise(network, 0.1, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    assert isinstance(epoch_runner(network, task, data, config(), generator), OnlineEpoch)
    runner = epoch_runner(network, task, data, config(), generator, placement=Placement(amp="bf16"))
    assert isinstance(runner, ReferenceEpoch)
    assert runner.run([0, 1]) is not None
    assert all(p.dtype == torch.float32 for p in network.parameters())
    fp32 = train_trial(task, data, vanilla, config())
    bf16 = train_trial(task, data, vanilla, config(), placement=Placement(amp="bf16"))
    assert bf16.status == "ok" and bf16.precision == "bf16 autocast" and bf16.best_valid is not None
    assert bf16.valid_curve != fp32.valid_curve  # the output layer did compute in bfloat16
    assert abs(bf16.valid_curve[0] - fp32.valid_curve[0]) < 0.05 * fp32.valid_curve[0]


def test_a_worker_job_carries_its_placement_and_keeps_the_moved_data(monkeypatch, vanilla):
    if not (DATA_ROOT / "jsb-chorales").is_dir():
        pytest.skip("../shared/data missing")
    loads = []
    original = JSBChorales.load
    monkeypatch.setattr(JSBChorales, "load", lambda self: loads.append(1) or original(self))
    runner = JobRunner()
    for job_id in (1, 2):  # two trials of one task on one device: its data loaded (and moved) once
        job = Job(job_id=job_id, task="jsb", data_dir=str(DATA_ROOT), cell="vanilla", backend="auto",
                  config=config(train_subset=3, max_epochs=1, seed=job_id).model_dump(),
                  placement=Placement(amp="bf16").model_dump())
        event = runner.run(job, lambda event: None)
        assert event.kind == "done" and event.payload["precision"] == "bf16 autocast"
        assert event.payload["device"] == "cpu"
    assert len(loads) == 1


# -- GPU workers: the memory each takes, and the refusal -----------------------------------------------------------

def test_gpu_worker_counts_that_cannot_fit_are_refused_with_the_memory_stated():
    line = check_gpu_workers(4, 2 * GiB, 40 * GiB, 80 * GiB, "NVIDIA H100")
    assert "each trial process takes about 2.00 GiB" in line and "4 worker(s): 8.00 GiB of 40.00 GiB free" in line
    with pytest.raises(UsageError) as info:
        check_gpu_workers(8, 5 * GiB, 40 * GiB, 80 * GiB, "NVIDIA H100")
    text = str(info.value)
    assert text.startswith("--workers 8:") and "at most 7 fit" in text and "--workers 7" in text and "\n" not in text


def test_the_memory_line_measures_free_memory_on_the_device(monkeypatch):
    assert device_module.workers_memory_line(Placement(), 4, 1e9) is None  # the CPU: cores bound workers
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    gpu = Placement(device="cuda:0")
    line = device_module.workers_memory_line(gpu, 2, 1 * GiB)
    assert "cuda:0 (Fake GPU)" in line and f"{(GiB + CUDA_CONTEXT_BYTES) / GiB:.2f} GiB" in line
    with pytest.raises(UsageError, match="at most"):
        device_module.workers_memory_line(gpu, 16, 1 * GiB)
    assert "not measured" in device_module.workers_memory_line(gpu, 2, None)


# -- records and reports ----------------------------------------------------------------------------------------

def record(number: int, **where) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", task="jsb", cell="vanilla", status="ok", hyperparams={},
                       param_count=1, train_curve=[1.0], valid_curve=[1.0], best_valid=1.0, best_epoch=1,
                       test_at_best=1.0, epochs=1, wall_time_s=1.0, cpu_time_s=1.0, data_source="real", error=None,
                       **where)


def test_the_report_says_where_trials_trained_and_flags_a_mixed_study():
    old = StudyData(name="b/jsb/vanilla", task="jsb", cell="vanilla", attrs={"environment": {"cpu": "Old CPU"}},
                    records=[record(0), record(1)])  # stored before devices were recorded: the study's CPU, float32
    assert placements([old]) == {("jsb", "vanilla"): {("cpu", "Old CPU", "float32"): 2}}
    lines = placement_lines([old])
    assert lines == ["- Trials trained on: 2 on cpu (Old CPU) in float32."]
    gpu = dict(device="cuda", device_name="NVIDIA H100", precision="bf16 autocast")
    mixed = dataclasses.replace(old, records=[*old.records, record(2, **gpu)])
    text = "\n".join(placement_lines([mixed]))
    assert "1 on cuda (NVIDIA H100) in bf16 autocast" in text
    assert "**Mixed devices or precisions within a study**: jsb/vanilla: 2 on cpu in float32, 1 on cuda in " \
           "bf16 autocast" in text


def test_bench_records_placement_and_notes_a_resume_that_would_mix(tmp_path, capsys):
    if not (DATA_ROOT / "jsb-chorales").is_dir():
        pytest.skip("../shared/data missing")
    args = ["bench", "--tasks", "jsb", "--cells", "vanilla", "--profile", "smoke", "--workers", "0", "--no-estimate",
            "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "reports"), "--data-dir", str(DATA_ROOT)]
    assert main([*args, "--trials", "1", "--device", "cpu"]) == 0
    report = (tmp_path / "reports" / "smoke.md").read_text()
    assert f"- Trials trained on: 1 on cpu ({cpu_model()}) in float32." in report
    capsys.readouterr()
    assert main([*args, "--trials", "2", "--amp", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "note: jsb/vanilla: finished trials ran 1 on cpu in float32; this run trains on cpu in bf16 autocast" in err
    storage = f"sqlite:///{tmp_path / 'runs' / 'studies.db'}"
    trials = optuna.load_study(study_name="smoke/jsb/vanilla", storage=storage).get_trials()
    assert [t.user_attrs["precision"] for t in trials] == ["float32", "bf16 autocast"]
    assert "**Mixed devices or precisions within a study**" in (tmp_path / "reports" / "smoke.md").read_text()
    assert "--amp bf16" in optuna.load_study(study_name="smoke/jsb/vanilla", storage=storage).user_attrs["command"]


@pytest.mark.parametrize("argv, expected", [
    (["train", "--device", "tpu"], "--device 'tpu': choose cpu, cuda"),
    (["bench", "--device", "cuda:x", "--estimate"], "--device 'cuda:x'"),
    (["train", "--amp", "fp16"], "--amp 'fp16': the one mixed precision offered is bf16"),
    (["speed", "--train", "--rows", "jsb"], "--rows 'jsb': expected TASK:HIDDEN"),
    (["speed", "--rows", "jsb:20"], "--rows applies to --train only"),
    (["speed", "--train", "--backends", "eager"], "--backends does not apply to --train"),
])
def test_device_options_refuse_bad_values_in_one_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err


def test_cuda_on_a_machine_without_one_is_refused_before_anything_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--tasks", "jsb", "--cells", "vanilla", "--device", "cuda", "--out", "runs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda:") and "use --device cpu or auto" in err
    assert not (tmp_path / "runs" / "studies.db").exists()


def test_speed_train_times_an_epoch_on_the_chosen_device(tmp_path, capsys):
    if not (DATA_ROOT / "jsb-chorales").is_dir():
        pytest.skip("../shared/data missing")
    out = tmp_path / "speed-train.md"
    assert main(["speed", "--train", "--device", "cpu", "--rows", "jsb:8", "--repeat", "1", "--out", str(out),
                 "--data-dir", str(DATA_ROOT)]) == 0
    text = out.read_text()
    assert f"on cpu ({cpu_model()})" in text and "| jsb (real) |   8 |" in text and "CPU-hours" in text


@pytest.mark.slow
def test_trials_per_hour_with_one_and_several_workers(tmp_path, capsys):
    if not (DATA_ROOT / "jsb-chorales").is_dir():
        pytest.skip("../shared/data missing")
    from cellc.speed import workers

    out = tmp_path / "w.md"
    assert workers.main(["--device", "cpu", "--workers", "2", "--profile", "smoke", "--trials", "2",
                         "--data-dir", str(DATA_ROOT), "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and all("| 2 |" in row[4:] for row in rows)  # both ran the two trials
    assert workers.main(["--device", "cpu", "--workers", "1"]) == 2
    assert "--workers must be at least 2" in capsys.readouterr().err


@pytest.mark.slow
def test_a_trial_trains_through_the_triton_kernels_as_on_a_gpu(tmp_path):
    """What a GPU trial runs (the Triton backend, differentiated by autograd, no compiled train_forward), on the
    CPU under Triton's interpreter: the same scores as the compiled backend's online trainer, to float32 rounding."""
    pytest.importorskip("triton")
    if not (DATA_ROOT / "jsb-chorales").is_dir():
        pytest.skip("../shared/data missing")
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys, torch\n"
        "import cellc\n"
        "from cellc.harness.device import resolve_placement\n"
        "from cellc.harness.train import TrainConfig, train_trial\n"
        "from cellc.tasks import get_task\n"
        "task = get_task('jsb', sys.argv[1]); data = task.load()\n"
        "config = TrainConfig(hidden=4, lr=1e-2, momentum=0.9, noise=0.1, max_epochs=1, patience=1, train_subset=2)\n"
        "out = {b: train_trial(task, data, cellc.build('vanilla', backend=b), config,\n"
        "                      placement=resolve_placement('cpu')).model_dump() for b in ('triton', 'compiled')}\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "CELLC_TRITON_MODE": "auto"}
    done = subprocess.run([sys.executable, "-c", script, str(DATA_ROOT)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    triton, compiled = out["triton"], out["compiled"]
    assert triton["status"] == compiled["status"] == "ok"
    for key in ("train_curve", "valid_curve"):
        assert triton[key] == pytest.approx(compiled[key], rel=1e-4)
    assert triton["wall_time_s"] > 3 * compiled["wall_time_s"]  # the kernels did run, in the (slow) interpreter


def test_the_gpu_script_stops_at_once_with_one_message_where_there_is_no_gpu(tmp_path):
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2 and done.stderr.strip().startswith("error: --device cuda:")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
