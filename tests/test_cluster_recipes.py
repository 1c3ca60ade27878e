"""docs/cluster/: the SLURM array script's body, run for two array indices against the test PostgreSQL
server (no scheduler needed), and the Kubernetes Indexed Job's manifest."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from pgserver import PASSWORD, pg_server, pg_url  # noqa: F401 - fixtures

from cellc.harness.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "docs" / "cluster" / "cellc-bench.sbatch"
DATA_ROOT = ROOT.parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")
def test_slurm_array_script_runs_one_study_from_two_array_tasks(pg_url, tmp_path):
    # what the script's #SBATCH lines ask of a scheduler
    directives = [line for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --array=0-7" in directives and any("--cpus-per-task" in line for line in directives)
    args = f"--tasks jsb --cells vanilla --profile smoke --trials 4 --max-epochs 2 --train-subset 16 " \
           f"--name slurm --data-dir {shlex.quote(str(DATA_ROOT))}"
    procs = []
    for index in (0, 1):
        env = dict(os.environ, CELLC_STORAGE=pg_url, CELLC_BENCH_ARGS=args, CELLC=f"{sys.executable} -m cellc.cli",
                   SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID=str(index), SLURM_CPUS_PER_TASK="1",
                   SLURMD_NODENAME="node")
        procs.append(subprocess.Popen(["bash", str(SBATCH)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert PASSWORD not in out + err and "Traceback" not in err
    trials = optuna.load_study(study_name="slurm/jsb/vanilla", storage=open_storage(pg_url)).get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and len({t.number for t in trials}) == len(trials)
    assert {str(t.user_attrs["owner"]).split(":")[0] for t in trials} <= {"node-77-0", "node-77-1"}
    assert (tmp_path / "reports" / "slurm.md").is_file()  # written in the submission folder


def test_slurm_script_needs_the_storage_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CELLC_STORAGE"}
    done = subprocess.run(["bash", str(SBATCH)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "set CELLC_STORAGE to the study URL" in done.stderr


def test_kubernetes_indexed_job_runs_the_same_bench_on_every_pod():
    job = yaml.safe_load((ROOT / "docs" / "cluster" / "cellc-bench-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    assert command.startswith("exec cellc bench ") and '--storage "$CELLC_STORAGE"' in command
    assert '--host "cellc-bench-$JOB_COMPLETION_INDEX"' in command  # a name per pod
    env = {item["name"]: item for item in container["env"]}
    assert "secretKeyRef" in env["CELLC_STORAGE"]["valueFrom"]  # the URL (and password) from a Secret
    # the same bench options as the SLURM script's default
    assert "--all --profile paper" in command and "--all --profile paper" in SBATCH.read_text()
