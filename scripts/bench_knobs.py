"""Memory/speed knobs measured side by side: activation checkpointing, channels-last, torch.compile,
mixed precision, on one training step of the polyfuse model (forward, loss, backward, AdamW).

    python scripts/bench_knobs.py                          # CPU: baseline, checkpointing, channels-last, compile
    python scripts/bench_knobs.py --variants baseline bf16 bf16+compile fp16   # GPU: precision and compile
    python scripts/bench_knobs.py --overrides data.batch_size=32 model.encoders.image.depth=12

The model is ``configs/train.yaml`` composed with ``--overrides`` (default: a wider AV-digits model
with early fusion, so fusion blocks exist to checkpoint), trained on one real AV-digits batch.
Per variant it prints the median step time, the activation memory saved for backward (what
checkpointing trades), the peak memory of a step (CUDA: ``max_memory_allocated``; CPU: peak of live
tensors tracked by torch's ``MemTracker``), and ratios to the baseline.
Variants take turns step by step, so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable

import hydra
import torch
from hydra import compose, initialize_config_dir

from polyfuse.attention import set_default_backend
from polyfuse.cli.config import config_dir
from polyfuse.training.performance import PerformanceKnobs

DEFAULT_OVERRIDES = [
    "model/fusion=early", "data.batch_size=16", "data.augment=false",
    "model.encoders.image.dim=128", "model.encoders.image.depth=4", "model.encoders.image.heads=4",
    "model.encoders.text.dim=128", "model.encoders.text.depth=2", "model.encoders.text.heads=4",
    "model.encoders.audio.channels=[32,64,128]", "model.encoders.audio.convs_per_block=2",
]
CHECKPOINTED = ["encoders.image", "encoders.text", "fusion.blocks.*"]
# variant -> (PerformanceKnobs arguments, autocast dtype or None); fp16 also scales the loss
VARIANTS: dict[str, tuple[dict[str, Any], torch.dtype | None]] = {
    "baseline": ({}, None),
    "checkpointing": ({"grad_checkpointing": CHECKPOINTED}, None),
    "channels_last": ({"channels_last": True}, None),
    "compile": ({"compile": True}, None),
    "bf16": ({}, torch.bfloat16),
    "bf16+compile": ({"compile": True}, torch.bfloat16),
    "bf16+channels_last": ({"channels_last": True}, torch.bfloat16),
    "bf16+checkpointing": ({"grad_checkpointing": CHECKPOINTED}, torch.bfloat16),
    "fp16": ({}, torch.float16),
}


def build(overrides: list[str], device: str, attention_backend: str) -> tuple[Callable[[], Any], Any]:
    """``(make_module, batch)``: a factory of identically initialised LightningModules, one real batch."""
    set_default_backend(attention_backend)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader())).to(device)

    def make() -> Any:
        torch.manual_seed(0)
        return hydra.utils.instantiate(cfg.model).to(device).train()

    return make, batch


class Contender:
    """One variant: its own model, optimizer and (for fp16) loss scaler; ``step()`` = one training step."""

    def __init__(self, name: str, make: Callable[[], Any], batch: Any, device: str) -> None:
        knobs, self.dtype = VARIANTS[name]
        self.name, self.batch, self.device = name, batch, device
        self.module = make()
        PerformanceKnobs(**knobs).apply(self.module.model)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-4)
        self.scaler = torch.amp.GradScaler(device) if self.dtype == torch.float16 else None
        self.times: list[float] = []

    def _autocast(self):
        return torch.autocast(self.device, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def step(self) -> float:
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        with self._autocast():
            _, loss = self.module._step(self.batch)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    def saved_activation_bytes(self) -> int:
        saved: list[int] = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), self._autocast():
            _, loss = self.module._step(self.batch)
        del loss
        return sum(saved)

    def cuda_peak_bytes(self) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.step()
        return torch.cuda.max_memory_allocated() - before


def tracked_peak_bytes(contender: Contender) -> int | None:
    """Peak bytes of live tensors during one step (parameters, gradients, optimizer state,
    activations, temporaries), from torch's ``MemTracker`` (a private API of torch 2.5+): a
    device-independent measure, used on CPU where there is no ``max_memory_allocated``."""
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None
    tracker = MemTracker()
    tracker.track_external(contender.module, contender.optimizer)
    try:
        with tracker:
            contender.step()
    except Exception as error:  # noqa: BLE001 - e.g. a compiled graph the tracker cannot follow
        print(f"  MemTracker failed for {contender.name}: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    snapshot = tracker.get_tracker_snapshot("peak")
    return int(sum(stats.get("Total", 0) if isinstance(stats, dict) else 0 for stats in snapshot.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=["baseline", "checkpointing", "channels_last", "compile"],
                        choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation happens here)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--attention-backend", default="sdpa",
                        help="fixed, so that attention's `auto` timing stays out of the measurement")
    parser.add_argument("--overrides", nargs="*", default=DEFAULT_OVERRIDES)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = ["baseline"] + [v for v in args.variants if v != "baseline"]
    make, batch = build(args.overrides, args.device, args.attention_backend)
    contenders = [Contender(name, make, batch, args.device) for name in variants]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device_name}; torch {torch.__version__}; batch {batch.batch_size}; "
          f"{sum(p.numel() for p in contenders[0].module.parameters()) / 1e6:.2f} M parameters")
    print(f"overrides: {' '.join(args.overrides)}")
    for contender in contenders:
        for _ in range(args.warmup):
            contender.step()
    for _ in range(args.steps):  # take turns
        for contender in contenders:
            contender.times.append(contender.step())
    rows = []
    for contender in contenders:
        saved = contender.saved_activation_bytes()
        peak = contender.cuda_peak_bytes() if args.device == "cuda" else tracked_peak_bytes(contender)
        rows.append((contender.name, statistics.median(contender.times), saved, peak))
    base_time, base_saved, base_peak = rows[0][1:]
    print(f"{'variant':20s} {'step ms':>9s} {'x base':>7s} {'activations MB':>15s} {'x base':>7s} "
          f"{'peak MB':>9s} {'x base':>7s}")
    for name, seconds, saved, peak in rows:
        peak_text = f"{peak / 2**20:9.1f} {peak / base_peak:6.2f}x" if peak and base_peak else f"{'n/a':>9s} {'':>7s}"
        print(f"{name:20s} {seconds * 1e3:9.1f} {seconds / base_time:6.2f}x {saved / 2**20:15.1f} "
              f"{saved / base_saved:6.2f}x {peak_text}")


if __name__ == "__main__":
    main()
