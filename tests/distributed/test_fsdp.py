"""FSDP2 (``trainer=fsdp_sim``: 2 CPU processes, gloo) trains the same weights as DDP and as one
process on the global batch, resumes exactly from a sharded checkpoint, and runs from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from polyfuse.attention import get_default_backend, set_default_backend
from polyfuse.encoders.transformer import TransformerBlock
from polyfuse.fusion.blocks import ContextAttention, FeedForward
from polyfuse.training.checkpoint_io import is_sharded_checkpoint, match_parameter_shapes, read_checkpoint
from polyfuse.training.sharding import FSDP_UNIT_CLASSES, promote_scalar_parameters

from . import fsdp_worker as worker
from .harness import clean_env, run_worker, tail

# fp32 on CPU, after worker.STEPS steps. FSDP2 reduce-scatters where DDP all-reduces, and one process
# reduces the global batch in another order, so weights may differ in the last bits. Measured
# (docs/scaling.md#fsdp): FSDP2 == DDP bit for bit; FSDP2 vs one process <= 1.5e-8 (multimodal,
# SGD) and <= 6.6e-7 (CLIP, AdamW) on the weights that AdamW does not amplify (below).
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
# AdamW steps by lr * m_hat / (sqrt(v_hat) + eps). Where 0 < sqrt(v_hat) < eps, the step is no longer
# normalised (~lr * g / eps), and a gradient that is itself at the rounding-noise level (one process vs
# 2 ranks reduce in another order: gradients differ by <= 4.7e-7 absolute on CLIP's token embedding)
# comes out up to lr / eps = 1e3 times larger in the weight. That happens where the exact gradient is
# zero (attention key biases: softmax ignores q.b) or tiny on the first step a row is used (token 18,
# first seen in batch 2, gradient entry 1.99e-7 in one process and 2.78e-7 with 2 ranks: the weights
# then differ by 1.25e-5). Such elements are found from the one-process run, not by name, and compared
# with NOISE_TOLERANCE, still far below the ~lr step a wrong update makes. Elements that never got a
# gradient (v_hat == 0: unused tokens) only decay, identically, and stay under TOLERANCE.
NOISE_TOLERANCE = dict(rtol=0.0, atol=1e-4)
# at most this fraction of the elements may be noise-amplified, so the comparison stays tight (CLIP: 1.2%)
MAX_NOISY_FRACTION = 0.03


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run fsdp_worker.py once (Lightning starts its second rank); ``(output dir, log tail)``."""
    out = tmp_path_factory.mktemp("fsdp")
    proc = run_worker(worker, out, timeout=900)
    return out, tail(proc.stdout + proc.stderr)


def _load(fsdp_run, name: str):
    out, log = fsdp_run
    path = out / name
    assert path.is_file(), f"the FSDP worker did not write {name}:\n{log}"
    return torch.load(path, weights_only=False)


@pytest.fixture
def sdpa_backend():
    previous = get_default_backend()
    set_default_backend("sdpa")
    yield
    set_default_backend(previous)


class RecordEpsDominated(L.Callback):
    """Per parameter, the elements whose AdamW denominator was dominated by ``eps`` on some step
    (``0 < sqrt(v_hat) < eps``); optimizers without ``exp_avg_sq`` (SGD) record nothing."""

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        names = {param: name for name, param in pl_module.named_parameters()}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    state = optimizer.state.get(param, {})
                    if "exp_avg_sq" not in state:
                        continue
                    root = (state["exp_avg_sq"] / (1 - group["betas"][1] ** float(state["step"]))).sqrt()
                    dominated = (root > 0) & (root < group["eps"])
                    self.masks[names[param]] = dominated | self.masks.get(names[param], dominated)


def _single_process(name: str, batches) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Weights, losses and eps-dominated AdamW elements (RecordEpsDominated) of one process fitting the
    global batches (same clipping, no sampler)."""
    module, record, noisy = worker.build_module(name), worker.RecordLosses(), RecordEpsDominated()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, gradient_clip_val=1.0, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[record, noisy])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (_clean_env): CPU kernels split their sums by thread count
    try:
        trainer.fit(module, train_dataloaders=worker.loader(batches, None))
    finally:
        torch.set_num_threads(threads)
    return module.state_dict(), torch.stack(record.losses), noisy.masks


def _assert_weights_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str,
                          noisy_elements: dict[str, torch.Tensor] | None = None) -> None:
    """Every weight within TOLERANCE, except ``noisy_elements`` (boolean masks by name) within
    NOISE_TOLERANCE; at most MAX_NOISY_FRACTION of all elements may be noisy."""
    assert actual.keys() == expected.keys(), what
    noisy_total, total = 0, 0
    for key, value in expected.items():
        actual_value = actual[key].reshape(value.shape)
        total += value.numel()
        noisy = (noisy_elements or {}).get(key)
        if noisy is not None and noisy.any():
            noisy_total += int(noisy.sum())
            torch.testing.assert_close(actual_value[noisy], value[noisy], **NOISE_TOLERANCE,
                                       msg=f"{what}: {key} (noise-amplified elements)")
            actual_value, value = actual_value[~noisy], value[~noisy]
        torch.testing.assert_close(actual_value, value, **TOLERANCE, msg=f"{what}: {key}")
    assert noisy_total <= MAX_NOISY_FRACTION * total, f"{what}: {noisy_total} of {total} elements noise-amplified"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(worker.MODELS))
def test_fsdp_weights_equal_ddp_and_one_process(fsdp_run, sdpa_backend, name: str):
    ranks = [_load(fsdp_run, f"rank{rank}.pt") for rank in range(worker.WORLD_SIZE)]
    ddp, fsdp = _load(fsdp_run, f"weights_{name}_ddp.pt"), _load(fsdp_run, f"weights_{name}_fsdp.pt")
    initial = worker.build_module(name).state_dict()
    moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(ddp[k], v)]
    assert len(moved) > 10, "training changed (almost) no weight: the comparison would be vacuous"
    _assert_weights_close(fsdp, ddp, f"{name}: FSDP vs DDP")
    single, single_losses, noisy = _single_process(name, _load(fsdp_run, "batches.pt")[name])
    _assert_weights_close(fsdp, single, f"{name}: FSDP vs one process", noisy)
    for rank in ranks:  # every rank's loss per step is FSDP == DDP
        torch.testing.assert_close(rank[f"{name}/fsdp"], rank[f"{name}/ddp"], **TOLERANCE)
    if name == "clip":  # the contrastive loss all-gathers: every rank's loss is the global batch's loss
        for rank in ranks:
            torch.testing.assert_close(rank["clip/fsdp"], single_losses, **TOLERANCE)
    else:  # a mean over samples: the ranks' mean is the global batch's loss
        torch.testing.assert_close(torch.stack([r[f"{name}/fsdp"] for r in ranks]).mean(0), single_losses, **TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(worker.MODELS))
def test_every_transformer_block_is_its_own_unit(fsdp_run, name: str):
    for rank in range(worker.WORLD_SIZE):  # each rank holds about half of every parameter
        assert _load(fsdp_run, f"rank{rank}.pt")[f"{name}/local_fraction"] == pytest.approx(0.5, abs=0.01)
    units = _load(fsdp_run, "rank0.pt")[f"{name}/units"]
    module = worker.build_module(name)
    blocks = [n for n, m in module.named_modules() if isinstance(m, FSDP_UNIT_CLASSES)]
    assert blocks and sorted(units) == sorted(["model", *blocks])
    if name == "multimodal":  # encoder blocks and the fusion's cross-attention and feed-forward layers
        kinds = {type(m) for m in module.modules() if isinstance(m, FSDP_UNIT_CLASSES)}
        assert kinds == {TransformerBlock, ContextAttention, FeedForward}


@pytest.mark.slow
def test_resume_from_sharded_checkpoint_equals_uninterrupted_run(fsdp_run):
    out, _ = fsdp_run
    checkpoint = out / "ckpt" / "last.ckpt"
    assert is_sharded_checkpoint(checkpoint), f"{checkpoint} is not a sharded checkpoint directory"
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    weights = _load(fsdp_run, "weights_resume.pt")
    assert _load(fsdp_run, "rank0.pt")["resume/steps"] == 4  # 2 epochs x 2 batches, 2 of them after the restart
    for key, value in weights["uninterrupted"].items():  # same operations in the same order: bit-exact
        assert torch.equal(weights["resumed"][key], value), key
    # the shards read back in one process, without a process group, load strictly into a plain model
    saved = read_checkpoint(checkpoint)
    assert saved["global_step"] == 2 and "optimizer_0" in saved
    module = worker.build_module("clip")
    module.load_state_dict(match_parameter_shapes(saved["state_dict"], module))


def test_weight_comparison_loosens_only_noise_amplified_elements():
    expected = {"w": torch.zeros(4, 8), "b": torch.zeros(8)}
    noisy = {"w": torch.zeros(4, 8, dtype=torch.bool)}
    noisy["w"][1, 2] = True
    _assert_weights_close({"w": expected["w"] + 5e-7, "b": expected["b"]}, expected, "rounding", noisy)
    near = {"w": expected["w"].clone(), "b": expected["b"]}
    near["w"][1, 2] = 5e-5  # AdamW-amplified noise on a flagged element
    _assert_weights_close(near, expected, "noise", noisy)
    for row, column, error in ((1, 2, 1e-3), (0, 2, 5e-6)):  # a real step on a flagged / an unflagged element
        wrong = {"w": expected["w"].clone(), "b": expected["b"]}
        wrong["w"][row, column] = error
        with pytest.raises(AssertionError, match="wrong: w"):
            _assert_weights_close(wrong, expected, "wrong", noisy)
    with pytest.raises(AssertionError, match="noise-amplified"):  # a mask that exempts (almost) everything
        _assert_weights_close(expected, expected, "vacuous", {"w": torch.ones(4, 8, dtype=torch.bool)})


def test_eps_dominated_elements_are_found_from_the_optimizer_state():
    """An element whose gradient is below eps (zero in exact arithmetic, here 1e-8) is flagged; one
    that never had a gradient is not."""
    layer = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3, eps=1e-6)
    layer.weight.grad, layer.bias.grad = torch.tensor([[0.5, 0.0, 1e-8], [0.1, 0.2, 0.3]]), torch.zeros(2)
    optimizer.step()
    trainer = type("Trainer", (), {"optimizers": [optimizer]})()
    record = RecordEpsDominated()
    record.on_train_batch_end(trainer, layer, None, None, 0)
    assert record.masks["weight"].tolist() == [[False, False, True], [False, False, False]]
    assert not record.masks["bias"].any()  # never a gradient (v == 0): only decays, compared tightly


def test_scalar_parameters_become_vectors_and_load_back():
    module = nn.Module()
    module.scale = nn.Parameter(torch.tensor(2.5))
    module.frozen = nn.Parameter(torch.tensor(1.0), requires_grad=False)
    module.linear = nn.Linear(2, 2)
    assert sorted(promote_scalar_parameters(module)) == ["frozen", "scale"]
    assert module.scale.shape == (1,) and float(module.scale.detach()) == 2.5 and not module.frozen.requires_grad
    plain = nn.Module()
    plain.scale = nn.Parameter(torch.tensor(0.0))
    plain.frozen = nn.Parameter(torch.tensor(0.0), requires_grad=False)
    plain.linear = nn.Linear(2, 2)
    plain.load_state_dict(match_parameter_shapes(module.state_dict(), plain))
    assert plain.scale.shape == () and float(plain.scale.detach()) == 2.5


@pytest.mark.slow
def test_cli_fsdp_sim_run_checkpoints_summary_and_eval(tmp_path: Path):
    common = [f"paths.log_dir={tmp_path}", "trainer.max_epochs=1", "+trainer.limit_train_batches=3",
              "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "data.batch_size=8", "logger=csv"]
    proc = subprocess.run([sys.executable, "-m", "polyfuse.cli.train", "trainer=fsdp_sim", *common],
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    [run] = list((tmp_path / "train" / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 3 and "test/acc" in summary["test"]
    for name in ("best.ckpt", "last.ckpt"):
        assert is_sharded_checkpoint(run / "checkpoints" / name), name
    assert summary["best_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert read_checkpoint(run / "checkpoints" / "last.ckpt", weights=False)["global_step"] == 3
    assert (run / "checkpoints" / "best.safetensors").is_file()  # consolidated from the shards at fit end
    evaluated = subprocess.run([sys.executable, "-m", "polyfuse.cli.eval", f"run_dir={run}", "checkpoint=last",
                                "robustness.enabled=false", "max_batches=1", "batch_size=16"],
                               env=clean_env(), capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, (evaluated.stdout + evaluated.stderr)[-4000:]
    clean = json.loads((run / "robustness" / "clean.json").read_text())
    assert clean["checkpoint"] == "last" and 0.0 <= clean["clean"]["acc"] <= 1.0
    # resume the finished run in place from its sharded last.ckpt for one more epoch
    resumed = subprocess.run([sys.executable, "-m", "polyfuse.cli.train", "trainer=fsdp_sim", *common,
                              f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_epochs=2"],
                             env=clean_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "(step 3)" in resumed.stdout
    assert json.loads((run / "summary.json").read_text())["global_step"] == 6
