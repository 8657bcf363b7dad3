"""``polyfuse-export RUN_DIR OUT_DIR``: a self-contained folder that :func:`polyfuse.load` reads.

The folder holds ``config.yaml`` (the run's resolved ``model`` section, with every node that read
the dataset replaced by its value and every file it names copied into ``files/``),
``model.safetensors`` (the model's weights), ``inference.json`` (preprocessing settings, class
names, the copied files), the tokenizer (``tokenizer.json``) and ``README.md`` (a model card from
``summary.json`` and the run's overrides). Nothing in it points back at the checkout.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from polyfuse.inference.build import freeze_data_dependent_nodes
from polyfuse.inference.card import model_card, run_overrides
from polyfuse.inference.load import EXPORT_FORMAT, MANIFEST, WEIGHTS, is_run, load

__all__ = ["export_run", "main"]

#: top-level config keys kept besides ``model``
KEPT_KEYS = ("task_name", "seed", "attention_backend")


class _FileCopier:
    """Copies files (or folders) into ``folder/files/`` once each, under unique names."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.copied = folder, {}  # source -> relative name

    def __call__(self, source: Path, name: str | None = None) -> str:
        source = source.resolve()
        if source not in self.copied:
            relative = name or f"files/{source.name}"
            stem, number = relative, 1
            while (self.folder / relative).exists():
                number += 1
                relative = f"{stem}.{number}"
            target = self.folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
            self.copied[source] = relative
        return self.copied[source]


def _copy_referenced_files(node: Any, copy: _FileCopier, key: str, files: dict[str, str]) -> Any:
    """``node`` with every absolute path to an existing file or folder replaced by its copy's relative
    name; ``files`` collects ``dotted config key -> relative name``."""
    if isinstance(node, dict):
        return {k: _copy_referenced_files(v, copy, f"{key}.{k}", files) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy_referenced_files(v, copy, f"{key}.{i}", files) for i, v in enumerate(node)]
    if isinstance(node, str) and node.startswith("/") and Path(node).exists() and Path(node) != Path("/"):
        files[key] = copy(Path(node))
        return files[key]
    return node


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best") -> Path:
    """Write the self-contained folder of a run's model to ``out_dir`` (created; must be empty or an
    earlier export, which is replaced). Returns ``out_dir``."""
    from safetensors.torch import save_file

    from polyfuse.reporting.runs import checkpoint_file, find_runs

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not is_run(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run directory (config.yaml + checkpoints/)")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST).is_file():
            raise FileExistsError(f"{out_dir} exists and is not empty (and is no earlier export): "
                                  "choose another folder")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load(run_dir, checkpoint)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    copy, files = _FileCopier(out_dir), {}
    preprocessing = model.preprocessing.to_dict()
    if "text" in preprocessing and not preprocessing["text"]["tokenizer"].startswith("pkg://"):
        tokenizer = Path(preprocessing["text"]["tokenizer"])  # first: the model config may name the same file
        preprocessing["text"]["tokenizer"] = copy(tokenizer, "tokenizer" if tokenizer.is_dir() else "tokenizer.json")
    exported: dict[str, Any] = {key: config[key] for key in KEPT_KEYS if key in config}
    exported["model"] = _copy_referenced_files(freeze_data_dependent_nodes(config["model"]), copy, "model", files)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(exported)))
    state = {key: value.detach().cpu().clone().contiguous() for key, value in model.model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS))
    source = checkpoint_file(run_dir, checkpoint)
    manifest = {"format": EXPORT_FORMAT, "version": 1, "task": model.task, "modalities": model.modalities,
                "labels": model.labels, "preprocessing": preprocessing, "files": files,
                "source": {"run": str(run_dir.resolve()), "checkpoint": source.name}}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    run = find_runs(run_dir)[0] if (run_dir / "summary.json").is_file() else None
    title = f"polyfuse {model.task} model ({config.get('task_name', 'train')} run {run_dir.name})"
    card = model_card(name=title, config=config,
                      summary=run.summary if run else {},
                      overrides=run_overrides(run.overrides if run else [], config),
                      choices=run.choices if run else {}, task=model.task, modalities=model.modalities,
                      labels=model.labels, files=sorted(["README.md", "config.yaml", MANIFEST, WEIGHTS,
                                                         *copy.copied.values()]),
                      source=str(run_dir), checkpoint=source.name)
    (out_dir / "README.md").write_text(card)
    return out_dir


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``polyfuse-export RUN_DIR OUT_DIR [--checkpoint best|last|FILE]``."""
    parser = argparse.ArgumentParser(prog="polyfuse-export", description="Write a self-contained folder of a "
                                     "training run's model (config, weights, tokenizer, preprocessing, model "
                                     "card) that polyfuse.load reads without the checkout.")
    parser.add_argument("run_dir", help="a polyfuse-train run directory (outputs/train/runs/<time>)")
    parser.add_argument("out_dir", help="the folder to write (created; an earlier export there is replaced)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint file")
    args = parser.parse_args(argv)
    out = export_run(args.run_dir, args.out_dir, args.checkpoint)
    print(f"exported {args.run_dir} -> {out}")


if __name__ == "__main__":
    main()
