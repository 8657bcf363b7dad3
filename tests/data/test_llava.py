"""LLaVA conversation JSON and AV-digits instruction data: raw samples with conversations, decoded and batched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyfuse.data import AVDigitsInstructionReader, AudioPipeline, ImagePipeline, LlavaConversationReader
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.decode import DecodedDataset, SampleDecoder
from polyfuse.data.io import DataFileError
from polyfuse.models.chat import answer_types


def test_llava_json_records_placeholders_and_bad_records(tmp_path: Path, avdigits_root: Path):
    records = [
        {"id": "a", "image": "images/0000.png",
         "conversations": [{"from": "human", "value": "<image>\nwhat digit ?"}, {"from": "gpt", "value": "zero"},
                           {"from": "human", "value": "even ?"}, {"from": "gpt", "value": "yes"}]},
        {"id": "b", "image": "images/0001.png",  # no <image> in the text: LLaVA puts it first
         "conversations": [{"from": "human", "value": "describe it"}, {"from": "gpt", "value": "a one"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]},
        {"id": "d", "conversations": [{"from": "human", "value": "no answer"}]},
        {"id": "e"},
    ]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(records))
    reader = LlavaConversationReader(path, image_root=avdigits_root)
    assert [s["id"] for s in reader] == ["a", "b", "c"]
    assert [b.reason for b in reader.bad_records] == ["no answer turn ('from': 'gpt')",
                                                      "'conversations' must be a non-empty list of turns"]
    assert reader[0]["conversations"] == records[0]["conversations"]
    assert reader[1]["conversations"][0]["value"] == "<image>\ndescribe it"
    assert reader[2]["image"] is None and reader[2]["audio"] is None
    decoder = SampleDecoder(["image"], image=ImagePipeline(size=32, mode="L"))
    batch = MultimodalCollate(["image"], targets=(), shapes={"image": (1, 32, 32)})(
        [decoder(reader[i]) for i in range(3)])
    assert batch.inputs["image"].present.tolist() == [True, True, False]
    assert batch.extras["conversations"][1] == reader[1]["conversations"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataFileError, match="JSON list"):
        LlavaConversationReader(tmp_path / "bad.json")


def test_avdigits_instruction_conversations(avdigits_root: Path):
    reader = AVDigitsInstructionReader(avdigits_root, "val")
    sample = reader[0]
    turns = sample["conversations"]
    names = json.loads((avdigits_root / "info.json").read_text())["classes"]
    assert turns[0] == {"from": "human", "value": "<image>\nwhat digit is shown ?"}
    assert turns[1]["value"] == turns[3]["value"] == names[sample["label"]]
    assert turns[2]["value"].startswith("<audio>\n") and len(turns) == 4 + 2 * 5
    assert answer_types(turns) == ["written", "spoken"] + ["both"] * 5  # metrics per question type
    dataset = DecodedDataset(reader, SampleDecoder(["image", "audio"], image=ImagePipeline(size=32, mode="L"),
                                                   audio=AudioPipeline(8000, 1.5)))
    decoded = dataset[0]
    assert decoded["image"].shape == (1, 32, 32) and decoded["audio"].dim() == 1


def test_avdigits_instruction_missing_and_single_turns(avdigits_root: Path):
    reader = AVDigitsInstructionReader(avdigits_root, "val", missing={"audio": 1.0})
    for sample in list(reader)[:5]:
        assert sample["audio"] is None
        texts = [t["value"] for t in sample["conversations"]]
        assert "what digit is spoken ?" not in " ".join(texts)  # its own question is left out
        assert texts[0].startswith("<audio>\n<image>\n")  # the placeholder stays; the model splices nothing
    single = AVDigitsInstructionReader(avdigits_root, "val", turns="single", max_questions=1)
    by_id = {s["id"]: s for s in single}
    first = reader[0]["id"]
    assert by_id[f"{first}_written"]["audio"] is None and by_id[f"{first}_spoken"]["image"] is None
    assert by_id[f"{first}_q0"]["conversations"][0]["value"].startswith("<image>\n<audio>\n")
    assert [answer_types(by_id[f"{first}_{k}"]["conversations"]) for k in ("written", "spoken", "q0")] == \
        [["written"], ["spoken"], ["both"]]
    with pytest.raises(ValueError, match="turns"):
        AVDigitsInstructionReader(avdigits_root, "val", turns="many")
