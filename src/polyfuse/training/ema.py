"""Exponential moving average of the weights, as a Lightning callback (``callbacks/ema.yaml``).

``ema = decay_t * ema + (1 - decay_t) * weights`` after every ``every_n_steps``-th optimiser step
(Polyak & Juditsky, 1992; the ``ModelEmaV3`` recipe of timm): with ``warmup``, ``decay_t = min(decay,
1 - (1 + t / warmup_gamma) ^ -warmup_power)`` at the ``t``-th update, so early averages are not
dominated by the random initialisation. Floating-point parameters are averaged (in fp32); buffers
(BatchNorm running statistics, counters) are copied from the model at each update.

Evaluation: with ``validate=True`` the EMA weights are **swapped in for validation** (the training
weights are put back afterwards), so ``val/*`` metrics -- and the checkpoint monitor -- are those of
the EMA weights; with ``test=True`` (the default) the same for ``trainer.test``: ``test/*`` metrics are
those of the EMA weights **saved with the checkpoint being tested** (``polyfuse-train`` tests
``best.ckpt``, whose callback state Lightning restores), or of the current average when testing the
module as it is. After training, :func:`evaluation_weights` makes the same choice for
``polyfuse-eval`` and every loader built on :func:`polyfuse.training.run_dir.load_model`: a run whose
``config.yaml`` has this callback with ``test: true`` is evaluated with the EMA weights of its
``best`` / ``last`` checkpoint (``polyfuse-eval ema=false``: the training weights). Checkpoints hold the training weights as usual plus the EMA weights in this
callback's state (``checkpoint["callbacks"]``), restored on resume (exact resume holds: a resumed
run reproduces the EMA weights of an uninterrupted one, tested). At the end of fitting, rank 0
writes ``checkpoints/ema.safetensors`` (a full state dict of the LightningModule): load it with
``polyfuse.load(run_dir, checkpoint="<run_dir>/checkpoints/ema.safetensors")`` or
``polyfuse-eval ... checkpoint=<that file>``; :func:`ema_state_dict` reads the EMA weights out of
any ``.ckpt`` (``best.ckpt`` included).

Not covered: FSDP (sharded parameters) and ``torch.compile``-d modules are not tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

__all__ = ["EMAWeights", "ema_state_dict", "trained_with_ema", "evaluation_weights"]

STATE_KEY = "EMAWeights"


class EMAWeights(Callback):
    """Keep an exponential moving average of the LightningModule's weights; validate with it.

    Args:
        decay: the decay once warmed up (timm / open_clip recipes: 0.9998 - 0.9999).
        warmup: ramp the decay up as ``1 - (1 + t / warmup_gamma) ^ -warmup_power`` (timm ModelEmaV3).
        warmup_gamma, warmup_power: that ramp's constants (timm's defaults: 1 and 2/3).
        every_n_steps: update after every n-th optimiser step (the decay applies per update).
        start_step: the first optimiser step at which the average starts (copied from the weights).
        validate: swap the EMA weights in for validation (``val/*`` are then the EMA's metrics).
        test: swap the EMA weights in for testing (``test/*`` are then the EMA's metrics), and have
            :func:`evaluation_weights` (``polyfuse-eval``, ``load_model``) pick them for this run.
        save_weights: write ``checkpoints/ema.safetensors`` at the end of fitting (next to the run's
            other checkpoints: the first ModelCheckpoint's ``dirpath``, else ``<default_root_dir>/checkpoints``).
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, warmup_gamma: float = 1.0,
                 warmup_power: float = 2 / 3, every_n_steps: int = 1, start_step: int = 0, validate: bool = True,
                 save_weights: bool = True, test: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"callbacks.ema.decay must be in [0, 1), got {decay}")
        if every_n_steps < 1:
            raise ValueError(f"callbacks.ema.every_n_steps must be >= 1, got {every_n_steps}")
        self.decay, self.warmup, self.warmup_gamma, self.warmup_power = decay, warmup, warmup_gamma, warmup_power
        self.every_n_steps, self.start_step = every_n_steps, start_step
        self.validate, self.save_weights, self.test = validate, save_weights, test
        self.weights: dict[str, Tensor] | None = None   # state-dict name -> EMA value (params) or copy (buffers)
        self.updates, self.last_step = 0, -1
        self._backup: dict[str, Tensor] | None = None

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def decay_at(self, update: int) -> float:
        """The decay of the ``update``-th update (1-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + update / self.warmup_gamma) ** -self.warmup_power)

    # -- updating ---------------------------------------------------------------------------------

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.last_step or step <= self.start_step:  # no optimiser step since (gradient accumulation)
            return
        self.last_step = step
        if step % self.every_n_steps:
            return
        state = pl_module.state_dict()
        if self.weights is None:
            self.weights = {name: value.detach().clone().float() if value.is_floating_point() else value.clone()
                            for name, value in state.items()}
            return
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        params = {name for name, p in pl_module.named_parameters()}
        averaged = [name for name in self.weights if name in params and self.weights[name].is_floating_point()]
        if averaged:
            torch._foreach_lerp_([self.weights[n] for n in averaged],
                                 [state[n].detach().to(self.weights[n].device, torch.float32) for n in averaged],
                                 weight)
        for name, value in state.items():
            if name not in params and name in self.weights:
                self.weights[name].copy_(value)

    # -- evaluating -------------------------------------------------------------------------------

    def _swap_in(self, pl_module: LightningModule, enabled: bool) -> None:
        if not enabled or self.weights is None or self._backup is not None:
            return
        self._backup = {name: value.detach().clone() for name, value in pl_module.state_dict().items()}
        _load(pl_module, self.weights)

    def _swap_out(self, pl_module: LightningModule) -> None:
        if self._backup is not None:
            _load(pl_module, self._backup)
            self._backup = None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_in(pl_module, self.validate)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning runs ModelCheckpoint callbacks last: the checkpoint written after this holds the
        # training weights again
        self._swap_out(pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # trainer.test(ckpt_path=...) has restored this callback's state from that checkpoint: the
        # EMA weights saved with the tested weights
        self._swap_in(pl_module, self.test)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_out(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._swap_out(pl_module)

    # -- checkpointing ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        weights = None if self.weights is None else {k: v.detach().cpu() for k, v in self.weights.items()}
        return {"weights": weights, "updates": self.updates, "last_step": self.last_step, "decay": self.decay}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.weights = None if state_dict["weights"] is None else dict(state_dict["weights"])
        self.updates, self.last_step = int(state_dict["updates"]), int(state_dict["last_step"])

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.weights is not None:  # restored from a checkpoint: on the model's device
            device = next(iter(pl_module.state_dict().values())).device
            self.weights = {name: value.to(device) for name, value in self.weights.items()}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.save_weights or self.weights is None or not trainer.is_global_zero:
            return
        from safetensors.torch import save_file

        path = checkpoint_dir(trainer) / "ema.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.weights.items()}, str(path))


def checkpoint_dir(trainer: Trainer) -> Path:
    """Where the run's checkpoints go: the first ModelCheckpoint's ``dirpath``, else the root dir's ``checkpoints/``."""
    for callback in trainer.checkpoint_callbacks:
        dirpath = getattr(callback, "dirpath", None)
        if dirpath:
            return Path(dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def _load(pl_module: LightningModule, weights: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, value in pl_module.state_dict().items():
            if name in weights:
                value.copy_(weights[name])


def ema_state_dict(checkpoint: str | Path | dict[str, Any]) -> dict[str, Tensor]:
    """The EMA weights saved in a Lightning checkpoint (a path or the loaded dict), as a state dict of the
    LightningModule (``module.load_state_dict(ema_state_dict("best.ckpt"))``)."""
    source = "the checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if not isinstance(checkpoint, dict):
        from polyfuse.training.checkpoint_io import read_checkpoint

        checkpoint = read_checkpoint(checkpoint)
    state = (checkpoint.get("callbacks") or {}).get(STATE_KEY)
    if state is None or state.get("weights") is None:
        raise KeyError(f"{source} holds no EMA weights (trained without callbacks.ema, or saved before its "
                       f"first update); its callback states: {sorted(checkpoint.get('callbacks') or {})}")
    return dict(state["weights"])


def trained_with_ema(cfg: Mapping[str, Any]) -> bool:
    """Whether a run's config (``config.yaml``) has an :class:`EMAWeights` callback that tests with the
    EMA weights (its ``test`` option, default true)."""
    for callback in dict(cfg.get("callbacks") or {}).values():
        if isinstance(callback, Mapping) and str(callback.get("_target_", "")).endswith(f".{EMAWeights.__name__}"):
            return bool(callback.get("test", True))
    return False


def evaluation_weights(run_dir: str | Path, checkpoint: str, cfg: Mapping[str, Any],
                       ema: bool | None = None) -> dict[str, Tensor]:
    """The state dict a finished run is evaluated with (``polyfuse-eval``, ``load_model``).

    ``ema=None`` follows the run (:func:`trained_with_ema`): the EMA weights when it tested with them,
    else the training weights. With EMA, ``best`` / ``last`` read the EMA weights saved in
    ``checkpoints/<name>.ckpt`` (the ``.safetensors`` export holds the training weights), a ``.ckpt``
    path its EMA weights; a ``.safetensors`` path is one set of weights and loads as it is (e.g.
    ``checkpoints/ema.safetensors``). A checkpoint written before the average's first update holds no
    EMA weights: with ``ema=None`` its training weights are used (as validation did), with
    ``ema=True`` that is an error.
    """
    from polyfuse.training.run_dir import CHECKPOINTS, checkpoint_file, load_weights

    use_ema = trained_with_ema(cfg) if ema is None else bool(ema)
    if not use_ema:
        return load_weights(checkpoint_file(run_dir, checkpoint))
    if checkpoint in ("best", "last"):
        path = Path(run_dir) / CHECKPOINTS / f"{checkpoint}.ckpt"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir}: no {checkpoint}.ckpt in {CHECKPOINTS}/ to read the EMA weights "
                                    "from (ema=false evaluates the training weights)")
    else:
        path = checkpoint_file(run_dir, checkpoint)
        if path.suffix == ".safetensors":
            return load_weights(path)
    try:
        return ema_state_dict(path)
    except KeyError:
        if ema:
            raise
        return load_weights(path)
