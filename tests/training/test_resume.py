"""Building blocks of exact resume: resumable loader, per-sample seeding, RNG states, atomic writes."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from polyfuse.training.resume import (AtomicCheckpointIO, ResumableDataLoader, csv_rows_before, make_resumable,
                                      rng_states, set_rng_states)


class NoisyRange(Dataset):
    """``index`` plus a random draw from the global torch RNG (stands in for a random augmentation)."""

    def __len__(self) -> int:
        return 50

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, float(torch.rand(()))


def _epoch(loader: ResumableDataLoader, epoch: int) -> list[tuple[int, float]]:
    loader.sampler.set_epoch(epoch)
    return [item for batch in loader for item in batch]


def _loader(seed: int = 3) -> ResumableDataLoader:
    return ResumableDataLoader(NoisyRange(), seed=seed, batch_size=8, collate_fn=list)


def test_order_and_augmentation_depend_only_on_seed_epoch_and_index():
    first = _epoch(_loader(), 1)
    torch.manual_seed(123)  # a different global RNG state changes nothing
    again = _epoch(_loader(), 1)
    assert first == again
    assert sorted(index for index, _ in first) == list(range(50))
    assert [index for index, _ in _epoch(_loader(), 2)] != [index for index, _ in first]
    assert _epoch(_loader(seed=4), 1) != first


def test_fetching_leaves_the_global_rng_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _epoch(_loader(), 0)
    assert torch.equal(torch.rand(3), expected)


def test_load_state_dict_skips_the_batches_already_trained_on():
    full = _epoch(_loader(), 2)
    loader = _loader()
    loader.sampler.set_epoch(2)
    iterator = iter(loader)
    seen = [next(iterator), next(iterator)]
    state = loader.state_dict()
    assert state == {"seed": 3, "epoch": 2, "batches": 2}
    restarted = _loader()
    restarted.load_state_dict(state)
    rest = _epoch(restarted, 2)
    assert [item for batch in seen for item in batch] + rest == full
    assert restarted.state_dict()["batches"] == len(loader)  # position counts from the epoch start
    assert _epoch(restarted, 3) == _epoch(_loader(), 3)  # the skip applies once, to its own epoch


def test_skip_saved_for_another_epoch_is_ignored():
    loader = _loader()
    loader.load_state_dict({"seed": 3, "epoch": 5, "batches": 2})
    assert _epoch(loader, 0) == _epoch(_loader(), 0)


def test_make_resumable_keeps_loader_settings_and_shuffling():
    plain = DataLoader(NoisyRange(), batch_size=4, shuffle=True, collate_fn=list, drop_last=True)
    loader = make_resumable(plain, seed=1)
    assert isinstance(loader, ResumableDataLoader)
    assert loader.batch_size == 4 and loader.drop_last and loader.collate_fn is list and loader.sampler.shuffle
    sequential = make_resumable(DataLoader(NoisyRange(), batch_size=4, collate_fn=list), seed=1)
    assert [index for index, _ in _epoch(sequential, 3)] == list(range(50))


def test_rng_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    buffer = io.BytesIO()
    torch.save({"rng": rng_states()}, buffer)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True)["rng"])
    actual = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(actual[0], expected[0]) and np.array_equal(actual[1], expected[1]) and actual[2] == expected[2]


def test_atomic_save_never_leaves_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin.save_checkpoint({"step": 1}, path)
    assert io_plugin.load_checkpoint(path) == {"step": 1}

    def killed_mid_write(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io_plugin.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert io_plugin.load_checkpoint(path) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_csv_rows_before_keeps_rows_of_the_checkpointed_steps(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss_step,val/acc\n0,6,0.5,\n0,7,0.4,\n0,7,,0.25\n1,8,0.3,\n")
    assert csv_rows_before(path, 8) == [{"epoch": 0, "step": 6, "train/loss_step": 0.5},
                                        {"epoch": 0, "step": 7, "train/loss_step": 0.4},
                                        {"epoch": 0, "step": 7, "val/acc": 0.25}]
    assert csv_rows_before(tmp_path / "missing.csv", 8) == []


def test_logger_resume_options(tmp_path: Path):
    from polyfuse.training.resume import logger_resume_options

    assert logger_resume_options("lightning.pytorch.loggers.TensorBoardLogger", tmp_path, 8) == {"purge_step": 8}
    assert logger_resume_options("lightning.pytorch.loggers.WandbLogger", tmp_path, 8) == {}
    (tmp_path / "wandb" / "offline-run-20250101_000000-ab12cd34").mkdir(parents=True)
    assert logger_resume_options("lightning.pytorch.loggers.WandbLogger", tmp_path, 8) == {"id": "ab12cd34",
                                                                                          "resume": "allow"}
    assert logger_resume_options("lightning.pytorch.loggers.CSVLogger", tmp_path, 8) == {}


def test_make_resumable_leaves_loaders_it_does_not_know_alone():
    class Tracking(DataLoader):
        pass

    custom = Tracking(NoisyRange(), batch_size=4, shuffle=True)
    with pytest.warns(UserWarning, match="left as it is"):
        assert make_resumable(custom, seed=1) is custom
    weighted = DataLoader(NoisyRange(), batch_size=4,
                          sampler=torch.utils.data.WeightedRandomSampler([1.0] * 50, num_samples=50))
    with pytest.warns(UserWarning, match="WeightedRandomSampler"):
        assert make_resumable(weighted, seed=1) is weighted
