"""Where polyfuse finds its Hydra configs and the AV-digits dataset; polyfuse's OmegaConf resolvers.

Two layouts (docs/install.md):

- **a checkout** (the source tree, ``pip install -e .``, or ``PYTHONPATH=src``): configs in
  ``<root>/configs``, the dataset in ``<root>/data/avdigits``, runs under ``<root>/outputs``;
- **an installed wheel**: configs and dataset inside the package (``polyfuse/configs``, also
  ``pkg://polyfuse.configs``, and ``polyfuse/avdigits_data``), data and runs under the current
  directory (``./data``, ``./outputs``).

Environment variables:

- ``POLYFUSE_ROOT=<dir>``: use ``<dir>`` as the root (its ``data/``, ``outputs/`` and, when it has
  one, ``configs/``) instead of detecting it.
- ``POLYFUSE_CONFIG_PATH=<dir>[:<dir>...]``: your own config directories, searched after polyfuse's
  (Hydra's ``hydra.searchpath``): add experiments, datasets or models that compose with polyfuse's
  groups. ``--config-dir <dir>`` on the command line does the same for one directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

#: the installed ``polyfuse`` package directory (``<checkout>/src/polyfuse`` in a checkout)
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: the AV-digits dataset inside an installed wheel (mapped from ``data/avdigits`` by setup.py)
PACKAGED_AVDIGITS = PACKAGE_DIR / "avdigits_data"
#: the configs inside an installed wheel (mapped from ``configs/`` by setup.py)
PACKAGED_CONFIGS = PACKAGE_DIR / "configs"


def _is_checkout(path: Path) -> bool:
    return (path / "configs" / "train.yaml").is_file() and (path / "pyproject.toml").is_file()


def checkout_root() -> Path | None:
    """The polyfuse checkout (``POLYFUSE_ROOT`` if set), or ``None`` when running from a wheel.

    Only the tree this module sits in counts (``<checkout>/src/polyfuse/cli/config.py``), so a
    virtual environment inside another project that has its own ``configs/`` is not mistaken
    for a polyfuse checkout.
    """
    if os.environ.get("POLYFUSE_ROOT"):
        return Path(os.environ["POLYFUSE_ROOT"]).expanduser().resolve()
    candidate = PACKAGE_DIR.parents[1]
    return candidate if PACKAGE_DIR.parent.name == "src" and _is_checkout(candidate) else None


def repo_root() -> Path:
    """The root of ``data/`` and ``outputs/``: the checkout (or ``POLYFUSE_ROOT``), else the cwd."""
    return checkout_root() or Path.cwd()


def config_dir() -> Path:
    """polyfuse's Hydra config directory: ``<root>/configs`` in a checkout, else the packaged copy."""
    root = checkout_root()
    if root is not None and (root / "configs" / "train.yaml").is_file():
        return root / "configs"
    if (PACKAGED_CONFIGS / "train.yaml").is_file():
        return PACKAGED_CONFIGS
    raise FileNotFoundError(
        f"polyfuse's configs are neither in a checkout ({root or 'none found'}/configs) nor in the installed "
        f"package ({PACKAGED_CONFIGS}); reinstall polyfuse, or set POLYFUSE_ROOT to a polyfuse checkout")


def avdigits_dir(data_dir: str | Path | None = None) -> Path:
    """The embedded AV-digits dataset: ``<data_dir>/avdigits`` when it holds one (a checkout's
    ``data/avdigits`` or a rebuilt copy), else the copy inside the installed package.

    Args:
        data_dir: the data directory (``paths.data_dir``); default ``repo_root() / "data"``.
    """
    local = Path(data_dir if data_dir is not None else repo_root() / "data") / "avdigits"
    if (local / "metadata.jsonl").is_file() or not (PACKAGED_AVDIGITS / "metadata.jsonl").is_file():
        return local  # when neither holds it, the dataset's own error names the missing files here
    return PACKAGED_AVDIGITS


def user_config_searchpath() -> list[str]:
    """Hydra search path entries (``file://<dir>``) of the directories in ``POLYFUSE_CONFIG_PATH``."""
    entries = []
    for entry in os.environ.get("POLYFUSE_CONFIG_PATH", "").split(os.pathsep):
        if not entry:
            continue
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise NotADirectoryError(f"POLYFUSE_CONFIG_PATH: {entry!r} is not a directory (expected a config "
                                     f"directory holding e.g. experiment/<name>.yaml; separate several with "
                                     f"{os.pathsep!r})")
        entries.append(f"file://{path}")
    return entries


def register_resolvers() -> None:
    """``${polyfuse_root:}`` (``configs/paths``), ``${polyfuse_avdigits:<data_dir>}`` and
    ``${polyfuse_config_path:}`` (``hydra.searchpath`` of the primary configs)."""
    if not OmegaConf.has_resolver("polyfuse_root"):
        OmegaConf.register_new_resolver("polyfuse_root", lambda: str(repo_root()))
    if not OmegaConf.has_resolver("polyfuse_avdigits"):
        OmegaConf.register_new_resolver("polyfuse_avdigits", lambda data_dir=None: str(avdigits_dir(data_dir)))
    if not OmegaConf.has_resolver("polyfuse_config_path"):
        OmegaConf.register_new_resolver("polyfuse_config_path", user_config_searchpath)


register_resolvers()
