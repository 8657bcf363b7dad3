"""MultimodalLoader: order and augmentation from (seed, epoch, index), mid-epoch state, DDP shards."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from polyfuse.data.loader import EpochSampler, MultimodalLoader, lightning_prefetch_lag


class NoisyRange(Dataset):
    """``index`` plus a random draw from the global torch RNG (stands in for a random augmentation)."""

    def __len__(self) -> int:
        return 50

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, float(torch.rand(()))


class CountingStream(IterableDataset):
    """0..n-1 in an order drawn from the epoch, split over DataLoader workers (a streaming shard reader)."""

    def __init__(self, size: int = 40) -> None:
        self.size, self.epoch = size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.epoch)).tolist()
        return iter(order[worker::workers])


def _epoch(loader: MultimodalLoader, epoch: int) -> list[Any]:
    loader.set_epoch(epoch)
    return [item for batch in loader for item in batch]


def _loader(seed: int = 3, workers: int = 0, **options: Any) -> MultimodalLoader:
    return MultimodalLoader(NoisyRange(), seed=seed, batch_size=8, shuffle=True, collate_fn=list,
                            num_workers=workers, **options)


def test_order_and_augmentation_depend_only_on_seed_epoch_and_index():
    first = _epoch(_loader(), 1)
    torch.manual_seed(123)  # a different global RNG state changes nothing
    assert _epoch(_loader(), 1) == first
    assert sorted(index for index, _ in first) == list(range(50))
    assert [index for index, _ in _epoch(_loader(), 2)] != [index for index, _ in first]
    assert _epoch(_loader(seed=4), 1) != first
    assert _epoch(_loader(workers=2), 1) == first  # the same in DataLoader workers


def test_fetching_leaves_the_global_rng_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _epoch(_loader(), 0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restarted_loader_continues_mid_epoch(workers: int):
    full = _epoch(_loader(workers=workers), 2)
    loader = _loader(workers=workers)
    loader.set_epoch(2)
    iterator = iter(loader)
    seen = [next(iterator), next(iterator)]
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["seed"] == 3
    restarted = _loader(workers=workers)
    restarted.load_state_dict(state)
    rest = _epoch(restarted, 2)
    assert [item for batch in seen for item in batch] + rest == full
    assert _epoch(restarted, 3) == _epoch(_loader(), 3)  # the position applies once, to its own epoch


def test_a_state_saved_at_the_trainers_epoch_end_continues_with_the_next_epoch():
    loader = _loader(epoch_length=lambda: 2)  # limit_train_batches=2: the epoch ends after 2 of 7 batches
    loader.set_epoch(5)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state["epoch_end"] and state["epoch"] == 5
    restarted = _loader()
    restarted.load_state_dict(state)
    assert [x for batch in restarted for x in batch] == _epoch(_loader(), 6)


def test_a_state_of_another_rank_is_ignored():
    loader = _loader(rank=1, world_size=2)
    loader.load_state_dict({**_loader().state_dict(), "epoch": 3})  # rank 0's
    assert loader.state_dict()["epoch"] == 0


def test_a_trainer_epoch_drives_the_sampler():
    epoch = {"now": 4}
    loader = _loader(current_epoch=lambda: epoch["now"])
    assert [x for batch in loader for x in batch] == _epoch(_loader(), 4)


@pytest.mark.parametrize("train", [True, False])
def test_ranks_get_disjoint_shards_padded_only_for_training(train: bool):
    size, world = 11, 3
    shards = [list(EpochSampler(size, seed=1, shuffle=train, rank=rank, world_size=world, pad=train))
              for rank in range(world)]
    indices = [[index for _, index in shard] for shard in shards]
    assert [len(shard) for shard in indices] == [len(EpochSampler(size, 1, train, r, world, train)) for r in range(world)]
    if train:  # equal step counts on every rank; every sample at least once
        assert {len(shard) for shard in indices} == {4}
        assert set(sum(indices, [])) == set(range(size))
    else:  # every sample exactly once
        assert sorted(sum(indices, [])) == list(range(size))


def test_evaluation_loaders_shard_by_the_process_group_rank():
    loaders = [MultimodalLoader(NoisyRange(), batch_size=4, collate_fn=list, rank=rank, world_size=2) for rank in (0, 1)]
    seen = sorted(index for loader in loaders for batch in loader for index, _ in batch)
    assert seen == list(range(50))


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_data_resumes_and_reshuffles_per_epoch(workers: int):
    def loader() -> MultimodalLoader:
        return MultimodalLoader(CountingStream(), batch_size=4, num_workers=workers)

    first, second = list(map(list, loader())), None
    reader = loader()
    epochs = [sum(map(list, reader), []) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(40)) and epochs[0] != epochs[1]
    assert sum(first, []) == epochs[0]
    # unsized: Lightning's fetcher is one batch ahead, so the position is that of the batch before the last fetched
    reader = loader()
    iterator = iter(reader)
    taken = [list(next(iterator)) for _ in range(4)]  # the trainer has consumed 3 of these
    state = reader.state_dict()
    second = loader()
    second.load_state_dict(state)
    rest = sum(map(list, second), [])
    assert sum(taken[:3], []) + rest == epochs[0]


def test_lightning_prefetches_exactly_what_the_loader_assumes():
    """Fails if a Lightning upgrade changes how far its training fetcher reads ahead."""
    from lightning.pytorch.loops.fetchers import _PrefetchDataFetcher
    from lightning.pytorch.utilities.combined_loader import CombinedLoader

    class Counting(IterableDataset):
        def __init__(self) -> None:
            self.pulled = 0

        def __iter__(self) -> Iterator[int]:
            for index in range(10):
                self.pulled += 1
                yield index

    for sized in (False, True):
        dataset = Counting()
        loader = DataLoader(list(range(10)) if sized else dataset, batch_size=None)
        if sized:  # count pulls through the sampler of a map-style loader
            pulled = []
            loader = DataLoader(_Recording(pulled), batch_size=None)
        fetcher = _PrefetchDataFetcher()
        fetcher.setup(CombinedLoader(loader, "max_size_cycle"))
        iter(fetcher)
        next(fetcher)
        consumed = len(pulled) if sized else dataset.pulled
        assert consumed - 1 == lightning_prefetch_lag(loader), f"sized={sized}: Lightning read {consumed} for 1 batch"


class _Recording(Dataset):
    def __init__(self, pulled: list[int]) -> None:
        self.pulled = pulled

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> int:
        self.pulled.append(index)
        return index
