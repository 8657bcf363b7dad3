"""The SLURM launcher config: valid hydra-submitit-launcher fields, one task per GPU on every node."""

from __future__ import annotations

import pytest

# SlurmQueueConf of hydra-submitit-launcher 1.2 (checked against the plugin's schema when installed)
SLURM_QUEUE_FIELDS = {
    "_target_", "submitit_folder", "timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb",
    "nodes", "name", "stderr_to_stdout", "partition", "qos", "comment", "constraint", "exclude", "gres",
    "cpus_per_gpu", "gpus_per_task", "mem_per_gpu", "mem_per_cpu", "account", "signal_delay_s", "max_num_timeout",
    "additional_parameters", "array_parallelism", "setup"}


def test_launcher_asks_slurm_for_one_task_per_gpu_on_each_node(compose_train):
    cfg = compose_train(["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert set(launcher) <= SLURM_QUEUE_FIELDS


def test_fields_match_the_installed_plugin():
    config = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config")
    from omegaconf import OmegaConf

    assert set(OmegaConf.structured(config.SlurmQueueConf)) <= SLURM_QUEUE_FIELDS | {"wait_for_completion"}
