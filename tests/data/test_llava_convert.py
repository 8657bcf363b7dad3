"""VQAv2 and COCO captions converted to LLaVA conversations, read back by LlavaConversationReader."""

from __future__ import annotations

import json

from polyfuse.data import CocoCaptionsReader, VQAv2Reader
from polyfuse.data.llava import LlavaConversationReader
from polyfuse.data.llava_convert import caption_conversations, main, vqa_conversations, write_conversations

from .test_coco import _coco
from .test_vqa import ANSWERS, _vqa


def test_vqa_questions_become_single_turn_conversations_with_every_answer(tmp_path):
    questions, annotations = _vqa(tmp_path)
    records = list(vqa_conversations(VQAv2Reader(questions, tmp_path, annotations), tmp_path))
    assert [r["id"] for r in records] == ["1001", "1002", "1003"]
    human, answer = records[1]["conversations"]
    assert human == {"from": "human", "value": "<image>\nHow many cats?"}
    assert answer["value"] == "3" and answer["answers"] == ANSWERS[1002] and answer["type"] == "other"
    assert records[1]["image"] == "val2014/COCO_val2014_000000000042.jpg"
    out = tmp_path / "llava.json"
    assert write_conversations(records, out) == 3
    reader = LlavaConversationReader(out, image_root=tmp_path)
    assert len(reader) == 3 and reader[1]["image"] == str(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    assert reader[1]["conversations"][1]["answers"] == ANSWERS[1002]


def test_questions_without_answers_are_skipped_and_majority_answer_is_used(tmp_path):
    questions, _ = _vqa(tmp_path, with_annotations=False)
    assert list(vqa_conversations(VQAv2Reader(questions, tmp_path), tmp_path)) == []
    sample = {"id": "q", "image": str(tmp_path / "a.jpg"), "question": "what?", "answers": ["b", "a", "a"]}
    (record,) = vqa_conversations([sample], tmp_path)
    assert record["conversations"][1]["value"] == "a" and record["image"] == "a.jpg"


def test_captions_become_one_conversation_per_image_with_all_references(tmp_path):
    path = _coco(tmp_path)
    for unit in ("image", "caption"):
        records = list(caption_conversations(CocoCaptionsReader(path, tmp_path / "val2017", unit=unit),
                                             tmp_path / "val2017"))
        assert [r["id"] for r in records] == ["139", "285"]  # 632 has no caption
        answer = records[0]["conversations"][1]
        assert answer["value"] == "A man sits on a bench." and answer["type"] == "caption"
        assert answer["answers"] == ["A man sits on a bench.", "a photo of a man"]
        assert records[0]["image"] == "000000000139.jpg"


def test_command_line_writes_a_readable_file(tmp_path, capsys):
    questions, annotations = _vqa(tmp_path)
    out = tmp_path / "out" / "train.json"
    main(["vqa", "--questions", str(questions), "--annotations", str(annotations), "--image-root", str(tmp_path),
          "--out", str(out)])
    assert "3 conversations" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == 3
