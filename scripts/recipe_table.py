"""Write the optimiser-recipe tables of docs/baselines.md: polyfuse's CLIP and ViLT experiments beside
open_clip's and ViLT's own settings.

The polyfuse columns are read from the composed experiment configs (``configs/experiment/<name>.yaml``
through Hydra, as ``polyfuse-train experiment=<name>`` composes them), so they cannot drift from the
code: ``tests/docs/test_recipe_table.py`` fails when the tables in the doc differ from what this script
renders. The reference columns are data, each value from the file named in :data:`SOURCES`. The tables
live between the ``<!-- recipe-table:start -->`` / ``<!-- recipe-table:end -->`` markers.

Usage::

    python scripts/recipe_table.py           # rewrite the tables in docs/baselines.md
    python scripts/recipe_table.py --check   # exit 1 if the doc is out of date
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "baselines.md"
START, END = "<!-- recipe-table:start -->", "<!-- recipe-table:end -->"

ROWS = ("optimizer", "lr", "weight decay", "betas", "eps", "warmup", "schedule", "batch", "epochs",
        "no weight decay on", "layer-wise LR decay", "head LR multiplier", "EMA of weights")
CLIP_RECIPES = ("clip_pretrain_avdigits", "clip_finetune_retrieval")
VILT_RECIPES = ("vilt_vqav2", "vilt_retrieval", "vilt_nlvr2", "vilt_vqa_avdigits", "vilt_retrieval_avdigits")

_VILT = {"optimizer": "AdamW", "lr": "1e-4", "weight decay": "0.01", "betas": "(0.9, 0.98)", "eps": "1e-8",
         "warmup": "10% of steps", "schedule": "linear decay to 0", "epochs": "10",
         "no weight decay on": "names containing `bias`, `LayerNorm.*`, `norm.*`, `norm1.*`, `norm2.*`",
         "layer-wise LR decay": "off", "EMA of weights": "off"}
#: the reference columns: ``{column title: {row: value}}`` (sources: :data:`SOURCES`)
REFERENCES: dict[str, dict[str, dict[str, str]]] = {
    "clip": {"open_clip (ViT defaults) [1]": {
        "optimizer": "AdamW", "lr": "5e-4", "weight decay": "0.2", "betas": "(0.9, 0.98)", "eps": "1e-6",
        "warmup": "10000 steps", "schedule": "cosine decay to 0", "batch": "64 per GPU (ViT-B/32 on LAION-400M: "
        "256 x 128 GPUs = 32768)", "epochs": "32",
        "no weight decay on": "`ndim < 2`; names containing `bn`, `ln`, `bias`, `logit_scale`",
        "layer-wise LR decay": "off", "head LR multiplier": "1x", "EMA of weights": "off"}},
    "vilt": {"ViLT VQAv2 [2]": {**_VILT, "batch": "256", "head LR multiplier": "10x (`vqa_classifier`)"},
             "ViLT COCO / F30K IR-TR [2]": {**_VILT, "batch": "256", "head LR multiplier": "1x"},
             "ViLT NLVR2 [2]": {**_VILT, "batch": "128", "head LR multiplier": "1x"}},
}
SOURCES = """\
[1] open_clip (mlfoundations/open_clip): `src/open_clip_train/params.py`, `get_default_params` for ViT
models (lr 5e-4, beta2 0.98, eps 1e-6, "Params from paper") and the argument defaults `--wd 0.2`,
`--warmup 10000`, `--lr-scheduler cosine`, `--batch-size 64` (per GPU), `--epochs 32`; the
weight-decay exclusion `exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or
"logit_scale" in n` of `src/open_clip_train/main.py` (recent versions: 1-d parameters plus the model's
`no_weight_decay()` names, `--wd-exclude`); layer-wise LR decay exists there only as the opt-in
`--image-layer-decay` / `--text-layer-decay` (default off); no head multiplier and no EMA of the
weights in `open_clip_train`. The LAION-400M ViT-B/32 batch is from `docs/PRETRAINED.md` ("The per-GPU
batch size was 256 for a global batch size of 32768", 128 A100s), 32 epochs (`laion400m_e32`).
[2] ViLT (dandelin/ViLT, Kim et al., 2021): `vilt/config.py` (`learning_rate = 1e-4`,
`weight_decay = 0.01`, `decay_power = 1`, `end_lr = 0`; the `task_finetune_vqa`,
`task_finetune_irtr_coco` / `_f30k` and `task_finetune_nlvr2` named configs: `warmup_steps = 0.1`,
`max_epoch = 10`, `batch_size` 256 / 256 / 128, `lr_mult = 10` for VQA only; IR/TR also draws 15
negative texts per image, `draw_false_text = 15`) and `vilt/modules/vilt_utils.py`, `set_schedule`
(HF `AdamW(eps=1e-8, betas=(0.9, 0.98))`, the `no_decay` name list, `lr * lr_mult` for the
`vqa_classifier` / `nlvr2_classifier` parameters, `get_polynomial_decay_schedule_with_warmup`
with power 1: linear). The paper's implementation details describe the same optimiser (AdamW, lr 1e-4,
weight decay 1e-2, warmup over 10% of the steps, linear decay to 0); the values above are read from the
repository's code."""


def _number(value: Any) -> str:
    """``0.2``, ``10``; below 0.01 as ``5e-4`` (the papers' notation)."""
    value = float(value)
    if value == 0 or abs(value) >= 1e-2:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _adamw_default(name: str) -> Any:
    import torch

    return inspect.signature(torch.optim.AdamW).parameters[name].default


def recipe_settings(cfg: Mapping[str, Any]) -> dict[str, str]:
    """``{row: value}`` of a composed training config (the polyfuse columns)."""
    model, optimizer = cfg["model"], cfg["model"]["optimizer"]
    groups = model.get("optimizer_groups")
    betas = tuple(optimizer.get("betas") or _adamw_default("betas"))
    scheduler = model.get("scheduler")
    if scheduler is None:
        warmup, schedule = "none", "constant"
    else:
        ratio = model.get("warmup_ratio")
        warmup = f"{_number(100 * ratio)}% of steps" if ratio is not None else f"{model.get('warmup_steps')} steps"
        schedule = f"{scheduler} decay to 0"
    if groups is None:
        no_decay, layer_decay, head = "nothing (one group)", "off", "1x"
    else:
        parts = [f"`ndim < {groups['exclude_ndim_below']}`"] if groups.get("exclude_ndim_below", 0) > 0 else []
        names = ", ".join(f"`{name}`" for name in groups.get("exclude_names") or ())
        no_decay = "; ".join(parts + ([f"names matching {names}"] if names else []))
        layer_decay = "off" if groups.get("layer_decay") is None else _number(groups["layer_decay"])
        scale = float(groups.get("head_lr_scale", 1.0))
        prefixes = ", ".join(f"`{p}`" for p in groups.get("head_prefixes") or ())
        head = "1x" if scale == 1.0 else f"{scale:g}x ({prefixes})"
    ema = [c for c in (cfg.get("callbacks") or {}).values()
           if isinstance(c, Mapping) and str(c.get("_target_", "")).endswith("EMAWeights")]
    return {"optimizer": str(optimizer["_target_"]).rsplit(".", 1)[-1], "lr": _number(optimizer["lr"]),
            "weight decay": _number(optimizer.get("weight_decay", _adamw_default("weight_decay"))),
            "betas": f"({', '.join(_number(b) for b in betas)})",
            "eps": _number(optimizer.get("eps", _adamw_default("eps"))),
            "warmup": warmup, "schedule": schedule, "batch": f"{cfg['data']['batch_size']} per process",
            "epochs": str(cfg["trainer"]["max_epochs"]), "no weight decay on": no_decay,
            "layer-wise LR decay": layer_decay, "head LR multiplier": head,
            "EMA of weights": f"on (decay {_number(ema[0]['decay'])})" if ema else "off (`callbacks=[default,ema]`)"}


def compose_experiment(name: str) -> Mapping[str, Any]:
    """``configs/train.yaml`` with ``experiment=<name>``, unresolved (``???`` paths stay unread)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from polyfuse.cli.config import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="train", overrides=[f"experiment={name}"])
    finally:
        GlobalHydra.instance().clear()


def table(columns: Mapping[str, Mapping[str, str]]) -> str:
    """A markdown table: one row per setting of :data:`ROWS`, one column per recipe / reference."""
    lines = ["| setting | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(values[row].replace("|", "\\|") for values in columns.values()) + " |")
    return "\n".join(lines)


def render() -> str:
    """The block between the markers: the CLIP table, the ViLT table, the sources."""
    blocks = []
    for family, recipes in (("clip", CLIP_RECIPES), ("vilt", VILT_RECIPES)):
        columns = {f"`{name}`": recipe_settings(compose_experiment(name)) for name in recipes}
        columns.update(REFERENCES[family])
        blocks.append(table(columns))
    return "\n\n".join([*blocks, SOURCES])


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"{DOC}: the markers {START} / {END} are missing")
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/baselines.md is out of date")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    updated = replace_block(text, render())
    if args.check:
        if updated != text:
            print(f"{DOC} is out of date: run python scripts/recipe_table.py")
            return 1
        return 0
    DOC.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
