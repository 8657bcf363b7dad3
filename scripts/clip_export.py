"""Export a ``polyfuse-train`` run of a CLIP-shaped model to open_clip format.

The run's model (a ViTEncoder and a CLIPTextEncoder, pooled, with a ContrastiveHead; e.g.
``experiment=clip_pretrain_avdigits`` or ``clip_finetune_retrieval``) becomes a
:class:`polyfuse.models.CLIP` (head projections folded into the towers) and is written as
``open_clip_config.json`` + ``open_clip_model.safetensors``, open_clip's ``local-dir:`` layout:

    .venv/bin/python scripts/clip_export.py outputs/clip_pretrain/runs/<time> outputs/clip_avdigits
    polyfuse-train experiment=clip_zeroshot clip.checkpoint=outputs/clip_avdigits \\
        clip.config=outputs/clip_avdigits/open_clip_config.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polyfuse.models import CLIP
from polyfuse.reporting.runs import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a polyfuse-train run directory")
    parser.add_argument("out_dir", type=Path, help="where to write the open_clip files")
    parser.add_argument("--checkpoint", default="best", help="best | last | a checkpoint file")
    args = parser.parse_args()
    module, _ = load_model(args.run_dir, args.checkpoint)
    clip = CLIP.from_multimodal(module.model)
    directory = clip.save_open_clip(args.out_dir)
    print(f"wrote {directory}: embed_dim={clip.embed_dim}, logit scale {clip.logit_scale.exp().item():.2f}")


if __name__ == "__main__":
    main()
