"""Forward + backward time of each polyfuse encoder vs its reference implementation, same size, same weights.

Each pair is built from one checkpoint (the reference is randomly initialised, saved, and loaded into
polyfuse), so both compute the same function; timings interleave the two models (alternating which
goes first) and report medians. torchvision MobileNetV2 is the same module on both sides: its ratio
shows the noise of the machine.

    .venv/bin/python scripts/bench_encoders.py                # CPU, small sizes
    .venv/bin/python scripts/bench_encoders.py --size base --device cuda

Prints one row per encoder: reference ms, polyfuse ms and the ratio polyfuse / reference
(target <= 1.0x). Needs timm, transformers, open_clip_torch and torchvision.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from benchtools import interleaved_medians

from polyfuse.batch import ModalityInput
from polyfuse.encoders.pretrained import (clip_text_from_open_clip, encoder_from_hf, mobilenet_v2_from_torchvision,
                                          vit_from_open_clip, vit_from_timm)

SIZES = {  # width, depth, heads, image size, patch, batch, text length
    "small": dict(width=192, depth=4, heads=3, image=64, patch=8, batch=8, length=32),
    "base": dict(width=768, depth=12, heads=12, image=224, patch=16, batch=32, length=77),
}
Step = Callable[[], Tensor]


def time_pair(reference: Step, ours: Step, repeats: int, warmup: int, device: str) -> tuple[float, float]:
    """Median seconds of forward + backward for ``reference`` and ``ours``, interleaved."""
    medians = interleaved_medians({"reference": lambda: reference().float().square().mean().backward(),
                                   "ours": lambda: ours().float().square().mean().backward()}, repeats, warmup, device)
    return medians["reference"], medians["ours"]


def vit_pair(size: dict, device: str, tmp: Path) -> tuple[Step, Step]:
    import timm

    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=size["image"], patch_size=size["patch"], embed_dim=size["width"], depth=size["depth"],
        num_heads=size["heads"], num_classes=0).to(device)
    torch.save(ref.state_dict(), tmp / "timm_vit.pth")
    ours = vit_from_timm(tmp / "timm_vit.pth", heads=size["heads"]).to(device)
    images = torch.randn(size["batch"], 3, size["image"], size["image"], device=device)
    return (lambda: ref.forward_features(images)), (lambda: ours(images).tokens)


def bert_pair(size: dict, device: str, tmp: Path) -> tuple[Step, Step]:
    import transformers

    config = transformers.BertConfig(vocab_size=1000, hidden_size=size["width"], num_hidden_layers=size["depth"],
                                     num_attention_heads=size["heads"], intermediate_size=4 * size["width"],
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ref = transformers.BertModel(config, add_pooling_layer=False).to(device)
    ref.save_pretrained(tmp / "bert")
    ours = encoder_from_hf(tmp / "bert").to(device)
    ids = torch.randint(5, 1000, (size["batch"], size["length"]), device=device)
    mask = torch.arange(size["length"], device=device)[None] < torch.randint(
        size["length"] // 2, size["length"] + 1, (size["batch"], 1), device=device)
    return (lambda: ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state), \
        (lambda: ours(ModalityInput(ids, mask)).tokens)


def clip_pairs(size: dict, device: str, tmp: Path) -> dict[str, tuple[Step, Step]]:
    import open_clip

    vision = open_clip.model.CLIPVisionCfg(layers=size["depth"], width=size["width"], head_width=64,
                                           patch_size=size["patch"], image_size=size["image"])
    text = open_clip.model.CLIPTextCfg(context_length=size["length"], vocab_size=1000, width=size["width"],
                                       heads=size["heads"], layers=size["depth"])
    ref = open_clip.model.CLIP(embed_dim=256, vision_cfg=vision, text_cfg=text).to(device)
    torch.save(ref.state_dict(), tmp / "clip.pt")
    visual = vit_from_open_clip(tmp / "clip.pt", heads=size["width"] // 64, output="pooled").to(device)
    textual = clip_text_from_open_clip(tmp / "clip.pt", heads=size["heads"]).to(device)
    images = torch.randn(size["batch"], 3, size["image"], size["image"], device=device)
    ids = torch.randint(1, 999, (size["batch"], size["length"]), device=device)
    return {"open_clip visual": ((lambda: ref.encode_image(images)), (lambda: visual(images).tokens)),
            "open_clip text": ((lambda: ref.encode_text(ids)), (lambda: textual(ids).tokens))}


def mobilenet_pair(size: dict, device: str, tmp: Path) -> tuple[Step, Step]:
    import torchvision

    ref = torchvision.models.mobilenet_v2(weights=None).to(device)
    torch.save(ref.state_dict(), tmp / "mobilenet_v2.pth")
    ours = mobilenet_v2_from_torchvision(tmp / "mobilenet_v2.pth").to(device)
    images = torch.randn(size["batch"], 3, size["image"], size["image"], device=device)
    return (lambda: ref.features(images)), (lambda: ours(images).tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", nargs="*", default=None, help="subset of encoder names")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = SIZES[args.size]
    print(f"device={args.device} size={args.size} {size} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        pairs: dict[str, tuple[Step, Step]] = {"timm ViT": vit_pair(size, args.device, tmp),
                                               "HF BERT (padded)": bert_pair(size, args.device, tmp)}
        pairs.update(clip_pairs(size, args.device, tmp))
        pairs["torchvision MobileNetV2"] = mobilenet_pair(size, args.device, tmp)
        print(f"{'encoder':26s} {'reference ms':>13s} {'polyfuse ms':>12s} {'ratio':>7s}")
        for name, (reference, ours) in pairs.items():
            if args.only and not any(o.lower() in name.lower() for o in args.only):
                continue
            ref_s, our_s = time_pair(reference, ours, args.repeats, args.warmup, args.device)
            print(f"{name:26s} {ref_s * 1e3:13.2f} {our_s * 1e3:12.2f} {our_s / ref_s:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
