"""A CLIP-style two-tower model trained for one step and evaluated with Lightning DDP on 2 CPU
processes (gloo); run by test_equivalence.py, which compares it with one process on the global batch.

Usage: ``python contrastive_worker.py OUT_DIR``. Lightning starts rank 1 by re-running the command.
For each loss setting every rank fits one step (per-rank batch ``BATCH_PER_RANK``) and records its
loss and the gradients *after* DDP's all-reduce; it fits three steps with a NaN batch on rank 1
only (NonFiniteGuard must skip that step on both ranks); then it evaluates retrieval recall on an
evaluation set of odd size (uneven shards). Results: ``OUT_DIR/rank{R}.pt`` (losses, gradients)
and ``OUT_DIR/retrieval_rank{R}.pt`` (recall).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from polyfuse.attention import set_default_backend
from polyfuse.batch import ModalityInput
from polyfuse.encoders import TextTransformerEncoder, ViTEncoder
from polyfuse.losses import ContrastiveLoss
from polyfuse.metrics import RetrievalRecall
from polyfuse.training.nan_guard import NonFiniteGuard
from polyfuse.data.loader import MultimodalLoader

WORLD_SIZE, BATCH_PER_RANK, EVAL_SIZE, VOCAB, LENGTH = 2, 6, 37, 50, 10
# (local_loss, gather_with_grad): open_clip's settings that give the global-batch gradient, and its default
SETTINGS = [(False, True), (True, True), (False, False)]


def synthetic_pairs(count: int, seed: int) -> TensorDataset:
    """``count`` (image (1, 16, 16), token ids (LENGTH,), padding mask (LENGTH,)) triples."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, 16, 16, generator=g)
    lengths = torch.randint(3, LENGTH + 1, (count,), generator=g)
    mask = torch.arange(LENGTH)[None, :] < lengths[:, None]
    tokens = torch.randint(1, VOCAB, (count, LENGTH), generator=g) * mask
    return TensorDataset(images, tokens, mask)


class TwoTower(L.LightningModule):
    """ViT + text transformer towers, linear projections, learnable temperature, InfoNCE."""

    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = ViTEncoder(image_size=16, patch_size=4, in_chans=1, dim=32, depth=2, heads=2, mlp_ratio=2.0)
        self.text = TextTransformerEncoder(vocab_size=VOCAB, max_length=LENGTH, dim=32, depth=1, heads=2,
                                           mlp_ratio=2.0, dropout=0.0)
        self.project = nn.ModuleDict({"image": nn.Linear(32, 16, bias=False), "text": nn.Linear(32, 16, bias=False)})
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.loss_fn = ContrastiveLoss(local_loss=local_loss, gather_with_grad=gather_with_grad)
        self.recall = RetrievalRecall([("image", "text")], ks=(1, 5, 10))
        self.losses: list[Tensor] = []
        self.grads: dict[str, Tensor] = {}
        self.metrics: dict[str, float] = {}

    def embed(self, images: Tensor, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        image = self.image(ModalityInput(images)).pooled()
        text = self.text(ModalityInput(tokens, mask=mask)).pooled()
        return (F.normalize(self.project["image"](image), dim=-1), F.normalize(self.project["text"](text), dim=-1))

    def forward(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        return self.embed(*batch)

    def loss(self, batch: list[Tensor]) -> Tensor:
        image, text = self.embed(*batch)
        return self.loss_fn(image, text, self.log_scale.exp())

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self.losses.append(loss.detach().clone())
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.grads = {name: p.grad.detach().clone() for name, p in self.named_parameters() if p.grad is not None}

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        image, text = self.embed(*batch)
        self.recall.update({"image": image, "text": text})

    def on_validation_epoch_end(self) -> None:
        self.metrics = {k: float(v) for k, v in self.recall.compute().items()}  # gathers every rank's embeddings
        self.recall.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(synthetic_pairs(WORLD_SIZE * BATCH_PER_RANK, seed=1), batch_size=BATCH_PER_RANK)

    def val_dataloader(self) -> DataLoader:
        dataset = synthetic_pairs(EVAL_SIZE, seed=2)
        return MultimodalLoader(dataset, batch_size=8)  # evaluation: an unpadded shard per rank


class PoisonRank(L.Callback):
    """NaN images in rank ``rank``'s batch at global step ``step`` only."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            batch[0].fill_(float("nan"))


def fit_with_a_nan_on_one_rank() -> dict[str, object]:
    """Three steps, rank 1's batch of step 1 is NaN: what NonFiniteGuard did on this rank."""
    model, guard = TwoTower(), NonFiniteGuard(max_consecutive=2)
    trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=DDPStrategy(process_group_backend="gloo"),
                        max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[guard, PoisonRank(rank=1, step=1)])
    trainer.fit(model)
    return {"skipped": guard.skipped_steps, "report": guard.last_report, "steps": trainer.global_step,
            "params": {name: p.detach().clone() for name, p in model.named_parameters()}}


def main() -> None:
    out = Path(sys.argv[1])
    set_default_backend("sdpa")
    results: dict[str, object] = {}
    trainer = None
    for local_loss, gather_with_grad in SETTINGS:
        model = TwoTower(local_loss, gather_with_grad)
        trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=DDPStrategy(process_group_backend="gloo"),
                            max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model)
        results[f"local{int(local_loss)}-grad{int(gather_with_grad)}"] = (model.losses[0], model.grads)
    results["nan_guard"] = fit_with_a_nan_on_one_rank()
    torch.save(results, out / f"rank{trainer.global_rank}.pt")
    model = TwoTower()
    trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=DDPStrategy(process_group_backend="gloo"),
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model)
    torch.save(model.metrics, out / f"retrieval_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
