"""Samples/s of every reader with 0, 1 and 2 DataLoader workers, measured side by side in one process.

For each reader the same synthetic dataset (JPEG photos, FLAC clips, captions) is written in the
reader's real format, then loaded the way training loads it: shuffled, decoded and transformed in
workers (training transforms: RandomResizedCrop + normalise; audio resampled and cropped; text
tokenised), collated into a :class:`~polyfuse.batch.Batch` with masks. Each rate is compared with

* a plain ``torchvision.datasets.ImageFolder`` + ``DataLoader`` over the same JPEG files, with the
  same output size, batch size and worker count (``ratio`` = reader / baseline; >= 1.0 means the
  reader is at least as fast as the plain baseline while doing more), and
* the rate the default training step consumes: forward + backward + AdamW step of the default
  model (``configs/train.yaml``) on a batch of the same size, in this process on this machine
  (``vs step`` = reader with the most workers / training step; >= 1.0 means the loader keeps up).

Defaults match the default model's inputs (32x32 greyscale images, 1.5 s of 8 kHz audio, 32 tokens)
read from 384x288 JPEGs and 2 s 16 kHz FLAC clips. Examples::

    python scripts/bench_data.py                          # every reader, 0/1/2 workers
    python scripts/bench_data.py --image-size 224 --mode RGB --samples 768
    python scripts/bench_data.py --readers coco_captions webdataset --workers 2 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from polyfuse.data import (AudioPipeline, BadSampleTracker, CocoCaptionsReader, CsvCaptionsReader,
                           DecodedDataset, DecodedIterableDataset, HFDatasetReader, ImagePipeline,
                           KarpathyCaptionsReader, MediaFolderReader, MultimodalCollate, MultimodalLoader, SampleDecoder, ShardReader,
                           TextPipeline, VQAv2Reader, write_shards)

WORDS = "a the dog cat man woman child on with red blue green car bench table sits runs holds looks near".split()
CLASSES = 10


def write_fixture(root: Path, samples: int, source_size: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """The same data in every format: ImageFolder tree, COCO/Karpathy/VQAv2 JSON, TSV, parquet, AV folder."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = source_size
    images, captions, labels = [], [], []
    grid = np.stack(np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height)), -1)
    for index in range(samples):
        label = index % CLASSES
        phase = rng.uniform(0, 6, 3)
        photo = 127 + 100 * np.sin(grid[..., :1] * (3 + phase) + grid[..., 1:] * (2 + phase[::-1]))
        photo = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
        path = root / "images" / f"class{label}" / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(path, quality=90)
        images.append(path.relative_to(root / "images").as_posix())
        captions.append(" ".join(rng.choice(WORDS, rng.integers(6, 13))))
        labels.append(label)
    clips = root / "av" / "audio"
    clips.mkdir(parents=True)
    for index in range(samples):
        sf.write(clips / f"{index:06d}.flac", (0.1 * rng.standard_normal(32000)).astype(np.float32), 16000)
    image_ids = list(range(samples))
    _write_json(root / "coco" / "captions.json", {
        "images": [{"id": i, "file_name": images[i], "height": height, "width": width} for i in image_ids],
        "annotations": [{"id": i, "image_id": i, "caption": captions[i]} for i in image_ids]})
    _write_json(root / "karpathy.json", {"dataset": "coco", "images": [
        {"filename": images[i], "filepath": "images", "imgid": i, "cocoid": i, "split": "train", "sentids": [i],
         "sentences": [{"raw": captions[i], "tokens": captions[i].split(), "imgid": i, "sentid": i}]}
        for i in image_ids]})
    _write_json(root / "vqa" / "questions.json", {"data_subtype": "train2014", "questions": [
        {"question_id": i, "image_id": i, "question": f"what is the {WORDS[i % len(WORDS)]} ?"} for i in image_ids]})
    _write_json(root / "vqa" / "annotations.json", {"annotations": [
        {"question_id": i, "image_id": i, "multiple_choice_answer": "dog", "answer_type": "other",
         "answers": [{"answer": "dog", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]}
        for i in image_ids]})
    coco_names = root / "vqa" / "train2014"  # VQAv2's COCO file names, linked to the same JPEGs
    coco_names.mkdir(parents=True)
    for i in image_ids:
        (coco_names / f"COCO_train2014_{i:012d}.jpg").symlink_to(root / "images" / images[i])
    (root / "train.tsv").write_text("filepath\ttitle\n" + "".join(
        f"images/{images[i]}\t{captions[i]}\n" for i in image_ids))
    (root / "av" / "metadata.jsonl").write_text("".join(json.dumps(
        {"id": str(i), "image": f"../images/{images[i]}", "audio": f"audio/{i:06d}.flac", "text": captions[i],
         "label": labels[i]}) + "\n" for i in image_ids))
    import datasets

    datasets.disable_progress_bars()
    parquet = datasets.Dataset.from_dict(
        {"image": [{"bytes": (root / "images" / p).read_bytes(), "path": p} for p in images], "text": captions,
         "label": labels},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                    "label": datasets.Value("int64")}))
    parquet.to_parquet(str(root / "parquet" / "train.parquet"))
    return {"root": root}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "?", "what", "is", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


def readers(root: Path, cache: Path) -> dict[str, tuple[Callable[[], Dataset], tuple[str, ...]]]:
    """name -> (reader factory, modalities it is benchmarked with)."""
    it = ("image", "text")

    def shards() -> ShardReader:
        if not (root / "shards").is_dir():
            coco = CocoCaptionsReader(root / "coco" / "captions.json", root / "images")
            write_shards((coco[i] for i in range(len(coco))), root / "shards" / "shard-%06d.tar", maxcount=128,
                         targets=coco.targets)
        return ShardReader(root / "shards", shuffle=True, shuffle_buffer=256)

    return {
        "media_folder": (lambda: MediaFolderReader(root / "images"), ("image",)),
        "coco_captions": (lambda: CocoCaptionsReader(root / "coco" / "captions.json", root / "images"), it),
        "karpathy": (lambda: KarpathyCaptionsReader(root / "karpathy.json", root, split="train"), it),
        "vqav2": (lambda: VQAv2Reader(root / "vqa" / "questions.json", root / "vqa",
                                      root / "vqa" / "annotations.json"), it),
        "csv": (lambda: CsvCaptionsReader(root / "train.tsv"), it),
        "hf_imagefolder": (lambda: HFDatasetReader(root / "images", builder="imagefolder",
                                                   columns={"image": "image", "label": "label"},
                                                   load_kwargs={"cache_dir": str(cache)}), ("image",)),
        "hf_parquet": (lambda: HFDatasetReader(root / "parquet", builder="parquet",
                                               data_files={"train": str(root / "parquet" / "*.parquet")},
                                               columns={"image": "image", "text": "text", "label": "label"},
                                               load_kwargs={"cache_dir": str(cache)}), it),
        "webdataset": (shards, it),
        "av_folder[image]": (lambda: MediaFolderReader(root / "av"), ("image",)),
        "av_folder": (lambda: MediaFolderReader(root / "av"), ("image", "audio", "text")),
    }


def rate(make_loader: Callable[[], DataLoader], batches: int, repeats: int) -> float:
    """Samples per second after the first batch (worker start-up excluded), best of ``repeats`` epochs
    (the best run is the one least disturbed by other processes on a shared machine)."""
    best = 0.0
    for _ in range(repeats):
        iterator = iter(make_loader())
        next(iterator)
        count, start = 0, time.perf_counter()
        for batch in islice(iterator, batches):
            count += batch.batch_size if hasattr(batch, "batch_size") else len(batch[0])
        best = max(best, count / (time.perf_counter() - start))
        del iterator
    return best


def baseline_loader(root: Path, size: int, mode: str, batch: int, workers: int) -> DataLoader:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import InterpolationMode, v2

    channels = 3 if mode == "RGB" else 1
    steps = [v2.Grayscale()] if mode == "L" else []
    steps += [v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True),
              v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
              v2.Normalize([0.485, 0.456, 0.406][:channels] if channels == 3 else [0.5],
                           [0.229, 0.224, 0.225][:channels] if channels == 3 else [0.5])]
    dataset = ImageFolder(str(root / "images"), transform=v2.Compose(steps))
    return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                      persistent_workers=False)


def reader_loader(reader: Dataset, modalities: tuple[str, ...], pipelines: dict[str, Any], batch: int,
                  workers: int) -> MultimodalLoader:
    decoder = SampleDecoder(modalities, train=True, **pipelines)
    streaming = isinstance(reader, torch.utils.data.IterableDataset)
    dataset = (DecodedIterableDataset if streaming else DecodedDataset)(reader, decoder)
    collate = MultimodalCollate(list(modalities), targets=tuple(getattr(reader, "targets", ())),
                                pad_values={"text": pipelines["text"].pad_id}, shapes={"image": pipelines["image"].shape})
    return MultimodalLoader(dataset, batch_size=batch, shuffle=not streaming, seed=0, num_workers=workers,
                            collate_fn=collate, persistent_workers=False, train=True, tracker=BadSampleTracker("bench"))


def training_step_rate(batch_size: int, repeats: int = 5) -> float:
    """Samples/s of forward + backward + AdamW step of the default model (configs/train.yaml)."""
    import hydra
    from hydra import compose, initialize_config_dir

    from polyfuse.batch import Batch, ModalityInput
    from polyfuse.cli.config import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train")
    module = hydra.utils.instantiate(cfg.model)
    generator = torch.Generator().manual_seed(0)
    audio_len, text_len = int(cfg.data.max_audio_seconds * 8000), int(cfg.data.max_text_length)
    text = torch.randint(4, 100, (batch_size, text_len), generator=generator)
    batch = Batch(inputs={
        "image": ModalityInput(torch.randn(batch_size, 1, 32, 32, generator=generator)),
        "audio": ModalityInput(torch.randn(batch_size, audio_len, generator=generator) * 0.1,
                               torch.ones(batch_size, audio_len, dtype=torch.bool)),
        "text": ModalityInput(text, torch.ones_like(text, dtype=torch.bool))},
        targets={"label": torch.randint(0, 10, (batch_size,), generator=generator)},
        ids=[str(i) for i in range(batch_size)])
    model = module.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for step in range(repeats + 2):
        start = time.perf_counter()
        output = model(batch)
        loss = model.head.loss(output.outputs, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", nargs="+", default=None, help="subset of readers (default: all)")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=1536, help="samples written per format")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--mode", default="L", choices=["L", "RGB"])
    parser.add_argument("--source-size", type=int, nargs=2, default=[384, 288], help="stored JPEG width height")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per setting; the best is reported")
    parser.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size (PIL draft off)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated files here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="polyfuse_bench_data_"))
    if not (workdir / "images").is_dir():
        print(f"writing {args.samples} samples per format to {workdir} ...", flush=True)
        write_fixture(workdir, args.samples, tuple(args.source_size))
    pipelines = {"image": ImagePipeline(size=args.image_size, mode=args.mode, jpeg_draft=not args.no_draft),
                 "audio": AudioPipeline(sample_rate=8000, max_seconds=1.5),
                 "text": TextPipeline(write_tokenizer(workdir / "tokenizer.json"), max_length=32)}
    batches = args.samples // args.batch_size - 2
    step = training_step_rate(args.batch_size)
    print(f"default training step (forward + backward + AdamW, batch {args.batch_size}): {step:.0f} samples/s",
          flush=True)
    results: dict[str, dict[str, Any]] = {}
    baseline = {w: rate(lambda: baseline_loader(workdir, args.image_size, args.mode, args.batch_size, w), batches,
                        args.repeats) for w in args.workers}
    results["torchvision_imagefolder"] = {"modalities": ["image"], "rates": baseline}
    print(f"baseline torchvision ImageFolder: " + ", ".join(f"{w} workers {r:.0f}/s" for w, r in baseline.items()),
          flush=True)
    for name, (factory, modalities) in readers(workdir, workdir / "hf_cache").items():
        if args.readers and name not in args.readers:
            continue
        reader = factory()
        rates = {w: rate(lambda: reader_loader(reader, modalities, pipelines, args.batch_size, w), batches,
                         args.repeats) for w in args.workers}
        results[name] = {"modalities": list(modalities), "rates": rates}
        print(f"{name}: " + ", ".join(f"{w} workers {r:.0f}/s (x{r / baseline[w]:.2f})" for w, r in rates.items()),
              flush=True)

    most = max(args.workers)
    header = " | ".join(f"{w} workers" for w in args.workers)
    print(f"\n{args.image_size}x{args.image_size} {args.mode}, batch {args.batch_size}, {args.samples} samples, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}, "
          f"JPEG draft {'off' if args.no_draft else 'on'}; training step consumes {step:.0f} samples/s\n")
    print(f"| reader | modalities | {header} | ratio vs ImageFolder ({', '.join(map(str, args.workers))}) "
          f"| vs step ({most} workers) |")
    print("|---|---|" + "---|" * len(args.workers) + "---|---|")
    for name, result in results.items():
        rates = result["rates"]
        ratios = ", ".join(f"{rates[w] / baseline[w]:.2f}" for w in args.workers)
        cells = " | ".join(f"{rates[w]:.0f}" for w in args.workers)
        print(f"| {name} | {'+'.join(result['modalities'])} | {cells} | {ratios} | {rates[most] / step:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json), "workdir": str(workdir)},
                                         "training_step": step, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
