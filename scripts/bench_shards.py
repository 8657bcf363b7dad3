"""Reading WebDataset shards: polyfuse's ShardReader against the webdataset library, in one process.

Both read the same tar shards into per-sample dicts of undecoded member bytes (decoding is the same
code afterwards, so it is left out): ``polyfuse.data.ShardReader`` (its own tar member grouping,
rank/worker split, shuffle buffer, bad-record accounting) and ``webdataset.WebDataset`` (its
``tarfile``-based pipeline, the maintained engine), each without shuffling and with a 1,000-sample
shuffle buffer. Alternating repeats; the best of each is reported, with the ratio polyfuse / webdataset.

    python scripts/bench_shards.py --samples 4096 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

sys.path.insert(0, str(Path(__file__).parent))
from bench_data import write_fixture  # noqa: E402  (scripts/ is not a package)

from polyfuse.data import CocoCaptionsReader, ShardReader, write_shards  # noqa: E402


def rate(make: Callable[[], Iterable]) -> float:
    start, count = time.perf_counter(), 0
    for _ in make():
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import webdataset as wds

    root = Path(tempfile.mkdtemp(prefix="polyfuse_bench_shards_"))
    write_fixture(root, args.samples, (384, 288))
    coco = CocoCaptionsReader(root / "coco" / "captions.json", root / "images")
    write_shards((coco[i] for i in range(len(coco))), root / "shards" / "shard-%06d.tar", maxcount=512,
                 modalities=("image", "text"), targets=coco.targets)
    urls = sorted(str(path) for path in (root / "shards").glob("*.tar"))
    cases = {
        "in order": (lambda: ShardReader(urls, shuffle=False),
                     lambda: wds.WebDataset(urls, shardshuffle=False, empty_check=False)),
        "shuffled (buffer 1000)": (lambda: ShardReader(urls, shuffle=True, shuffle_buffer=1000),
                                   lambda: wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False).shuffle(1000)),
    }
    print(f"{args.samples} samples in {len(urls)} shards of 384x288 JPEG + caption, one process, best of {args.repeats}\n")
    print("| reading | polyfuse ShardReader (samples/s) | webdataset.WebDataset (samples/s) | ratio |")
    print("|---|---|---|---|")
    for name, (ours, theirs) in cases.items():
        best = [0.0, 0.0]
        for _ in range(args.repeats):
            best[0] = max(best[0], rate(ours))
            best[1] = max(best[1], rate(theirs))
        print(f"| {name} | {best[0]:.0f} | {best[1]:.0f} | {best[0] / best[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
