"""scripts/gpu_check.sh and scripts/gpu_parity.py on CPU: the parity part runs, a wrong backend fails
loudly, and a machine without CUDA is not mistaken for a passed GPU check."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from polyfuse.cli.config import repo_root

ROOT = repo_root()
_spec = importlib.util.spec_from_file_location("gpu_parity", ROOT / "scripts" / "gpu_parity.py")
gpu_parity = importlib.util.module_from_spec(_spec)
sys.modules["gpu_parity"] = gpu_parity  # its dataclass looks its module up
_spec.loader.exec_module(gpu_parity)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of the GPU check")
TINY = ["--device", "cpu", "--tiny", "--dtypes", "fp32", "--backends", "reference,sdpa,auto"]


def test_parity_passes_every_cpu_backend_padded_and_packed(capsys, monkeypatch):
    monkeypatch.delenv(gpu_parity.FAULT_ENV, raising=False)
    gpu_parity.auto.clear_auto_cache()  # a fresh process's tables: the choices printed are this run's
    assert gpu_parity.main(TINY) == 0
    out = capsys.readouterr().out
    assert "| text self packed | fp32 | ok | ok | ok |" in out and "**FAIL**" not in out
    assert "auto's choices in this run:\n- cpu float32, head dim 16, masked, self (B*H~16" in out


def test_parity_fails_when_a_backend_is_wrong(capsys, monkeypatch):
    monkeypatch.setenv(gpu_parity.FAULT_ENV, "sdpa")
    assert gpu_parity.main(TINY) == 1
    out = capsys.readouterr().out
    assert "| image-self padded | fp32 | ok | **FAIL** | ok |" in out
    assert "decoder causal packed fp32 sdpa: out max error" in out


def test_packed_cases_go_through_cu_seqlens(monkeypatch):
    import polyfuse.attention.varlen_dispatch as dispatch

    calls = []
    real = dispatch.varlen_attention
    monkeypatch.setattr(dispatch, "varlen_attention", lambda *a, **kw: calls.append(kw["backend"]) or real(*a, **kw))
    case = next(c for c in gpu_parity.cases(tiny=True) if c.packed)
    call, query_mask = gpu_parity.make_call(case, torch.float32, "cpu")
    assert not bool(query_mask[-1].any())  # an absent sample: no rows at all
    assert gpu_parity.check_candidates(["sdpa"], call, gpu_parity.runner(query_mask), query_mask=query_mask) == {"sdpa": None}
    assert calls == ["sdpa"]


def _gpu_check(tmp_path, *options, **env):
    # without TRITON_INTERPRET (set for the test session): the interpreted kernels take minutes here
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out"), *options],
                          env=environment, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_without_cuda_the_check_fails_unless_allowed(tmp_path):
    proc = _gpu_check(tmp_path, "--sections", "env")
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr
    assert "NO CUDA DEVICE VISIBLE" in (tmp_path / "out" / "gpu_check.md").read_text()


@pytest.mark.slow  # two runs of the script's parity part (~15 s each on 2 shared cores)
def test_cpu_smoke_run_writes_the_report_and_a_fault_fails_it_loudly(tmp_path):
    proc = _gpu_check(tmp_path, "--allow-no-gpu", "--tiny", "--sections", "env,parity")
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert proc.returncode == 0, proc.stderr + report
    assert "## env: PASS" in report and "## parity: PASS" in report and "RESULT: all sections passed" in report
    assert "| image->text packed | fp32 | ok | ok | ok |" in report
    assert '"parity"' in report  # the auto backend's probe results, from the check's own cache file
    proc = _gpu_check(tmp_path, "--allow-no-gpu", "--tiny", "--sections", "parity", POLYFUSE_PARITY_FAULT="sdpa")
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert proc.returncode == 1 and "FAILED sections: parity" in proc.stderr
    assert "## parity: FAIL (exit 1)" in report and "RESULT: FAILED (parity)" in report
