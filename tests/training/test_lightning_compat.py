"""The Lightning internals polyfuse depends on still exist and mean what it assumes.

Each failure names the installed Lightning version: an upgrade that moves an internal fails here.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, IterableDataset

from polyfuse.training.lightning_compat import LIGHTNING_VERSION, is_last_train_batch, reruns_command_line


class _Stream(IterableDataset):
    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.ones(5, 2).unbind(0))


class _Recorder(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.last: list[bool] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.last.append(is_last_train_batch(self.trainer, batch_idx))
        return self.layer(batch).sum()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(data: Any, **options: Any) -> list[bool]:
    module = _Recorder()
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **options)
    trainer.fit(module, DataLoader(data, batch_size=1))
    return module.last


@pytest.mark.parametrize("sized", [True, False])
def test_only_the_last_training_batch_is_last(sized: bool):
    data = list(torch.ones(5, 2).unbind(0)) if sized else _Stream()
    try:
        last = _fit(data)
    except AttributeError as error:  # fit_loop.epoch_loop.batch_progress.is_last_batch moved
        pytest.fail(f"Lightning {LIGHTNING_VERSION}: the training loop's last-batch flag moved ({error}); "
                    "update polyfuse.training.lightning_compat.is_last_train_batch")
    assert last == [False] * 4 + [True], f"Lightning {LIGHTNING_VERSION}, sized={sized}: {last}"
    assert _fit(data, limit_train_batches=3) == [False, False, True], f"Lightning {LIGHTNING_VERSION}"


def test_ddp_on_one_machine_reruns_the_command_line():
    try:
        ddp = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    except ImportError as error:
        pytest.fail(f"Lightning {LIGHTNING_VERSION}: the subprocess-script launcher moved ({error}); "
                    "update polyfuse.training.lightning_compat.reruns_command_line")
    assert reruns_command_line(ddp), f"Lightning {LIGHTNING_VERSION}: `ddp` no longer re-runs the script"
    spawn = Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_checkpointing=False)
    single = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    assert not reruns_command_line(spawn) and not reruns_command_line(single)
