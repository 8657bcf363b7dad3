#!/usr/bin/env python
"""Video benchmarks: clip decoding throughput and encoder training-step time, side by side in one process.

1. Decode + sample (clips/s through a DataLoader, 1 and 2 workers) of the AV-digits clips:
   polyfuse's reader (``MediaFolderReader`` + ``SampleDecoder`` with ``VideoPipeline`` and the sound
   track through ``AudioPipeline``) against a baseline decoder on the same files and the same
   output (8 frames, 32x32 greyscale): OpenCV's ``cv2.VideoCapture`` when ``cv2`` is importable
   (``pip install opencv-python-headless``), else a plain PyAV loop that converts every frame and
   samples afterwards (torchvision 0.29 has no video decoder any more). Video only, so both sides do
   the same work.
2. Training-step time (forward + backward + AdamW) of the factorised (ViViT) and divided (TimeSformer)
   encoders at T = 8 and 16 on 32x32 greyscale clips, batch 8, median of ``--steps`` steps.

Usage: ``python scripts/bench_video.py [--clips 200] [--steps 10] [--baseline auto|opencv|pyav]``
(``--clips 16 --steps 1``: a smoke run of a minute). Prints one table per part and the load average
(1 minute) before and after, since other jobs on the machine change every number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from polyfuse.batch import ModalityInput
from polyfuse.data import DecodedDataset, MediaFolderReader, SampleDecoder, VideoPipeline
from polyfuse.data.video_sampling import segment_indices
from polyfuse.encoders import FrameTemporalEncoder, VideoViTEncoder, ViTEncoder

CLIPS = Path(__file__).resolve().parents[1] / "data" / "avdigits" / "video"


class BaselineClips(Dataset):
    """The same clips decoded by the baseline: every frame converted, 8 sampled, resized, normalised."""

    def __init__(self, paths: list[str], frames: int = 8, size: int = 32, opencv: bool = True) -> None:
        self.paths, self.frames, self.size, self.opencv = paths, frames, size, opencv

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, path: str) -> np.ndarray:
        if not self.opencv:
            import av

            with av.open(path) as container:
                return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
        import cv2

        capture, frames = cv2.VideoCapture(path), []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        capture.release()
        return np.stack(frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        frames = self._decode(self.paths[index])
        clip = torch.from_numpy(frames[segment_indices(len(frames), self.frames, train=False)]).float()[:, None]
        clip = torch.nn.functional.interpolate(clip, size=(self.size, self.size), mode="bilinear")
        return (clip / 255.0 - 0.5) / 0.5


def throughput(dataset: Dataset, workers: int, batch: int = 16) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=list, persistent_workers=True)
    for _ in loader:  # a first epoch starts the workers (kept for the timed one) and warms the file cache
        pass
    start, count = time.perf_counter(), 0
    for samples in loader:
        count += len(samples)
    return count / (time.perf_counter() - start)


def step_time(encoder: torch.nn.Module, frames: int, steps: int, batch: int = 8) -> float:
    head = torch.nn.Linear(encoder.out_dim, 10)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
    clips, labels = torch.randn(batch, frames, 1, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        logits = head(encoder(ModalityInput(clips)).pooled())
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--baseline", choices=("auto", "opencv", "pyav"), default="auto",
                        help="decoder compared with polyfuse's: OpenCV (auto: when cv2 is importable) or plain PyAV")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch threads: {torch.get_num_threads()}")
    try:
        import cv2  # noqa: F401
        has_opencv = True
    except ImportError:
        has_opencv = False
    if args.baseline == "opencv" and not has_opencv:
        raise SystemExit("--baseline opencv needs cv2: pip install opencv-python-headless")
    opencv = args.baseline == "opencv" or (args.baseline == "auto" and has_opencv)
    baseline_name = "OpenCV VideoCapture" if opencv else "plain PyAV (all frames)"
    reader = MediaFolderReader(CLIPS, split="train")
    subset = [reader[i] for i in range(min(args.clips, len(reader)))]
    ours = DecodedDataset(subset, SampleDecoder(["video"], video=VideoPipeline(num_frames=8, size=32, mode="L",
                                                                               mean=[0.5], std=[0.5])))
    baseline = BaselineClips([row["video"] for row in subset], opencv=opencv)
    print(f"decode + sample, {len(subset)} AV-digits clips (8 frames, 32x32), clips/s")
    print(f"| workers | polyfuse VideoPipeline | {baseline_name} | ratio |\n|---|---|---|---|")
    for workers in (1, 2):
        mine, theirs = throughput(ours, workers), throughput(baseline, workers)
        print(f"| {workers} | {mine:.0f} | {theirs:.0f} | {mine / theirs:.2f} |")
    print("\ntraining step (forward + backward + AdamW), batch 8, 32x32 greyscale, ms (median)")
    print("| encoder | T = 8 | T = 16 |\n|---|---|---|")
    frame = lambda: ViTEncoder(image_size=32, patch_size=4, in_chans=1, dim=64, depth=2, heads=4, mlp_ratio=2.0,
                               output="pooled")
    builders = {
        "factorised (vit_tiny per frame + 1 temporal block)": lambda: FrameTemporalEncoder(frame(), depth=1, max_frames=16),
        "divided (TimeSformer, 2 blocks)": lambda: VideoViTEncoder(num_frames=16, dim=64, depth=2, heads=4, mlp_ratio=2.0),
    }
    for name, build in builders.items():
        cells = [f"{step_time(build(), frames, args.steps):.0f}" for frames in (8, 16)]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
