"""Base class of split-level metrics that return a dict of scores."""

from __future__ import annotations

from typing import Any, Callable

from torchmetrics import Metric

__all__ = ["SplitMetric"]


class SplitMetric(Metric):
    """A metric computed once over everything collected in an evaluation split (retrieval over all
    embeddings, CIDEr over all captions), returning ``{name: value}``.

    Returns ``{}`` -- silently -- when nothing was collected, e.g. during training, where heads skip
    the (expensive) collection.
    """

    full_state_update = False

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = super()._wrap_compute(compute)

        def compute_or_empty(*args: Any, **kwargs: Any) -> Any:
            if self._update_count == 0:
                return {}
            return wrapped(*args, **kwargs)

        return compute_or_empty
