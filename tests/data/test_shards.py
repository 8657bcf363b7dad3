"""WebDataset shards: writing from any reader, round trip, exactly-once over ranks x workers, bad shards."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from polyfuse.data import (BadSample, DataFileError, CocoCaptionsReader, DecodedIterableDataset, KarpathyCaptionsReader,
                           MediaFolderReader, SampleDecoder,
                           ShardReader, VQAv2Reader, write_shards)

from .media import decode_all, write_audio, write_image, write_json
from .test_folder import _av_folder
from .test_vqa import _vqa

AV = ("image", "audio", "text")
pytest.importorskip("webdataset")


def _numbered_shards(root: Path, shards: int = 8, per_shard: int = 5) -> list[str]:
    """``shards`` tars of ``per_shard`` samples whose JSON carries a unique number."""
    samples = ({"id": f"s{i}", "text": f"a dog {i}", "number": i} for i in range(shards * per_shard))
    index = write_shards(samples, root / "train-%06d.tar", maxcount=per_shard)
    assert index["total"] == shards * per_shard and len(index["shards"]) == shards
    return sorted(str(p) for p in root.glob("*.tar"))


def _numbers(reader: ShardReader, workers: int) -> list[int]:
    loader = DataLoader(reader, batch_size=None, num_workers=workers)
    return [sample["number"] for sample in loader]


def test_two_ranks_times_two_workers_read_every_sample_exactly_once(tmp_path):
    urls = _numbered_shards(tmp_path)
    for epoch in (0, 1):
        seen: Counter[int] = Counter()
        orders = []
        for rank in range(2):
            reader = ShardReader(urls, shuffle=True, shuffle_buffer=4, seed=7, rank=rank, world_size=2)
            reader.set_epoch(epoch)
            numbers = _numbers(reader, workers=2)
            seen.update(numbers)
            orders.append(numbers)
        assert sorted(seen) == list(range(40)) and set(seen.values()) == {1}, f"epoch {epoch}: {seen}"
        assert len(orders[0]) == len(orders[1]) == 20
        if epoch == 0:
            first_epoch = orders
    assert orders != first_epoch  # a new shard and sample order every epoch


def test_unequal_shards_are_balanced_so_ranks_step_in_lockstep(tmp_path):
    """DDP training needs the same number of batches on every rank: with shards of 7,7,7,7,7,5
    samples, 2 ranks x 2 workers, every worker yields the smallest share and no sample twice."""
    samples = ({"id": f"s{i}", "text": f"a dog {i}", "number": i} for i in range(40))
    write_shards(samples, tmp_path / "train-%06d.tar", maxcount=7)
    urls = sorted(str(p) for p in tmp_path.glob("*.tar"))
    for epoch in (0, 1, 2):
        counts, seen, quotas = [], Counter(), set()
        unbalanced = []
        for rank in range(2):
            reader = ShardReader(urls, shuffle=True, shuffle_buffer=4, seed=3, rank=rank, world_size=2)
            reader.set_epoch(epoch)
            assert reader.balance
            numbers = _numbers(reader, workers=2)
            counts.append(len(numbers))
            seen.update(numbers)
            quotas.add(reader.samples_per_worker(2))
            plain = ShardReader(urls, shuffle=True, shuffle_buffer=4, seed=3, rank=rank, world_size=2, balance=False)
            plain.set_epoch(epoch)
            unbalanced.append(len(_numbers(plain, workers=2)))
        (quota,) = quotas
        assert counts == [2 * quota, 2 * quota], f"epoch {epoch}"
        assert set(seen.values()) == {1}
        assert sum(unbalanced) == 40 and unbalanced[0] != unbalanced[1]  # what balancing prevents


def test_balancing_without_an_index_names_the_shard(tmp_path):
    urls = _numbered_shards(tmp_path, shards=4, per_shard=2)
    for index in Path(urls[0]).parent.glob("index.json"):
        index.unlink()
    with pytest.raises(DataFileError, match=r"train-000000\.tar: balancing DDP ranks"):
        ShardReader(urls, shuffle=True, rank=0, world_size=2)
    assert not ShardReader(urls, shuffle=False, rank=0, world_size=2).balance  # evaluation: exactly once


def test_rank_comes_from_the_environment(tmp_path, monkeypatch):
    urls = _numbered_shards(tmp_path, shards=4, per_shard=2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    reader = ShardReader(urls)
    assert (reader.rank, reader.world_size) == (1, 2)
    assert _numbers(reader, workers=0) == [2, 3, 6, 7]
    assert ShardReader(str(tmp_path / "train-{000000..000003}.tar"), rank=0, world_size=1).urls == urls


def _compare(original: list, streamed: list) -> None:
    assert len(original) == len(streamed)
    for a, b in zip(original, streamed):
        assert isinstance(a, BadSample) == isinstance(b, BadSample)
        if isinstance(a, BadSample):
            continue
        assert a.keys() == b.keys(), (a.keys(), b.keys())
        for key in a:
            if torch.is_tensor(a[key]):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


def _round_trip(reader, tmp_path: Path, pipelines, modalities, name: str) -> tuple[list, list]:
    raw = [reader[i] for i in range(len(reader))]
    index = write_shards(raw, tmp_path / name / "shard-%06d.tar", maxcount=2, targets=reader.targets)
    streamed = ShardReader(tmp_path / name)
    assert streamed.targets == tuple(reader.targets) and streamed.num_samples == index["total"]
    decoded = list(DecodedIterableDataset(streamed, SampleDecoder(modalities, **pipelines)))
    return decode_all(reader, pipelines, modalities)[: index["total"]], decoded


def test_round_trip_coco_captions(tmp_path, pipelines):
    from .test_coco import _coco

    reader = CocoCaptionsReader(_coco(tmp_path), tmp_path / "val2017")
    original, streamed = _round_trip(reader, tmp_path, pipelines, ("image", "text"), "coco")
    _compare(original, streamed)  # including the empty caption (bad both ways) and the caption-less image


class _WithTensorTarget:
    """A reader whose samples also carry an array target (stored as ``<key>.scores.npy``)."""

    def __init__(self, reader):
        self.reader, self.targets = reader, ("scores",)

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index):
        return self.reader[index] | {"scores": torch.arange(4, dtype=torch.float32) * index}


def test_round_trip_vqa_with_answers_and_an_array_target(tmp_path, pipelines):
    questions, annotations = _vqa(tmp_path)
    reader = _WithTensorTarget(VQAv2Reader(questions, tmp_path, annotations))
    original, streamed = _round_trip(reader, tmp_path, pipelines, ("image", "text"), "vqa")
    _compare(original, streamed)
    assert streamed[1]["answers"][:4] == ["2", "2", "2", "two"] and streamed[2]["scores"].tolist() == [0, 2, 4, 6]


def test_round_trip_audio_visual_folder_skips_missing_files(tmp_path, pipelines):
    reader = MediaFolderReader(_av_folder(tmp_path / "av"), split="train")
    raw = [reader[i] for i in range(len(reader))]
    index = write_shards(raw, tmp_path / "shards" / "av-%06d.tar", maxcount=10, targets=reader.targets)
    assert index["skipped"] == 1  # c4's image file does not exist; c3's corrupt clip is copied as is
    streamed = list(DecodedIterableDataset(ShardReader(tmp_path / "shards"), SampleDecoder(AV, **pipelines)))
    original = [s for s in decode_all(reader, pipelines, AV) if getattr(s, "id", None) != "c4"]
    _compare(original, streamed)
    assert streamed[1]["audio"] is None and streamed[2]["image"] is None


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bad_members_and_truncated_shards_are_counted(tmp_path, pipelines):
    image = write_image(tmp_path / "x.jpg").read_bytes()
    clip = write_audio(tmp_path / "x.flac").read_bytes()
    _tar(tmp_path / "a.tar", {"k0.jpg": image, "k0.txt": b"a dog", "k0.json": b'{"id": "first"}',
                              "k1.jpg": image, "k1.json": b'{"id": ',                 # malformed JSON
                              "k2.flac": b"not audio", "k2.txt": b"a cat",            # corrupt audio
                              "k3.flac": clip})                                       # no image, no text
    truncated = _tar(tmp_path / "b.tar", {"k4.jpg": image, "k5.jpg": image}).read_bytes()
    (tmp_path / "b.tar").write_bytes(truncated[: 512 + len(image) // 2])
    reader = ShardReader([str(tmp_path / "a.tar"), str(tmp_path / "b.tar"), str(tmp_path / "gone.tar")])
    results = list(DecodedIterableDataset(reader, SampleDecoder(AV, **pipelines)))
    assert results[0]["id"] == "first" and results[0]["audio"] is None
    bad = [r for r in results if isinstance(r, BadSample)]
    assert "a.tar:k1.json" in bad[0].source and "malformed member" in bad[0].reason
    assert "a.tar:k2.flac" in bad[1].source and "cannot decode audio" in bad[1].reason
    assert results[3]["image"] is None and results[3]["text"] is None and results[3]["audio"].shape == (2000,)
    assert any("b.tar" in b.source and "truncated" in b.reason for b in bad)
    assert bad[-1].source.endswith("gone.tar") and bad[-1].reason.startswith("shard file not found")
    with pytest.raises(Exception, match="a.tar:k1.json"):
        list(DecodedIterableDataset(ShardReader(str(tmp_path / "a.tar")), SampleDecoder(AV, **pipelines),
                                    strict=True))


def test_index_json_lists_shards_and_targets(tmp_path):
    _numbered_shards(tmp_path, shards=3, per_shard=2)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [2, 2, 2] and index["shards"][0]["url"] == "train-000000.tar"
    write_json(tmp_path / "index.json", index | {"targets": ["number"]})
    assert ShardReader(str(tmp_path)).targets == ("number",)


def test_write_shards_script_from_a_data_config(tmp_path, tokenizer_file, pipelines):
    import importlib.util

    from hydra.core.global_hydra import GlobalHydra

    from polyfuse.cli.config import repo_root

    from .test_coco import _karpathy

    _karpathy(tmp_path / "coco")
    spec = importlib.util.spec_from_file_location("write_shards", repo_root() / "scripts" / "write_shards.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    GlobalHydra.instance().clear()
    assert script.main(["data=coco_karpathy", f"data.root={tmp_path / 'coco'}", "--out", str(tmp_path / "out"),
                        "--splits", "train", "test", "--maxcount", "3", "--shuffle"]) == 0
    reader = KarpathyCaptionsReader(tmp_path / "coco" / "dataset_coco.json", tmp_path / "coco", split="train")
    streamed = {s["id"]: s for s in DecodedIterableDataset(ShardReader(tmp_path / "out" / "train"),
                                                           SampleDecoder(("image", "text"), **pipelines))}
    original = {s["id"]: s for s in decode_all(reader, pipelines)}
    assert sorted(streamed) == sorted(original) and len(list((tmp_path / "out" / "train").glob("*.tar"))) == 2
    _compare([original[k] for k in sorted(original)], [streamed[k] for k in sorted(original)])


def test_round_trip_csv_and_hugging_face_bytes(tmp_path, pipelines):
    import datasets

    from polyfuse.data import CsvCaptionsReader, HFDatasetReader

    for index in range(3):
        write_image(tmp_path / "img" / f"{index}.png", seed=index)
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\n" + "".join(f"img/{i}.png\ta dog {i}\n" for i in range(3)))
    csv_reader = CsvCaptionsReader(tmp_path / "pairs.tsv")
    _compare(*_round_trip(csv_reader, tmp_path, pipelines, ("image", "text"), "csv"))
    rows = {"image": [{"bytes": (tmp_path / "img" / f"{i}.png").read_bytes(), "path": None} for i in range(3)],
            "text": ["a cat", None, "the dog"], "label": [0, 1, 2]}
    datasets.Dataset.from_dict(rows, features=datasets.Features({
        "image": datasets.Image(), "text": datasets.Value("string"), "label": datasets.Value("int64")}),
    ).save_to_disk(str(tmp_path / "hf"))
    hf_reader = HFDatasetReader(tmp_path / "hf", columns={"image": "image", "text": "text", "label": "label"})
    original, streamed = _round_trip(hf_reader, tmp_path, pipelines, ("image", "text"), "hf")
    _compare(original, streamed)
    assert streamed[1]["text"] is None and [s["label"] for s in streamed] == [0, 1, 2]


def test_interrupted_writing_leaves_no_truncated_tar(tmp_path):
    def samples():
        for index in range(5):
            yield {"id": f"s{index}", "text": "a dog"}
        raise KeyboardInterrupt  # the writer is killed half way through the second shard

    with pytest.raises(KeyboardInterrupt):
        write_shards(samples(), tmp_path / "shard-%06d.tar", maxcount=3)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["shard-000000.tar"]
    assert not (tmp_path / "index.json").exists()
