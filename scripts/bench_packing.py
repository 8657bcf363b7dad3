"""Packed vs padded training step (forward + backward + AdamW), side by side in one process.

Two models, each built twice with the same weights (``packing=False`` / ``packing=True``) and fed the
same batch (docs/packing.md):

* ``text``: a BERT-style text tower (:class:`~polyfuse.encoders.text.TextTransformerEncoder`; ``base``
  is BERT-base: 768 wide, 12 blocks, 12 heads, 30522 tokens) on captions;
* ``text-rows``: the same tower with *sample packing* (``sample_packing={budget: 40}``): the captions
  packed whole into fixed-width rows of 40 tokens (first-fit decreasing, laid out every step), the
  rows' padding tails computed too (a fixed row width), against the padded tower;
* ``vilt``: a ViLT-style single-stream model: text embeddings, linearly embedded image patches and
  audio frames, one :class:`~polyfuse.fusion.EarlyFusion` transformer over the concatenation
  (``base``: ViLT-B/32 width and depth, 144 patches of a 384x384 image, 1.5 s of 100 frames/s audio);
* ``decoder``: a caption decoder (:class:`~polyfuse.heads.decoder.CaptionDecoder`, the model's width
  and depth) cross-attending to a memory of ``patches`` tokens, trained with next-token
  cross-entropy; "packed" is *sample packing*: the captions packed into rows of as many tokens as the
  padded batch is wide (first-fit decreasing, laid out every step as the captioning head's
  ``sample_packing`` does) and run through :meth:`CaptionDecoder.forward_rows`.

Lengths are realistic: caption lengths drawn from a COCO-like distribution (BERT tokens incl.
[CLS]/[SEP]: mean ~11, most 8-15, a thin tail to the 40-token cap), audio clips of 0.5-1.5 s padded to
1.5 s. ``--padding none`` fills every row (0% padding: packing must be no slower).

Reported per model and padding regime: the padding fraction, median step time of each variant
(interleaved repeats, :func:`benchtools.interleaved_medians`), real tokens per second, the step-time
ratio padded / packed (> 1: packing is faster) and peak memory of one step of each variant measured
in a fresh process (CPU: peak RSS; CUDA: peak allocated).

Examples::

    python scripts/bench_packing.py --size tiny --repeats 2 --warmup 1     # checks the script works
    python scripts/bench_packing.py --models decoder --size tiny --repeats 2 --warmup 1 --no-memory
    OMP_NUM_THREADS=8 python scripts/bench_packing.py --size base --threads 8 --markdown
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
from collections.abc import Callable

import torch
from benchtools import interleaved_medians, training_step
from torch import Tensor, nn

SIZES = {
    "tiny": dict(dim=32, depth=2, heads=2, mlp=64, vocab=1000, batch=4, text=40, patches=16, frames=30, mels=16,
                 patch_dim=48),
    "small": dict(dim=256, depth=4, heads=4, mlp=1024, vocab=30522, batch=16, text=40, patches=144, frames=150,
                  mels=64, patch_dim=3072),
    "base": dict(dim=768, depth=12, heads=12, mlp=3072, vocab=30522, batch=32, text=40, patches=144, frames=150,
                 mels=64, patch_dim=3072),
}


def caption_lengths(batch: int, cap: int, generator: torch.Generator) -> Tensor:
    """COCO-like caption lengths in BERT tokens: ~N(11, 2.5) clipped to [6, cap], 3% from a tail up to ``cap``."""
    lengths = (torch.randn(batch, generator=generator) * 2.5 + 11).round().clamp(6, cap)
    tail = torch.rand(batch, generator=generator) < 0.03
    long = torch.randint(16, cap + 1, (batch,), generator=generator).to(lengths.dtype)
    return torch.where(tail, long, lengths).long()


def audio_frames(batch: int, frames: int, generator: torch.Generator) -> Tensor:
    """Clips of 0.5-1.5 s padded to 1.5 s (``frames``): uniform between a third and all of the frames."""
    return torch.randint(max(1, frames // 3), frames + 1, (batch,), generator=generator)


def prefix_mask(lengths: Tensor, length: int) -> Tensor:
    return torch.arange(length)[None, :] < lengths[:, None]


class SingleStream(nn.Module):
    """ViLT-style: token / patch / frame embeddings with positions, then one EarlyFusion transformer."""

    def __init__(self, size: dict, packing: bool) -> None:
        super().__init__()
        from polyfuse.fusion import EarlyFusion

        dim = size["dim"]
        self.text = nn.Embedding(size["vocab"], dim)
        self.patches = nn.Linear(size["patch_dim"], dim)
        self.frames = nn.Linear(size["mels"], dim)
        self.positions = nn.ParameterDict({name: nn.Parameter(torch.randn(size[key], dim) * 0.02) for name, key in
                                           (("text", "text"), ("image", "patches"), ("audio", "frames"))})
        self.fusion = EarlyFusion({"text": dim, "image": dim, "audio": dim}, dim, dim, size["depth"], size["heads"],
                                  dropout=0.0, project=False, class_token=False, missing_tokens=False,
                                  token_projection=False, mlp_hidden=size["mlp"], packing=packing)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        from polyfuse.batch import Encoded

        inputs = {"text": Encoded(self.text(batch["text"]) + self.positions["text"], batch["text_mask"]),
                  "image": Encoded(self.patches(batch["image"]) + self.positions["image"]),
                  "audio": Encoded(self.frames(batch["audio"]) + self.positions["audio"], batch["audio_mask"])}
        fused = self.fusion(inputs)
        return fused.pooled.square().mean() + fused.tokens.square().sum() / fused.mask.sum()


class SamplePackedDecoder(nn.Module):
    """A caption decoder over a ``(B, patches, dim)`` memory: padded, or through sample-packed rows."""

    def __init__(self, size: dict, packing: bool) -> None:
        super().__init__()
        from polyfuse.heads.decoder import CaptionDecoder

        self.decoder = CaptionDecoder(size["vocab"], size["dim"], size["dim"], size["depth"], size["heads"],
                                      mlp_ratio=size["mlp"] / size["dim"], max_positions=size["text"])
        self.packing, self.budget = packing, size["text"]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        from polyfuse.data.packing import pack_padded

        mask = batch["text_mask"]
        tokens, targets = batch["text"].masked_fill(~mask, 0), batch["targets"]
        if not self.packing:
            logits = self.decoder(tokens, batch["memory"])
            return nn.functional.cross_entropy(logits[mask], targets[mask])
        rows = pack_padded(tokens, mask.sum(1).tolist(), self.budget, labels=targets)
        logits = self.decoder.forward_rows(rows, batch["memory"])
        return nn.functional.cross_entropy(logits[rows.mask], rows.labels[rows.mask])


def build(model: str, size: dict, packing: bool) -> nn.Module:
    torch.manual_seed(0)
    if model == "vilt":
        return SingleStream(size, packing)
    if model == "decoder":
        return SamplePackedDecoder(size, packing)
    from polyfuse.encoders.text import TextTransformerEncoder

    rows = packing and model == "text-rows"
    return TextTransformerEncoder(size["vocab"], size["text"], size["dim"], size["depth"], size["heads"],
                                  mlp_hidden=size["mlp"], packing=packing and not rows,
                                  sample_packing={"budget": size["text"]} if rows else None)


def make_batch(model: str, size: dict, padding: str) -> tuple[dict[str, Tensor], int, int]:
    """``(batch, real tokens, padded tokens)`` of one step."""
    generator = torch.Generator().manual_seed(1)
    count = size["batch"]
    text = (caption_lengths(count, size["text"], generator) if padding == "coco"
            else torch.full((count,), size["text"]))
    batch = {"text": torch.randint(1, size["vocab"], (count, size["text"]), generator=generator),
             "text_mask": prefix_mask(text, size["text"])}
    real, total = int(text.sum()), count * size["text"]
    if model == "vilt":
        frames = (audio_frames(count, size["frames"], generator) if padding == "coco"
                  else torch.full((count,), size["frames"]))
        batch["image"] = torch.randn(count, size["patches"], size["patch_dim"], generator=generator)
        batch["audio"] = torch.randn(count, size["frames"], size["mels"], generator=generator)
        batch["audio_mask"] = prefix_mask(frames, size["frames"])
        real += count * size["patches"] + int(frames.sum())
        total += count * (size["patches"] + size["frames"])
    if model == "decoder":
        batch["targets"] = torch.randint(1, size["vocab"], (count, size["text"]), generator=generator)
        batch["memory"] = torch.randn(count, size["patches"], size["dim"], generator=generator)
    return batch, real, total


def loss_of(model: str, module: nn.Module, batch: dict[str, Tensor]) -> Callable[[], Tensor]:
    if model in ("vilt", "decoder"):
        return lambda: module(batch)
    mask = batch["text_mask"]

    def text_loss() -> Tensor:
        tokens, _ = module.encode(batch["text"], mask)
        return tokens.square().sum() / mask.sum()

    return text_loss


def step_for(model: str, module: nn.Module, batch: dict[str, Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, weight_decay=0.01)
    return training_step(optimizer, loss_of(model, module, batch))


def _peak_memory(model: str, size_name: str, padding: str, packing: bool, device: str, threads: int | None,
                 backend: str | None) -> float:
    """MiB: one training step in this (fresh) process; CPU peak RSS, CUDA peak allocated."""
    if threads:
        torch.set_num_threads(threads)
    if backend:
        from polyfuse.attention import set_default_backend
        set_default_backend(backend)
    size = SIZES[size_name]
    module = build(model, size, packing).to(device)
    batch, _, _ = make_batch(model, size, padding)
    step = step_for(model, module, {k: v.to(device) for k, v in batch.items()})
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device) / 2**20
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def peak_memory(*args: object) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_memory, args)


def run(model: str, args: argparse.Namespace, padding: str) -> dict:
    size = SIZES[args.size]
    batch, real, total = make_batch(model, size, padding)
    batch = {k: v.to(args.device) for k, v in batch.items()}
    padded, packed = build(model, size, False).to(args.device), build(model, size, True).to(args.device)
    packed.load_state_dict(padded.state_dict())
    with torch.no_grad():  # the same loss before any step: the two variants compute the same thing
        difference = abs(float(loss_of(model, padded, batch)()) - float(loss_of(model, packed, batch)()))
    times = interleaved_medians({"padded": step_for(model, padded, batch), "packed": step_for(model, packed, batch)},
                                args.repeats, args.warmup, args.device)
    row = dict(model=model, padding=padding, pad_fraction=1 - real / total, padded=times["padded"],
               packed=times["packed"], tokens=real, loss_difference=difference, mem_padded=None, mem_packed=None)
    if args.memory:
        extra = (args.size, padding)
        row["mem_padded"] = peak_memory(model, *extra, False, args.device, args.threads, args.attention_backend)
        row["mem_packed"] = peak_memory(model, *extra, True, args.device, args.threads, args.attention_backend)
    return row


def roundtrip_ms(args: argparse.Namespace) -> tuple[int, float]:
    """What a packed encoder feeding a packed fusion pays for the ``(B, L, D)`` contract between them:
    pad its ``(T, D)`` rows back and gather them again (forward + backward); ``(T, median ms)``."""
    from polyfuse.attention.varlen import Packing
    from polyfuse.fusion.packed import gather_valid

    size = SIZES[args.size]
    mask = make_batch("text", size, "coco")[0]["text_mask"].to(args.device)
    packing = Packing.from_mask(mask)
    rows = torch.randn(packing.total, size["dim"], device=args.device, requires_grad=True)

    def roundtrip() -> None:
        gather_valid(packing.pad(rows), mask).rows.sum().backward()

    return packing.total, 1e3 * interleaved_medians({"roundtrip": roundtrip}, max(args.repeats, 20), args.warmup,
                                                     args.device)["roundtrip"]


def report(rows: list[dict], markdown: bool) -> str:
    header = ["model", "lengths", "padding", "padded ms", "packed ms", "padded / packed", "packed tok/s",
              "padded tok/s", "peak MiB padded", "peak MiB packed"]
    lines = [[r["model"], r["padding"], f"{100 * r['pad_fraction']:.0f}%", f"{1e3 * r['padded']:.1f}",
              f"{1e3 * r['packed']:.1f}", f"{r['padded'] / r['packed']:.2f}x", f"{r['tokens'] / r['packed']:,.0f}",
              f"{r['tokens'] / r['padded']:,.0f}",
              "–" if r["mem_padded"] is None else f"{r['mem_padded']:.0f}",
              "–" if r["mem_packed"] is None else f"{r['mem_packed']:.0f}"] for r in rows]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in [header, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["text", "vilt"], choices=["text", "text-rows", "vilt", "decoder"])
    parser.add_argument("--size", default="base", choices=list(SIZES))
    parser.add_argument("--padding", nargs="*", default=["coco", "none"], choices=["coco", "none"],
                        help="coco: realistic lengths; none: every row full (0%% padding)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--attention-backend", default="sdpa", help="polyfuse attention backend (both variants)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory processes")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--roundtrip", action="store_true",
                        help="also time padding a packed encoder's output back and gathering it again")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from polyfuse.attention import set_default_backend

    set_default_backend(args.attention_backend)
    print(f"size={args.size} {SIZES[args.size]} device={args.device} threads={torch.get_num_threads()} "
          f"backend={args.attention_backend} repeats={args.repeats} warmup={args.warmup}", flush=True)
    rows = []
    for model in args.models:
        for padding in args.padding:
            rows.append(run(model, args, padding))
            row = rows[-1]
            print(f"  {model} {padding}: padded {1e3 * row['padded']:.1f} ms, packed {1e3 * row['packed']:.1f} ms, "
                  f"|loss difference| {row['loss_difference']:.2e}", flush=True)
    print(report(rows, args.markdown))
    if args.roundtrip:
        total, ms = roundtrip_ms(args)
        print(f"pad back + gather again (fwd+bwd) of {total} x {SIZES[args.size]['dim']} coco tokens: {ms:.3f} ms")


if __name__ == "__main__":
    main()
