"""Bad data never hangs or desynchronises DDP ranks (issue #17, item 4).

2-process DDP (``trainer=ddp_sim``: gloo, CPU) contrastive image/audio/text training on a media
folder whose corrupt image, corrupt audio, empty-caption and malformed-JSON records sit where only
rank 0 reads them in the first epoch -- its whole first batch is bad. The run finishes, every rank
reports the same global counts, and every good sample is trained on exactly once per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polyfuse.data.loader import EpochSampler

from . import bad_data_worker as worker
from .harness import run_worker, tail

TRAIN, VAL, SEED = 16, 6, 42  # SEED: configs/train.yaml, the seed of the loaders' sample order


def _rank0_first_batch() -> list[int]:
    """The training indices of rank 0's first batch in epoch 0 (the training loader's EpochSampler)."""
    sampler = EpochSampler(TRAIN, seed=SEED, shuffle=True, rank=0, world_size=2, pad=True)
    sampler.set_epoch(0)
    return [index for _, index in sampler][: worker.BATCH]


def write_image(path: Path, seed: int) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(path)
    return path


def write_audio(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(2000)).astype(np.float32), 8000)
    return path


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x00not a real media file\xff" * 4)


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog", "cat", "barks", "meows"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


def _split(root: Path, split: str, count: int, bad: dict[int, str]) -> list[str]:
    """``count`` image + audio + caption records, ``bad[index]`` naming what is wrong with one;
    a malformed JSON line at the end. Returns the ids of the good records."""
    lines, good = [], []
    for index in range(count):
        image = write_image(root / split / "frames" / f"{index}.png", seed=index)
        clip = write_audio(root / split / "audio" / f"{index}.wav", seed=index)
        record = {"id": f"{split}{index}", "image": f"frames/{image.name}", "audio": f"audio/{clip.name}",
                  "text": ["a dog barks", "a cat meows"][index % 2], "label": index % 2}
        kind = bad.get(index)
        if kind == "image":
            corrupt(image)
        elif kind == "audio":
            corrupt(clip)
        elif kind == "text":
            record["text"] = ""
        else:
            good.append(record["id"])
        lines.append(json.dumps(record))
    lines.append('{"id": "broken", "image": "frames/0.png", "text": ')  # a malformed JSON record
    (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return good


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_data_ddp")
    first = _rank0_first_batch()
    kinds = dict(zip(first, ["image", "image", "audio", "text"]))
    good = {"train": _split(tmp / "av", "train", TRAIN, kinds), "val": _split(tmp / "av", "val", VAL, {2: "image"})}
    _split(tmp / "av", "test", 2, {})
    out = tmp / "out"
    out.mkdir()
    proc = run_worker(worker, out, tmp / "av", _tokenizer(tmp / "t.json"), timeout=300)
    paths = [out / f"rank{rank}.pt" for rank in range(2)]
    assert proc.returncode == 0 and all(p.is_file() for p in paths), tail(proc.stdout + proc.stderr, 5000)
    return [torch.load(p, weights_only=False) for p in paths], good, first


@pytest.mark.slow
def test_every_rank_reports_the_global_bad_sample_counts(run):
    ranks, good, _ = run
    expected = [{"epoch": epoch, "good": 12, "bad": 4, "index_errors": 1} for epoch in range(worker.EPOCHS)]
    for result in ranks:
        assert result["world_size"] == 2
        assert result["history"]["train"] == expected
        # validation: unpadded or padded per-rank shards, one bad image counted once over both ranks
        assert [entry["bad"] for entry in result["history"]["val"]] == [1] * worker.EPOCHS


@pytest.mark.slow
def test_ranks_stay_in_step_and_train_on_every_good_sample_once_per_epoch(run):
    ranks, good, first = run
    steps = [len(result["rows"]) for result in ranks]
    assert steps[0] == steps[1] == worker.EPOCHS * TRAIN // (2 * worker.BATCH)
    for epoch in range(worker.EPOCHS):
        valid_ids = [sample for result in ranks for e, ids, valid, _ in result["rows"] if e == epoch
                     for sample, ok in zip(ids, valid) if ok]
        assert sorted(valid_ids) == sorted(good["train"])  # each good sample exactly once
    assert sum(ok for result in ranks for _, _, valid, _ in result["rows"] for ok in valid) == 12 * worker.EPOCHS
    # the bad records were all in rank 0's first batch: a batch of placeholders, no hang; with
    # local_loss=false every rank computes the loss over the global batch's valid rows, so rank 0's
    # loss is rank 1's (computed on rank 1's 4 valid pairs only)
    epoch, ids, valid, loss = ranks[0]["rows"][0]
    assert epoch == 0 and not any(valid) and loss == ranks[1]["rows"][0][3] > 0
    assert ids == [f"train{index}" for index in first]
    assert all(all(valid) for e, _, valid, _ in ranks[1]["rows"] if e == 0)
    assert all(np.isfinite(loss) for result in ranks for *_, loss in result["rows"])
