"""MultimodalLM stage 2 (LoRA) on 2 processes (DDP and FSDP2, gloo) trains what 1 process trains on the global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from . import fsdp_worker, mllm_worker
from .harness import run_worker, tail
from .test_fsdp import _assert_weights_close, _single_process

pytest.importorskip("peft", reason="stage 2 (LoRA) needs the `llm` extra (peft)")


@pytest.fixture(scope="module")
def mllm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("mllm_ddp")
    proc = run_worker(mllm_worker, out, timeout=600)
    return out, tail(proc.stdout + proc.stderr)


def _load(run: tuple[Path, str], name: str):
    out, log = run
    assert (out / name).is_file(), f"the MultimodalLM DDP worker did not write {name}:\n{log}"
    return torch.load(out / name, weights_only=False)


@pytest.mark.slow
def test_lora_stage2_under_ddp_and_fsdp_equals_one_process(mllm_run):
    mllm_worker.register(fsdp_worker)
    ddp, fsdp = _load(mllm_run, "weights_mllm_ddp.pt"), _load(mllm_run, "weights_mllm_fsdp.pt")
    initial = fsdp_worker.build_module(mllm_worker.NAME).state_dict()
    moved = {k for k, v in initial.items() if v.is_floating_point() and not torch.equal(ddp[k], v)}
    assert moved and all("lora_" in k or ".connector." in k for k in moved)  # only the trainable parts move
    assert any("lora_" in k for k in moved) and any(".connector." in k for k in moved)
    single, losses, _ = _single_process(mllm_worker.NAME, _load(mllm_run, "batches.pt"))  # SGD: no AdamW-noisy elements
    _assert_weights_close(ddp, single, "MultimodalLM: DDP vs one process")
    _assert_weights_close(fsdp, single, "MultimodalLM: FSDP2 vs one process")
    ranks = [_load(mllm_run, f"rank{rank}.pt") for rank in range(fsdp_worker.WORLD_SIZE)]
    for kind in ("ddp", "fsdp"):  # same answer tokens per rank: the ranks' mean loss is the global one
        torch.testing.assert_close(torch.stack([r[kind] for r in ranks]).mean(0), losses, rtol=1e-5, atol=1e-6)
