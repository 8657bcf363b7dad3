"""The SLURM launcher config: valid hydra-submitit-launcher fields, one task per GPU on every node, the
sbatch script submitit writes from it, and requeue left to submitit alone (Lightning's switched off)."""

from __future__ import annotations

import os
import signal

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

submitit_launcher = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.submitit_launcher")


class _Submitted(Exception):
    """Raised instead of calling sbatch; carries the script that would have been submitted."""


def test_launcher_asks_slurm_for_one_task_per_gpu_on_each_node(compose_train):
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    cfg = compose_train(["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert set(launcher) <= set(OmegaConf.structured(SlurmQueueConf)), "keys the plugin does not know"
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.max_num_timeout > 0 and 0 < launcher.signal_delay_s < launcher.timeout_min * 60



def test_devices_auto_stops_at_composition(compose_train):
    """SLURM needs task and GPU counts: `trainer.devices=auto` fails before anything is submitted
    (Hydra checks this file against the plugin's schema of the same name, whose fields are ints)."""
    from omegaconf.errors import ValidationError

    cfg = compose_train(["hydra/launcher=submitit_slurm", "trainer=ddp"])
    assert cfg.trainer.devices == "auto"
    with pytest.raises(ValidationError, match="auto"):
        instantiate(cfg.hydra.launcher)

def test_sbatch_script_requests_the_nodes_tasks_gpus_and_requeue_signal(compose_train, tmp_path, monkeypatch):
    """The script submitit would hand to sbatch, built by the plugin from the composed config."""
    from submitit.slurm.slurm import SlurmExecutor

    def capture(executor: SlurmExecutor, command: str):
        raise _Submitted(executor._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(SlurmExecutor, "_submit_command", capture)
    bin_dir = tmp_path / "bin"  # submitit refuses to build a SLURM executor where `srun` is not on PATH
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = compose_train(["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    launcher = instantiate(cfg.hydra.launcher)  # as Hydra builds its launcher plugin
    assert isinstance(launcher, submitit_launcher.SlurmLauncher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)  # type: ignore[arg-type]
    with pytest.raises(_Submitted) as submitted:
        launcher.launch([["seed=0"]], initial_job_idx=0)
    script = str(submitted.value)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 f"#SBATCH --signal=USR2@{cfg.hydra.launcher.signal_delay_s}",
                 f"#SBATCH --time={cfg.hydra.launcher.timeout_min}", "#SBATCH --requeue"):
        assert line in script.splitlines(), f"{line!r} missing from the sbatch script:\n{script}"
    assert "srun" in script and "export SUBMITIT_EXECUTOR=slurm" in script


@pytest.mark.parametrize("under_submitit", [True, False])
def test_lightning_auto_requeue_is_off_in_submitit_jobs(monkeypatch, under_submitit: bool):
    """In a SLURM task started by submitit, Lightning installs no SIGUSR1 requeue handler; in a
    SLURM task started otherwise (plain sbatch + srun) it keeps its own."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch import Trainer

    from polyfuse.training.launch import submitit_requeue_plugins

    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "polyfuse", "SLURM_JOB_ID": "4242",
                        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(name, value)
    if under_submitit:
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    else:
        monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    plugins = submitit_requeue_plugins()
    assert len(plugins) == int(under_submitit)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, plugins=plugins)
    assert isinstance(trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
    before = signal.getsignal(signal.SIGUSR1)
    trainer._signal_connector.register_signal_handlers()  # what trainer.fit does first
    try:
        installed = signal.getsignal(signal.SIGUSR1) is not before
    finally:
        trainer._signal_connector.teardown()
    assert installed is not under_submitit


@pytest.mark.parametrize("rank, timed_out", [(0, False), (0, True), (1, True)])
def test_on_slurm_rank_zero_requeues_the_same_job_with_scontrol(compose_train, tmp_path, monkeypatch, rank: int,
                                                                timed_out: bool):
    """Submitit's handler of the SLURM signal, with this config's launcher as the job (a fake
    ``scontrol`` records the call): rank 0 resubmits the same sweep point and requeues the array task;
    a timeout uses up one of ``max_num_timeout`` requeues, a pre-emption none; other ranks do nothing."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.slurm.slurm import SlurmJobEnvironment

    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name, value in {"SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "0",
                        "SLURM_PROCID": str(rank), "SLURM_NTASKS": "2"}.items():
        monkeypatch.setenv(name, value)

    cfg = compose_train(["hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)  # type: ignore[arg-type]
    job_args = (["seed=0"], "hydra.sweep.dir", 0, "job_id_for_0", {})  # what launch() maps over the array
    delayed = DelayedSubmission(launcher, *job_args)
    timeouts = cfg.hydra.launcher.max_num_timeout
    delayed.set_timeout(cfg.hydra.launcher.timeout_min, timeouts)
    paths = JobPaths(tmp_path / "submitit", job_id="4242_0", task_id=rank)
    paths.folder.mkdir()
    handler = SignalHandler(SlurmJobEnvironment(), paths, delayed)
    if timed_out:  # the signal came signal_delay_s before the time limit
        handler._start_time -= cfg.hydra.launcher.timeout_min * 60 - cfg.hydra.launcher.signal_delay_s

    if rank != 0:
        handler.checkpoint_and_try_requeue(signal.SIGUSR2)
        assert not calls.exists() and not paths.submitted_pickle.exists()
        return
    with pytest.raises(SystemExit):
        handler.checkpoint_and_try_requeue(signal.SIGUSR2)
    assert calls.read_text().split() == ["requeue", "4242_0"]
    again = DelayedSubmission.load(paths.submitted_pickle)
    assert isinstance(again.function, submitit_launcher.SlurmLauncher) and again.args == job_args
    assert again._timeout_countdown == timeouts - int(timed_out)
