"""``auto`` under DDP: one table of choices for every rank, rank 0's first.

Each rank probes and times on its own (no collective inside a forward: ranks see different shape
buckets, and a collective keyed by shape would deadlock). At a point every rank reaches together
(:func:`polyfuse.attention.auto.sync_choices`, called by the training callback after the first
training batch and at each epoch end) the ranks exchange their tables and merge them the same way:

- parity: a backend stays a candidate for a case only if it passed the probe on every rank that
  probed the case (one faulty GPU disqualifies it everywhere);
- choices: each bucket takes the choice of the lowest rank that measured it (rank 0's when it did),
  replaced by the bucket's safe choice (``sdpa`` or the reference; ``padded`` for a packed call) when
  that backend failed parity on some rank.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch.distributed as dist

Tables = dict[str, dict]


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_tables(local: Tables) -> list[Tables]:
    """Every rank's ``local`` in rank order (a collective: every rank must call it)."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def merge_tables(tables: Sequence[Tables], parity_key: Callable[[Hashable], Hashable],
                 safe_choice: Callable[[Hashable, list[str]], str]) -> Tables:
    """The merged ``{"choices": {bucket: backend}, "parity": {case: [backends]}}`` (see module docstring);
    ``parity_key`` maps a bucket key to its case's parity key, ``safe_choice(bucket, passing)`` names
    what replaces a choice that failed parity somewhere."""
    parity: dict[Hashable, list[str]] = {}
    for table in tables:
        for case, names in table["parity"].items():
            parity[case] = [name for name in parity[case] if name in names] if case in parity else list(names)
    choices: dict[Hashable, str] = {}
    for table in tables:
        for bucket, name in table["choices"].items():
            choices.setdefault(bucket, name)
    for bucket, name in choices.items():
        passing = parity.get(parity_key(bucket))
        if passing is not None and name not in passing:
            choices[bucket] = safe_choice(bucket, passing)
    return {"choices": choices, "parity": parity}
