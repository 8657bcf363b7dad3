#!/usr/bin/env python
"""Build the AV-digits clips: a handwritten digit moving across the frame, its spoken name as the sound track.

Deterministic, from the embedded AV-digits files (no download): for each chosen AV-digits record,
its 32x32 digit image is shrunk to 16x16 and moved along a straight line in one of 8 directions
(Moving-MNIST style, Srivastava et al., 2015) over ``--frames`` frames of a 32x32 clip at 8 fps;
the record's spoken digit (synthetic voices; the recorded human voice for ``test_real``) is the
sound track. The clip is a real MPEG-4/AAC ``.mp4`` (PyAV), decoded by polyfuse through the same
path as user videos. Each split folder holds the clips and a ``metadata.jsonl``::

    {"id": "0007", "video": "0007.mp4", "label": 3, "text": "the digit three moving up and left",
     "direction": "up and left", "source_id": "0007"}

``tokenizer.json`` is the AV-digits word-level tokenizer with the motion words added. Usage::

    python scripts/build_avdigits_video.py --src data/avdigits --out data/avdigits/video

Every clip depends only on ``--seed`` and its record id (the same bytes with the same PyAV build);
``--per-split`` caps the clips per split (the first records of each split are taken).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from polyfuse.data.video_writer import write_video

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIRECTIONS = {(0, -1): "up", (0, 1): "down", (-1, 0): "left", (1, 0): "right", (-1, -1): "up and left",
              (1, -1): "up and right", (-1, 1): "down and left", (1, 1): "down and right"}
MOTION_WORDS = ["moving", "up", "down", "left", "right"]
SIZE, DIGIT, FPS = 32, 16, 8
DEFAULT_COUNTS = {"train": 400, "val": 100, "test": 100, "test_real": 100}


def trajectory(rng: random.Random, frames: int) -> tuple[list[tuple[int, int]], str]:
    """Top-left corners of the digit on each frame (a straight line inside the canvas) and its direction."""
    (dx, dy), name = rng.choice(sorted(DIRECTIONS.items()))
    speed = (SIZE - DIGIT) / max(frames - 1, 1) * rng.uniform(0.6, 1.0)
    travel = speed * (frames - 1)
    start = [rng.uniform(travel if d < 0 else 0, SIZE - DIGIT - (travel if d > 0 else 0)) if d
             else rng.uniform(0, SIZE - DIGIT) for d in (dx, dy)]
    return [(round(start[0] + dx * speed * t), round(start[1] + dy * speed * t)) for t in range(frames)], name


def render(digit: np.ndarray, corners: list[tuple[int, int]]) -> np.ndarray:
    """``uint8 (T, SIZE, SIZE, 3)``: the ``DIGIT x DIGIT`` digit pasted at each corner on black."""
    clip = np.zeros((len(corners), SIZE, SIZE), dtype=np.uint8)
    for frame, (x, y) in zip(clip, corners):
        frame[y: y + DIGIT, x: x + DIGIT] = np.maximum(frame[y: y + DIGIT, x: x + DIGIT], digit)
    return np.repeat(clip[..., None], 3, axis=-1)


def build_clip(record: dict, src: Path, out: Path, seed: int, frames: int) -> dict:
    rng = random.Random(f"{seed}/{record['id']}")
    image = np.asarray(Image.open(src / record["image"]).convert("L"))
    if image.mean() > 127:  # ink should be bright on a black background
        image = 255 - image
    digit = np.asarray(Image.fromarray(image).resize((DIGIT, DIGIT), Image.BILINEAR))
    corners, direction = trajectory(rng, frames)
    audio, rate = sf.read(src / record["audio"], dtype="float32", always_2d=True)
    name = f"{record['id']}.mp4"
    write_video(out / name, render(digit, corners), fps=FPS, audio=audio.mean(axis=1), sample_rate=rate)
    word = WORDS[int(record["label"])]
    text = f"the digit {word} moving {direction}"
    return {"id": record["id"], "video": name, "label": int(record["label"]), "text": text, "caption": text,
            "direction": direction, "source_id": record["id"]}


def write_tokenizer(src: Path, out: Path) -> None:
    """AV-digits' word-level tokenizer with the motion words appended to its vocabulary."""
    tokenizer = json.loads((src / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    for word in MOTION_WORDS:
        vocab.setdefault(word, max(vocab.values()) + 1)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("data/avdigits"))
    parser.add_argument("--out", type=Path, default=Path("data/avdigits/video"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--per-split", type=int, default=None, help="clips per split (default: 400/100/100/100)")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_COUNTS))
    args = parser.parse_args()
    records = [json.loads(line) for line in (args.src / "metadata.jsonl").read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(args.src, args.out)
    total = 0
    for split in args.splits:
        count = args.per_split or DEFAULT_COUNTS[split]
        chosen = [r for r in records if r["split"] == split][:count]
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = [build_clip(record, args.src, folder, args.seed, args.frames) for record in chosen]
        (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        size = sum((folder / row["video"]).stat().st_size for row in rows)
        total += size
        print(f"{split}: {len(rows)} clips, {size / 1e6:.2f} MB")
    print(f"total {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
