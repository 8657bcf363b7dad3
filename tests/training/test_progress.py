"""Progress output: Rich in a terminal, plain lines (every N batches and at epoch ends) in a log file."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader, TensorDataset

from polyfuse.errors import ConfigValueError
from polyfuse.training.progress import PlainProgress, progress_bar


class _Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss_step", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(samples: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(samples, 3, generator=generator), torch.randn(samples, 1,
                                                                                             generator=generator)),
                      batch_size=4)


def test_auto_picks_rich_in_a_terminal_and_plain_in_a_file(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert isinstance(progress_bar(every_n_batches=7), PlainProgress) and progress_bar(every_n_batches=7).every_n_batches == 7
    assert isinstance(progress_bar("rich"), RichProgressBar)
    with pytest.raises(ConfigValueError, match="callbacks.progress_bar.style='fancy'"):
        progress_bar("fancy")
    with pytest.raises(ConfigValueError, match="every_n_batches=0"):
        PlainProgress(every_n_batches=0)


def test_plain_lines_every_n_batches_and_at_each_epoch_end(capsys):
    trainer = L.Trainer(max_epochs=2, callbacks=[PlainProgress(every_n_batches=2)], logger=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu", devices=1)
    trainer.fit(_Regression(), _loader(20), _loader(8))  # 5 batches per epoch
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train ")]
    batch = r"loss=\d+\.\d{4} samples_per_sec=\d+\.\d eta=\d+:\d\d:\d\d"
    expected = [rf"train epoch=1/2 batch=2/5 step=2/10 {batch}", rf"train epoch=1/2 batch=4/5 step=4/10 {batch}",
                r"train epoch=1/2 done step=5 val/loss=\d+\.\d{4} time=\d+:\d\d:\d\d eta=\d+:\d\d:\d\d",
                rf"train epoch=2/2 batch=2/5 step=7/10 {batch}", rf"train epoch=2/2 batch=4/5 step=9/10 {batch}",
                r"train epoch=2/2 done step=10 val/loss=\d+\.\d{4} time=\d+:\d\d:\d\d eta=0:00:00"]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (line, pattern)
