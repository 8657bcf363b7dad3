"""Finding where a non-finite value (NaN / inf) first appears in a forward pass."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["non_finite_tensors", "locate_non_finite"]


def non_finite_tensors(value: Any, path: str = "batch") -> Iterator[tuple[str, Tensor]]:
    """``(path, tensor)`` for every floating tensor holding a NaN or inf, walking dataclasses (such as
    :class:`~polyfuse.batch.Batch`), mappings and sequences; paths read like ``batch.inputs['image'].values``."""
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            if not bool(torch.isfinite(value.detach()).all()):
                yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from non_finite_tensors(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite_tensors(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from non_finite_tensors(item, f"{path}[{index}]")


def _describe(path: str, tensor: Tensor) -> str:
    bad = int((~torch.isfinite(tensor.detach())).sum())
    return f"{path} ({bad} of {tensor.numel()} entries)"


def locate_non_finite(module: nn.Module, batch: Any,
                      forward: Callable[[nn.Module, Any], Any] | None = None) -> str | None:
    """Re-run ``forward(module, batch)`` (default ``module(batch)``) and name the first submodule whose
    output is non-finite, or ``None`` when the whole forward pass is finite.

    Forward hooks fire when a module *finishes*, so the first report is the innermost, earliest
    module that produced the value. When the batch itself already holds non-finite values this is
    said first (values that no module reads, such as an absent modality's padding, are not blamed
    unless an output turns non-finite). Runs under ``no_grad`` in the module's current train/eval
    mode, with the RNG forked and every buffer (batch-norm statistics) restored afterwards, so
    training is not perturbed.
    """
    first: list[str] = []

    def watch(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(child: nn.Module, inputs: Any, output: Any) -> None:
            if not first:
                found = next(non_finite_tensors(output, "output"), None)
                if found is not None:
                    first.append(f"module '{name or '<root>'}' ({type(child).__name__}), {_describe(*found)}")
        return hook

    handles = [child.register_forward_hook(watch(name)) for name, child in module.named_modules()]
    buffers = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"][:1]
    failure = ""
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            (forward or (lambda m, b: m(b)))(module, batch)
    except Exception as error:  # noqa: BLE001 - a diagnosis must never kill training
        failure = f"{type(error).__name__}: {error}"
    finally:
        for handle in handles:
            handle.remove()
        for name, buffer in module.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])
    if not first:
        return f"could not re-run the forward pass to locate it ({failure})" if failure else None
    in_batch = [_describe(path, tensor) for path, tensor in non_finite_tensors(batch)]
    prefix = f"the input batch holds non-finite values: {', '.join(in_batch)}; " if in_batch else ""
    return f"{prefix}first non-finite output in {first[0]}"
