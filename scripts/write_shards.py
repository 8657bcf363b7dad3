"""Write WebDataset tar shards from any data config (docs/data.md).

Examples::

    python scripts/write_shards.py data=coco_karpathy --out data/shards/coco_karpathy
    python scripts/write_shards.py data=vqav2 data.root=/datasets/vqa --splits train val --maxcount 2000
    python scripts/write_shards.py data=av_folder data.root=~/my_clips --out /fast/shards/my_clips --shuffle

Each split goes to ``<out>/<split>/shard-NNNNNN.tar`` with an ``index.json``; read them back with
``data=webdataset data.root=<out>``. Media files are copied byte for byte, so the shards decode to
the same tensors as the original reader. ``--shuffle`` mixes samples across shards (recommended for
training splits whose samples come grouped, e.g. the five captions of an image).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch.utils.data import IterableDataset

from polyfuse.cli.config import config_dir, register_resolvers
from polyfuse.data import write_shards


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=coco_karpathy data.root=/datasets/coco")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/shards/<data config>)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to write (default: every split of the config)")
    parser.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    parser.add_argument("--maxsize", type=float, default=1e9, help="bytes per shard (whichever limit comes first)")
    parser.add_argument("--shuffle", action="store_true", help="write samples in a random order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="stop at the first missing/unreadable file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args.overrides)
    with open_dict(cfg):
        cfg.data.num_workers = 0
    choice = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("data=")), "data")
    out = args.out or Path(cfg.paths.data_dir) / "shards" / choice
    datamodule = hydra.utils.instantiate(cfg.data)
    for split in args.splits or list(cfg.data.splits):
        reader = datamodule.reader(split)
        if isinstance(reader, IterableDataset):  # e.g. re-sharding shards: stream them as they come
            samples = iter(reader)
        else:
            order = list(range(len(reader)))
            if args.shuffle:
                random.Random(args.seed).shuffle(order)
            samples = (reader[i] for i in order)
        start = time.perf_counter()
        index = write_shards(samples, out / split / "shard-%06d.tar", maxcount=args.maxcount,
                             maxsize=args.maxsize, strict=args.strict, modalities=getattr(reader, "modalities", ()),
                             targets=getattr(reader, "targets", ()))
        skipped = len(getattr(reader, "bad_records", [])) + index["skipped"]
        print(f"{split}: {index['total']} samples in {len(index['shards'])} shards at {out / split} "
              f"({skipped} skipped, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
