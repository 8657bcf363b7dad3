"""The wheel: it holds the configs and the AV-digits dataset, installs into a fresh virtual
environment, and trains there from a directory outside the checkout (docs/install.md).

The fresh environment reuses the dependencies already installed here (a ``.pth`` file pointing at
this interpreter's site-packages, added after the wheel is installed, so that pip sees an empty
environment and nothing is downloaded); polyfuse itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1", "data.batch_size=32", "trainer.num_sanity_val_steps=0",
            "callbacks.progress_bar=null"]
#: variables that would point the installed polyfuse back at a checkout
CHECKOUT_VARIABLES = ("PYTHONPATH", "POLYFUSE_ROOT", "POLYFUSE_CONFIG_PATH", "VIRTUAL_ENV", "PYTHONHOME")

pytestmark = pytest.mark.slow

#: a project's own primary config composing polyfuse's groups, found through pkg://polyfuse.configs
OWN_PRIMARY_CONFIG = """\
defaults:
  - data: avdigits
  - model: multimodal
  - model/encoder@model.encoders.image: vit_tiny
  - model/fusion: gmu
  - model/head: classification
  - paths: default
  - _self_
hydra:
  searchpath: [pkg://polyfuse.configs]
"""
#: run in the fresh environment: where polyfuse, its configs and dataset come from
PROBE = """\
import json
from pathlib import Path
from hydra import compose, initialize_config_dir, initialize_config_module
import polyfuse
from polyfuse.cli import config
with initialize_config_module("polyfuse.configs", version_base="1.3"):
    packaged = compose("train")
with initialize_config_dir(str(Path("configs").resolve()), version_base="1.3"):
    own = compose("my_train")
print(json.dumps({"module": polyfuse.__file__, "checkout": config.checkout_root(),
                  "configs": str(config.config_dir()), "dataset": str(config.avdigits_dir()),
                  "pkg_data_root": packaged.data.root, "own_data_root": own.data.root,
                  "own_fusion": own.model.fusion._target_}))
"""


def _source_tree(destination: Path) -> Path:
    """A copy of the checkout as a fresh clone plus the working changes would have it (the files git
    tracks or would track), so that nothing ignored (``build/``, ``.venv``) reaches the wheel."""
    try:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the packaging test copies the checkout with `git ls-files` (not a git checkout)")
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of this checkout (no build isolation: setuptools from this environment, no network)."""
    source = _source_tree(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--quiet", "-w", str(out), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("polyfuse-*.whl")
    return built


def test_wheel_holds_configs_dataset_and_ranges(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert {f"polyfuse/configs/{c}" for c in configs} <= names
    assert "polyfuse/configs/__init__.py" in names  # Hydra's pkg://polyfuse.configs needs a package
    dataset = {p.relative_to(REPO / "data" / "avdigits").as_posix() for p in (REPO / "data" / "avdigits").rglob("*")
               if p.is_file()}
    assert dataset and {f"polyfuse/avdigits_data/{f}" for f in dataset} <= names
    assert not any(name.startswith(("tests/", "scripts/", "docs/")) for name in names)
    (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    lines = zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    requires = [line.removeprefix("Requires-Dist: ") for line in lines if line.startswith("Requires-Dist:")]
    core = {re.match(r"[A-Za-z0-9_.-]+", line).group(0): line for line in requires if "extra ==" not in line}
    assert {"torch", "torchvision", "torchdata", "hydra-core", "lightning"} <= set(core)
    assert "==" not in core["torch"] and "==" not in core["torchvision"], core  # exact pins: constraints.txt
    assert not {"pycocoevalcap", "wandb", "datasets", "webdataset", "open_clip_torch"} & set(core), core
    assert any(line.startswith("pycocoevalcap") and 'extra == "captioning"' in line for line in requires)


def _fresh_venv(root: Path) -> Path:
    """An empty virtual environment (no pip: the outer pip installs into it with ``--python``)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=300)
    return root / "bin" / "python"


def test_wheel_installs_and_trains_outside_the_checkout(wheel: Path, tmp_path: Path, capsys):
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in CHECKOUT_VARIABLES}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "my_project"
    work.mkdir()

    start = time.perf_counter()
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--quiet", str(wheel)],
                             capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    install_seconds = time.perf_counter() - start
    site_packages = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True, env=env).strip())
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "_outer_dependencies.pth").write_text("".join(f"{path}\n" for path in outer))

    (work / "configs").mkdir()
    (work / "configs" / "my_train.yaml").write_text(OWN_PRIMARY_CONFIG)
    probe = subprocess.run([python, "-c", PROBE], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found["module"]).is_relative_to(tmp_path / "venv"), found  # the wheel, not this checkout
    assert found["checkout"] is None
    assert Path(found["configs"]) == site_packages / "polyfuse" / "configs"
    packaged_dataset = str(site_packages / "polyfuse" / "avdigits_data")
    assert found["dataset"] == found["pkg_data_root"] == found["own_data_root"] == packaged_dataset, found
    assert found["own_fusion"] == "polyfuse.fusion.GatedMultimodalUnit"

    start = time.perf_counter()
    run = subprocess.run([python.parent / "polyfuse-train", *TINY_RUN], cwd=work, env=env, capture_output=True,
                         text=True, timeout=900)
    run_seconds = time.perf_counter() - start
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    summaries = list((work / "outputs" / "train" / "runs").glob("*/summary.json"))
    assert len(summaries) == 1, list(work.rglob("*"))[:20]
    summary = json.loads(summaries[0].read_text())
    assert summary, "empty summary.json"
    saved = (summaries[0].parent / "config.yaml").read_text()
    assert f"root: {site_packages / 'polyfuse' / 'avdigits_data'}" in saved  # the dataset shipped in the wheel
    with capsys.disabled():
        print(f"\n[packaging] wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB; install -> finished run: "
              f"{install_seconds + run_seconds:.1f} s (pip install {install_seconds:.1f} s + polyfuse-train, 1 epoch "
              f"of 2 batches, {run_seconds:.1f} s)")
