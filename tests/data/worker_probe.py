"""A dataset that reports what a DataLoader worker holds (test_worker_startup.py); imports no Lightning."""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy
import torch
from torch.utils.data import Dataset


class WorkerProbe(Dataset):
    """Each item: the worker's id, whether Lightning is imported there, and a draw of each global RNG."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        lightning = any(name == "lightning" or name.startswith("lightning.") for name in sys.modules)
        return {"worker": info.id, "lightning": lightning, "draws": (random.random(), float(torch.rand(())),
                                                                     float(numpy.random.rand()))}
