"""``auto``'s choices kept across runs: read back without probing, missed after a version change,
a corrupt file ignored with a warning and rewritten, no file when disabled."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from polyfuse.attention import attention, auto, auto_cache, auto_probe

# A second process: any probe or timing fails it; it prints the backend auto dispatched to.
SECOND_PROCESS = textwrap.dedent("""
    import sys

    import torch
    from polyfuse.attention import attention, auto, auto_probe

    def fail(*args, **kwargs):
        raise SystemExit("probed or timed although the cache file has the choice")

    auto_probe.check_candidates = auto.measure = fail
    torch.set_num_threads(int(sys.argv[1]))  # the CPU "device name" includes the thread count
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 20, 16, generator=gen).requires_grad_() for _ in range(3))
    mask = torch.arange(20)[None, :] < torch.tensor([[20], [7]])
    chosen = []
    real = auto.choose_backend
    auto.choose_backend = lambda *a, **kw: chosen.append(real(*a, **kw)) or chosen[-1]
    attention(q, k, v, mask, backend="auto")
    print("CHOSE", chosen[0])
""")


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "attention_auto.json"
    monkeypatch.setenv(auto_cache.ENV_VAR, str(path))
    auto.clear_auto_cache()
    yield path
    auto.clear_auto_cache()


@pytest.fixture
def counted(monkeypatch):
    """Counts of parity probes and timings; timings prefer ``sdpa-math`` (a choice SDPA is not)."""
    counts = {"probe": 0, "measure": 0}
    real_check = auto_probe.check_candidates

    def check(*args):
        counts["probe"] += 1
        return real_check(*args)

    def measure(q, k, v, names, run, needs_grad):
        counts["measure"] += 1
        return {name: 0.1 if name == "sdpa-math" else 1.0 for name in names}

    monkeypatch.setattr(auto_probe, "check_candidates", check)
    monkeypatch.setattr(auto, "measure", measure)
    return counts


def _call(make_qkv, seed: int = 0) -> None:
    q, k, v = make_qkv(2, 2, 20, 20, 16, seed=seed)
    mask = torch.arange(20)[None, :] < torch.tensor([[20], [7]])
    attention(q, k, v, mask, backend="auto")


@pytest.mark.slow  # a second interpreter (~5-15 s)
def test_a_second_process_reads_the_choice_without_probing(cache_file, counted, make_qkv):
    _call(make_qkv)
    assert counted == {"probe": 1, "measure": 2}  # probe, then timing and the head-to-head confirmation
    saved = json.loads(cache_file.read_text())
    assert list(saved["choices"].values()) == ["sdpa-math"]
    assert list(saved["parity"].values()) == [["sdpa", "sdpa-math", "reference"]]
    proc = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(torch.get_num_threads())], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHOSE sdpa-math" in proc.stdout


def test_same_process_restart_reuses_the_file(cache_file, counted, make_qkv):
    _call(make_qkv)
    auto.clear_auto_cache()  # a new job: nothing in memory
    _call(make_qkv, seed=1)
    assert counted == {"probe": 1, "measure": 2}
    assert list(auto.auto_choices().values()) == ["sdpa-math"]


def test_a_version_change_invalidates(cache_file, counted, make_qkv, monkeypatch):
    _call(make_qkv)
    auto.clear_auto_cache()
    monkeypatch.setattr(auto_cache, "library_versions", lambda: "torch=99;triton=none;polyfuse=0+new")
    _call(make_qkv)
    assert counted == {"probe": 2, "measure": 4}
    assert len(json.loads(cache_file.read_text())["choices"]) == 2  # both versions' entries kept


def test_a_corrupt_file_is_ignored_with_a_warning_and_rewritten(cache_file, counted, make_qkv):
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text('{"format": 1, "choices": {"truncated')
    with pytest.warns(RuntimeWarning, match="ignoring its unreadable cache"):
        _call(make_qkv)
    assert counted["probe"] == 1
    assert list(json.loads(cache_file.read_text())["choices"].values()) == ["sdpa-math"]


def test_a_file_of_another_layout_is_ignored(cache_file, counted, make_qkv):
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(json.dumps(["not", "a", "cache"]))
    with pytest.warns(RuntimeWarning, match="ignoring its unreadable cache"):
        _call(make_qkv)
    assert json.loads(cache_file.read_text())["format"] == auto_cache.FORMAT


@pytest.mark.parametrize("value", ["off", ""])
def test_disabled_writes_nothing(value, tmp_path, monkeypatch, counted, make_qkv):
    monkeypatch.setenv(auto_cache.ENV_VAR, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    auto.clear_auto_cache()
    _call(make_qkv)
    assert auto_cache.cache_path() is None and not list(tmp_path.rglob("*.json"))
    auto.clear_auto_cache()


def test_default_location_is_the_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(auto_cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert auto_cache.cache_path() == tmp_path / "polyfuse" / "attention_auto.json"


def test_keys_name_the_versions_and_the_device():
    key = auto_cache.entry_key(torch.device("cpu"), ("cpu", torch.float32, 64))
    assert key.startswith(f"torch={torch.__version__};triton=") and "polyfuse=" in key
    assert "|cpu-" in key and key.endswith("|cpu|torch.float32|64")
