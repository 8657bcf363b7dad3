"""LightningModule wrapping a :class:`~polyfuse.models.MultimodalModel`."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric, Metric

from polyfuse.batch import Batch
from polyfuse.heads.base import update_valid_metrics, valid_rows_loss
from polyfuse.models.multimodal import FusionFactory, HeadFactory, ModelOutput, MultimodalModel
from polyfuse.distributed import gather_from_ranks, rank_and_world
from polyfuse.training.grad_cache import CachedEmbeddings, batch_chunks
from polyfuse.training.lightning_compat import is_last_train_batch
from polyfuse.training.param_groups import ParameterGroupSettings, apply_lr_scales, parameter_groups

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class PolyfuseLitModule(LightningModule):
    """Train/validate/test a multimodal model; the head supplies loss and metrics.

    Logged names: ``train/loss_step``, ``train/loss_epoch`` (mean over the epoch), ``train/<metric>``,
    ``val/loss``, ``val/<metric>``, ``<test split>/<metric>``.

    Placeholder rows (``batch.valid``, samples that could not be read) are left out of the loss
    (:func:`~polyfuse.heads.base.valid_rows_loss`), of every metric
    (:func:`~polyfuse.heads.base.update_valid_metrics`) and of the epoch loss means (weighted by the
    valid rows); a batch without a valid row still runs forward and backward with loss ``0``, so
    DDP's gradient all-reduce happens on every rank. Auxiliary objectives see the whole batch.

    Epoch accumulators of the training metrics travel in checkpoints (``on_save_checkpoint``), so a
    run resumed mid-epoch reports the same epoch values as an uninterrupted one.

    Args:
        encoders, fusion, head, modalities, fusion_dim, modality_dropout: see :class:`MultimodalModel`.
        optimizer: partial optimizer (``_partial_: true`` in configs), called with the parameters.
        scheduler: optional partial LR scheduler called with the optimizer; ``"cosine"`` builds
            linear warmup + cosine decay over ``trainer.estimated_stepping_batches``, ``"linear"``
            linear warmup + linear decay to 0 (BERT, ViLT).
        warmup_steps: warmup length for ``"cosine"`` / ``"linear"``.
        warmup_ratio: warmup as a fraction of all steps (ViLT: 0.1); overrides ``warmup_steps``.
        model: a ready model (e.g. :meth:`polyfuse.models.ViLT.from_hf`) instead of ``encoders``,
            ``fusion`` and ``head`` (leave those ``None``).
        optimizer_groups: ``model.optimizer_groups`` -- weight-decay exclusions, layer-wise LR decay and a
            head LR multiplier (:class:`~polyfuse.training.param_groups.ParameterGroupSettings`);
            ``None``: one group with every trainable parameter.
        test_names: names of the test dataloaders, in order (e.g. ``["test", "test_real"]``).
        objectives: auxiliary training objectives by name (DCCA, co-learning, ...): modules called as
            ``objective(output: ModelOutput, batch) -> {key: weighted scalar loss}``, or factories
            called with ``dims`` (modality -> encoder width). With the fusion's own
            ``FusionOutput.aux_losses`` they form the auxiliary losses (:meth:`auxiliary_losses`),
            added to the head's loss and logged as ``train/aux/<name>``, ``val/aux/<name>``.
        objective: how the training loss is computed (``model.objective``):
            ``{"grad_cache": {"chunk_size": n}}`` embeds the batch ``n`` rows at a time and
            back-propagates through gradient caching (:mod:`polyfuse.training.grad_cache`; Gao et al.,
            2021): the head's loss over the whole (DDP: global) batch with one chunk's activations in
            memory. For heads whose outputs are per-sample embeddings (contrastive, SigLIP); not with
            auxiliary objectives. ``None`` / ``chunk_size: null``: one forward and backward per batch.
        packing: ``model.packing``, the model-wide "unpad once" switch; the encoder and head configs
            read it (``${oc.select:model.packing,false}``) and pass it to the modules that support it
            (docs/encoders.md). Recorded in the hyperparameters only.
    """

    def __init__(self, encoders: Mapping[str, nn.Module] | None = None, fusion: FusionFactory | None = None,
                 head: HeadFactory | None = None, optimizer: OptimizerFactory | None = None,
                 modalities: Sequence[str] | None = None, fusion_dim: int = 128,
                 scheduler: SchedulerFactory | str | None = "cosine", warmup_steps: int = 50,
                 modality_dropout: nn.Module | None = None, test_names: Sequence[str] = ("test",),
                 objectives: Mapping[str, nn.Module | Callable[..., nn.Module]] | None = None,
                 warmup_ratio: float | None = None, model: MultimodalModel | None = None,
                 optimizer_groups: Mapping[str, Any] | None = None,
                 objective: Mapping[str, Any] | None = None, packing: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoders", "fusion", "head", "optimizer", "scheduler", "modality_dropout",
                                          "objectives", "model"])
        if optimizer is None:
            raise ValueError("PolyfuseLitModule needs an optimizer factory (model.optimizer in configs)")
        if model is not None:
            unused = [name for name, value in (("encoders", encoders), ("fusion", fusion), ("head", head)) if value]
            if unused:
                log.warning("PolyfuseLitModule: a ready model (%s) was given; the configured %s are not used "
                            "(set them to null to silence this)", type(model).__name__, ", ".join(unused))
            if modality_dropout is not None:
                model.modality_dropout = modality_dropout
            self.model = model
        else:
            if not encoders or head is None:
                raise ValueError("PolyfuseLitModule needs `encoders` and `head` (or a ready `model`)")
            self.model = MultimodalModel(encoders, fusion, head, modalities, fusion_dim, modality_dropout)
        dims = {m: int(self.model.encoders[m].out_dim) for m in self.model.modalities}
        self.objectives = nn.ModuleDict({name: obj if isinstance(obj, nn.Module) else obj(dims=dims)
                                         for name, obj in (objectives or {}).items() if obj is not None})
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.warmup_steps, self.warmup_ratio = warmup_steps, warmup_ratio
        self.optimizer_groups = (None if optimizer_groups is None
                                 else ParameterGroupSettings.from_config(optimizer_groups))
        self.test_names = list(test_names)
        self.grad_cache_chunk_size = _grad_cache_chunk_size(objective)
        self._grad_cache_pending: CachedEmbeddings | None = None  # set by training_step, consumed by backward
        if self.grad_cache_chunk_size is not None and len(self.objectives):
            raise ValueError(f"model.objective.grad_cache cannot cache the gradients of auxiliary objectives "
                             f"{list(self.objectives)} (they read the encodings); drop them or the grad cache")
        head_module = self.model.head
        self.train_metrics = head_module.make_metrics("train").clone(prefix="train/")
        self.train_loss = MeanMetric()
        self.val_metrics = head_module.make_metrics("val").clone(prefix="val/")
        self.test_metrics = nn.ModuleList(head_module.make_metrics("test").clone(prefix=f"{n}/")
                                          for n in self.test_names)

    @property
    def monitor(self) -> str:
        return f"val/{self.model.head.monitor}"

    def forward(self, batch: Batch, return_attention: bool = False):
        return self.model(batch, return_attention=return_attention)

    def auxiliary_losses(self, output: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """The fusion's ``aux_losses`` and every objective's losses (as ``<objective>/<key>``), by name."""
        losses = dict(getattr(output.fused, "aux_losses", None) or {})
        for name, objective in self.objectives.items():
            for key, value in objective(output, batch).items():
                losses[f"{name}/{key}"] = value
        return losses

    def _step(self, batch: Batch, stage: str | None = None):
        output = self.model(batch)
        return output, self._loss(output, batch, stage)

    def _loss(self, output: ModelOutput, batch: Batch, stage: str | None = None) -> torch.Tensor:
        """The head's loss (placeholder rows left out) plus the auxiliary losses, logging named terms."""
        loss = valid_rows_loss(self.model.head, output.outputs, batch)
        if isinstance(loss, dict):  # a head may report named terms (per-task losses) besides the loss it optimises
            terms, loss = {k: v for k, v in loss.items() if k != "loss"}, loss["loss"]
            if stage is not None and terms:
                self.log_dict({f"{stage}/{k}": v.detach() for k, v in terms.items()},
                              on_step=False, on_epoch=True, batch_size=batch.num_valid)
        aux = self.auxiliary_losses(output, batch)
        if aux:
            loss = loss + torch.stack([value.to(loss.dtype) for value in aux.values()]).sum()
            if stage is not None:
                self.log_dict({f"{stage}/aux/{name}": value.detach() for name, value in aux.items()},
                              on_step=False, on_epoch=True, batch_size=batch.num_valid)
        return loss

    def _grad_cache_step(self, batch: Batch) -> tuple[ModelOutput, torch.Tensor]:
        """``(whole-batch output, loss)``: the batch embedded chunk by chunk without graphs, the loss on all
        embeddings (its graph ends at them); :meth:`backward` recomputes the chunks and back-propagates."""

        def embed(chunk: Batch) -> Any:
            output = self.model(chunk)
            if getattr(output.fused, "aux_losses", None):
                raise ValueError("model.objective.grad_cache: the fusion returns auxiliary losses, which a "
                                 "gradient cache cannot split into chunks; drop the grad cache for this fusion")
            return output.outputs

        cache = CachedEmbeddings(embed, batch_chunks(batch, self.grad_cache_chunk_size), lambda c: c.batch_size)
        loss = self._loss(ModelOutput({}, None, cache.outputs), batch, "train")
        self._grad_cache_pending = cache
        return ModelOutput({}, None, cache.outputs), loss

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward; with a grad cache, the chunk-by-chunk backward of the pending step.

        ``loss`` arrives scaled as Lightning scales it (``1 / accumulate_grad_batches``, the AMP grad
        scaler), so the cached embedding gradients are too. Under DDP the wrapped model's reducer is
        already armed for this step: every chunk but the last contributes its gradients without firing
        DDP's hooks, and the last chunk's backward all-reduces the sum once.
        """
        cache, self._grad_cache_pending = getattr(self, "_grad_cache_pending", None), None
        if cache is None:
            super().backward(loss, *args, **kwargs)
            return
        wrapped = self._trainer.strategy.model if self._trainer is not None else None
        armed = isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        if armed and getattr(wrapped, "find_unused_parameters", False):
            raise ValueError("model.objective.grad_cache does not work with DDP find_unused_parameters=true "
                             "(the loss reaches the parameters only through the chunks' recompute)")
        cache.backward(loss, parameters=[p for p in self.parameters() if p.requires_grad] if armed else None)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.grad_cache_chunk_size is None:
            output, loss = self._step(batch, "train")
        else:
            output, loss = self._grad_cache_step(batch)
        size = batch.num_valid
        update_valid_metrics(self.model.head, self.train_metrics, output.outputs, batch)
        if size:
            self.train_loss.update(loss.detach(), weight=size)
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        if is_last_train_batch(self._trainer, batch_idx):  # epoch values, logged before validation and the epoch-end hooks
            self.log("train/loss_epoch", self.train_loss.compute(), on_step=False, on_epoch=True,
                     batch_size=max(size, 1))
            self.log_dict(self.train_metrics.compute(), on_step=False, on_epoch=True, batch_size=max(size, 1))
        return loss

    def on_train_epoch_end(self) -> None:
        self.train_metrics.reset()
        self.train_loss.reset()

    def _epoch_accumulators(self) -> dict[str, Metric]:
        metrics: dict[str, Metric] = dict(self.train_metrics.items(keep_base=True, copy_state=False))
        metrics["train_loss"] = self.train_loss
        return metrics

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every rank's epoch accumulators (Lightning calls this on every rank; rank 0 writes)."""
        local = {name: {"state": {key: _on_cpu(value) for key, value in metric.metric_state.items()},
                        "updates": int(metric._update_count)}
                 for name, metric in self._epoch_accumulators().items()}
        checkpoint["train_epoch_accumulators"] = {"ranks": gather_from_ranks(local)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("train_epoch_accumulators", {})
        if "ranks" in saved:  # this rank's own; another process count starts the epoch's sums afresh
            rank, _ = rank_and_world()
            ranks = saved["ranks"]
            saved = ranks[rank] if rank < len(ranks) else {}
        for name, metric in self._epoch_accumulators().items():
            if name in saved:
                for key, value in saved[name]["state"].items():
                    setattr(metric, key, value)
                metric._update_count = saved[name]["updates"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        output, loss = self._step(batch, "val")
        update_valid_metrics(self.model.head, self.val_metrics, output.outputs, batch)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch.num_valid, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values, prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        output, loss = self._step(batch)
        name = self.test_names[dataloader_idx] if dataloader_idx < len(self.test_names) else f"test{dataloader_idx}"
        metrics = self.test_metrics[dataloader_idx]
        update_valid_metrics(self.model.head, metrics, output.outputs, batch)
        self.log(f"{name}/loss", loss, on_epoch=True, batch_size=batch.num_valid, add_dataloader_idx=False,
                 sync_dist=True)

    def on_test_epoch_end(self) -> None:
        # computed here, not logged as metric objects: one metric may return several values (retrieval R@K)
        for metrics in self.test_metrics:
            self.log_dict(metrics.compute())
            metrics.reset()

    def configure_model(self) -> None:
        """Under ``trainer=fsdp`` (:class:`~polyfuse.training.sharding.FSDP2Strategy`): shard the
        model with FSDP2, one unit per transformer block (see ``training/sharding.py``). Called by
        Lightning in every stage before the optimizers are built; a no-op for other strategies."""
        if self.device_mesh is None:
            return
        from polyfuse.training.sharding import shard_lightning_module

        strategy = self.trainer.strategy
        shard_lightning_module(self, getattr(strategy, "unit_classes", None),
                               getattr(strategy, "reshard_after_forward", True))

    def configure_optimizers(self) -> Any:
        if self.optimizer_groups is None:
            optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        else:  # weight-decay exclusions, layer-wise LR decay, head LR multiplier (training/param_groups.py)
            optimizer = apply_lr_scales(self.optimizer_factory(params=parameter_groups(self, self.optimizer_groups)))
        if self.scheduler_factory is None:
            return optimizer
        if self.scheduler_factory in ("cosine", "linear"):
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(
                str(self.scheduler_factory), total, self.warmup_steps, self.warmup_ratio))
        else:
            scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _grad_cache_chunk_size(objective: Mapping[str, Any] | None) -> int | None:
    """``model.objective.grad_cache.chunk_size`` (``None``: no gradient caching), checked."""
    objective = dict(objective or {})
    unknown = sorted(set(objective) - {"grad_cache"})
    if unknown:
        raise ValueError(f"model.objective: unknown keys {unknown}; valid: grad_cache")
    settings = dict(objective.get("grad_cache") or {})
    if sorted(set(settings) - {"chunk_size"}):
        raise ValueError(f"model.objective.grad_cache: unknown keys {sorted(set(settings) - {'chunk_size'})}; "
                         "valid: chunk_size")
    size = settings.get("chunk_size")
    if size is not None and int(size) < 1:
        raise ValueError(f"model.objective.grad_cache.chunk_size must be a positive number of rows, got {size}")
    return None if size is None else int(size)


def _on_cpu(value: Any) -> Any:
    """Metric states (tensors or lists of tensors) on the CPU, for gathering across ranks."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, list):
        return [_on_cpu(item) for item in value]
    return value


def warmup_decay(shape: str, total: int, warmup_steps: int, warmup_ratio: float | None = None) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup over ``warmup_ratio * total`` (or ``warmup_steps``, at
    most half the run), then ``"cosine"`` decay or ``"linear"`` decay to 0 at ``total``."""
    if shape not in ("cosine", "linear"):
        raise ValueError(f"unknown schedule {shape!r}; valid: cosine, linear")
    warmup = int(round(warmup_ratio * total)) if warmup_ratio is not None else min(warmup_steps, total // 2)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        if shape == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + torch.cos(torch.tensor(torch.pi * progress)).item())

    return lr_lambda
