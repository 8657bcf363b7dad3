"""A job of the SLURM launcher's requeue path, signalled mid-training, requeued and resumed, ends
exactly like an uninterrupted run. Run with submitit's local executor (``hydra/launcher=submitit_local``):
the signal handler, ``checkpoint()`` resubmission and requeue are submitit's own code, as on SLURM,
except that the local executor restarts the job itself where SLURM's job calls ``scontrol requeue``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polyfuse.cli.config import repo_root

from ..distributed.harness import clean_env
from . import test_resume as resume  # COMMON and the comparisons

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SIGNAL_STEP = 9  # the signal comes in the 10th optimizer step; last.ckpt was written after step 8


def _train(*overrides: str) -> subprocess.CompletedProcess:
    """``polyfuse-train <overrides> <test_resume.COMMON>``, the repository on PYTHONPATH (test callbacks)."""
    return subprocess.run([sys.executable, "-m", "polyfuse.cli.train", *overrides, *resume.COMMON],
                          env=clean_env(POLYFUSE_ROOT=str(repo_root())), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_signalled_job_is_requeued_and_resumes_to_the_uninterrupted_weights(tmp_path: Path):
    reference = tmp_path / "reference"
    done = _train(f"hydra.run.dir={reference}", "deterministic=true")
    assert done.returncode == 0, done.stderr[-3000:]

    marker = tmp_path / "signalled"
    # ${now:...} in the sweep dir: the requeued job must find the *same* directory (Hydra's resolver
    # cache travels in the pickled launcher), or ckpt_path=last would silently start afresh elsewhere
    job = _train("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}/sweep/${{now:%H-%M-%S-%f}}",
                 "deterministic=true", "ckpt_path=last",
                 "hydra.launcher.timeout_min=20", "+callbacks.preempt._target_=tests.cli.preemption_callback.SignalAtStep",
                 f"+callbacks.preempt.step={SIGNAL_STEP}", f"+callbacks.preempt.marker={marker}")
    assert job.returncode == 0, job.stderr[-3000:]
    assert marker.is_file(), "the job was never signalled"

    (run,) = [path.parent for path in tmp_path.glob("sweep/*/0/summary.json")]
    logs = "\n".join(path.read_text() for path in sorted(run.parent.glob(".submitit/**/*_log.*")))
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'} (step 8)" in logs, logs[-3000:]
    assert not list(run.glob("**/hpc_ckpt_*.ckpt")), "Lightning's own SLURM requeue must not have acted"

    expected = json.loads((reference / "summary.json").read_text())
    actual = json.loads((run / "summary.json").read_text())
    assert actual["test"] == expected["test"] and actual["best_score"] == expected["best_score"]
    assert actual["global_step"] == expected["global_step"] == 12
    assert resume._rows(run / "metrics.csv") == resume._rows(reference / "metrics.csv")
    for name in ("last.ckpt", "best.ckpt"):
        mine, theirs = resume._weights(run / "checkpoints" / name), resume._weights(reference / "checkpoints" / name)
        assert mine.keys() == theirs.keys()
        different = [key for key in mine if not mine[key].equal(theirs[key])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
