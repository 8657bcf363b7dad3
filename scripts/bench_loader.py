"""The resumable loader against a plain DataLoader, side by side in one process, and worker memory.

``polyfuse.data.MultimodalLoader`` (torchdata ``StatefulDataLoader`` + per-sample seeding + bad-sample
accounting: what every datamodule uses) is timed against ``torch.utils.data.DataLoader`` over the
same dataset and collate function (what the datamodules used before), alternating the two within
each repeat, for AV-digits (the embedded data, image + audio + text), an image folder
(``MediaFolderReader``) and WebDataset shards, at 1 and 2 workers. ``ratio`` = new / plain; >= 1.0
means the new loader is at least as fast.

Memory: the peak RSS of the loader's worker processes after one epoch over ``--samples`` and over
10x as many samples (the index is per-sample metadata only, so it must not grow with the data).

    python scripts/bench_loader.py                    # prints a Markdown table
    python scripts/bench_loader.py --workers 2 --samples 512 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import readers, write_fixture, write_tokenizer  # noqa: E402  (scripts/ is not a package)

from polyfuse.data import (AudioPipeline, BadSampleTracker, DecodedDataset, DecodedIterableDataset,  # noqa: E402
                           ImagePipeline, MultimodalCollate, MultimodalLoader, SampleDecoder, TextPipeline)


def avdigits_dataset(batch: int) -> tuple[Dataset, Callable]:
    from polyfuse.cli.config import repo_root
    from polyfuse.training import AVDigitsDataModule

    datamodule = AVDigitsDataModule(repo_root() / "data" / "avdigits", batch_size=batch)
    return datamodule.dataset("train"), datamodule.collate("train")


def reader_dataset(reader: Dataset, modalities: tuple[str, ...], pipelines: dict[str, Any]) -> tuple[Dataset, Callable]:
    decoder = SampleDecoder(modalities, train=True, **pipelines)
    streaming = isinstance(reader, IterableDataset)
    dataset = (DecodedIterableDataset if streaming else DecodedDataset)(reader, decoder)
    collate = MultimodalCollate(list(modalities), targets=tuple(getattr(reader, "targets", ())),
                                pad_values={"text": pipelines["text"].pad_id}, shapes={"image": pipelines["image"].shape})
    return dataset, collate


def loaders(dataset: Dataset, collate: Callable, batch: int, workers: int) -> dict[str, Callable[[], Any]]:
    shuffle = not isinstance(dataset, IterableDataset)
    return {"plain": lambda: DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=workers,
                                        collate_fn=collate),
            "new": lambda: MultimodalLoader(dataset, batch_size=batch, shuffle=shuffle, seed=0, num_workers=workers,
                                            collate_fn=collate, persistent_workers=False, train=True,
                                            tracker=BadSampleTracker("bench"))}


def workers_rss_mib() -> float:
    """Resident memory of this process's children (the DataLoader workers), from /proc (Linux)."""
    total = 0
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def epoch_rate(make: Callable[[], Any]) -> tuple[float, float]:
    """Samples/s of one epoch (workers started inside the timing) and the workers' peak RSS in MiB."""
    loader = make()
    start, samples, peak = time.perf_counter(), 0, 0.0
    for batch in loader:
        samples += batch.batch_size
        peak = max(peak, workers_rss_mib())
    return samples / (time.perf_counter() - start), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--samples", type=int, default=768, help="samples written per format")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating epochs per loader; the best is reported")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="polyfuse_bench_loader_"))
    write_fixture(workdir / "small", args.samples, (384, 288))
    write_fixture(workdir / "large", 10 * args.samples, (96, 72))  # small JPEGs: the count is what matters here
    pipelines = {"image": ImagePipeline(size=32, mode="L"), "audio": AudioPipeline(sample_rate=8000, max_seconds=1.5),
                 "text": TextPipeline(write_tokenizer(workdir / "tokenizer.json"), max_length=32)}
    cases: dict[str, Callable[[str], tuple[Dataset, Callable]]] = {
        "avdigits": lambda size: avdigits_dataset(args.batch_size)}
    for name in ("media_folder", "webdataset"):
        def make(size: str, name: str = name) -> tuple[Dataset, Callable]:
            factory, modalities = readers(workdir / size, workdir / size / "hf_cache")[name]
            return reader_dataset(factory(), modalities, pipelines)
        cases[name] = make

    print(f"batch {args.batch_size}, {args.samples} samples (AV-digits: its training split), best of "
          f"{args.repeats}, {torch.get_num_threads()} threads\n")
    print("| data | workers | plain DataLoader (samples/s) | MultimodalLoader (samples/s) | ratio | worker RSS, "
          f"{args.samples} -> {10 * args.samples} samples (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, build in cases.items():
        dataset, collate = build("small")
        for workers in args.workers:
            best = {"plain": 0.0, "new": 0.0}
            memory = 0.0
            for _ in range(args.repeats):
                for kind, make in loaders(dataset, collate, args.batch_size, workers).items():
                    rate, rss = epoch_rate(make)
                    best[kind] = max(best[kind], rate)
                    if kind == "new":
                        memory = max(memory, rss)
            if name == "avdigits":
                grown = "(fixed size)"
            else:
                large, large_collate = build("large")
                _, large_rss = epoch_rate(loaders(large, large_collate, args.batch_size, workers)["new"])
                grown = f"{memory:.0f} -> {large_rss:.0f}"
            print(f"| {name} | {workers} | {best['plain']:.0f} | {best['new']:.0f} | "
                  f"{best['new'] / best['plain']:.2f} | {grown} |", flush=True)


if __name__ == "__main__":
    main()
