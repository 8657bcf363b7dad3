"""polyfuse's VQA and captioning datasets as LLaVA conversation JSON (for :class:`~polyfuse.models.MultimodalLM`).

Any reader's raw samples (:mod:`polyfuse.data.reader`: ``VQAv2Reader``, ``CocoCaptionsReader`` /
``KarpathyCaptionsReader`` with ``unit="image"``, ``CsvCaptionsReader``) become LLaVA records::

    {"id": "...", "image": "<path relative to image_root>",
     "conversations": [{"from": "human", "value": "<image>\\n<question or prompt>"},
                       {"from": "gpt", "value": "<answer>", "answers": [<every reference>], "type": "..."}]}

The answer turn keeps every reference in ``"answers"`` (VQAv2's ten human answers; all captions of an
image), which the model's evaluation scores against (soft VQA accuracy, caption metrics), and a
``"type"`` (the VQA ``answer_type``, or ``"caption"``) for the per-type metrics. The written file is read
back by :class:`~polyfuse.data.llava.LlavaConversationReader` with the same ``image_root``.

Command line::

    python -m polyfuse.data.llava_convert vqa --questions q.json --annotations a.json \\
        --image-root images/ --out train_llava.json
    python -m polyfuse.data.llava_convert coco --annotations captions.json --image-root images/ --out caps.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from polyfuse.data.reader import RecordReader

__all__ = ["vqa_conversations", "caption_conversations", "write_conversations"]

CAPTION_PROMPT = "Describe the image briefly."


def _relative(path: str, image_root: str | Path) -> str:
    """``path`` relative to ``image_root`` when it lies under it (the reader joins them again)."""
    try:
        return str(Path(path).relative_to(Path(image_root)))
    except ValueError:
        return str(path)


def _samples(reader: RecordReader | Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if isinstance(reader, RecordReader):
        return (reader[index] for index in range(len(reader)))
    return iter(reader)


def vqa_conversations(reader: RecordReader | Iterable[dict[str, Any]], image_root: str | Path,
                      template: str = "<image>\n{question}") -> Iterator[dict[str, Any]]:
    """One single-turn conversation per question of a VQA reader (``question``, ``image``, ``answers``).

    The answer is VQAv2's ``multiple_choice_answer`` when present, else the most frequent of the
    ``answers`` (ties: the first given). A question without answers (a test split) is skipped: it has
    nothing to train or score.
    """
    for sample in _samples(reader):
        answers = [str(a) for a in sample.get("answers") or []]
        if not answers:
            continue
        answer = sample.get("multiple_choice_answer") or Counter(answers).most_common(1)[0][0]
        turn = {"from": "gpt", "value": str(answer), "answers": answers}
        if sample.get("answer_type"):
            turn["type"] = str(sample["answer_type"])
        yield {"id": str(sample["id"]), "image": _relative(sample["image"], image_root),
               "conversations": [{"from": "human", "value": template.format(question=sample["question"])}, turn]}


def caption_conversations(reader: RecordReader | Iterable[dict[str, Any]], image_root: str | Path,
                          prompt: str = CAPTION_PROMPT) -> Iterator[dict[str, Any]]:
    """One conversation per image of a captioning reader: the prompt, then the image's first caption,
    every caption of the image as ``"answers"`` (``captions`` when the reader gives them, else the
    sample's ``caption``). Samples of one image (``unit="caption"``) are merged into one record; an
    image without a caption is skipped."""
    seen: set[str] = set()
    for sample in _samples(reader):
        key = str(sample.get("image_id", sample["image"]))
        if key in seen:
            continue
        seen.add(key)
        captions = [str(c) for c in sample.get("captions") or [sample.get("caption")] if c and str(c).strip()]
        if not captions:  # an image without captions has nothing to train or score
            continue
        yield {"id": key, "image": _relative(sample["image"], image_root),
               "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                 {"from": "gpt", "value": captions[0], "answers": captions, "type": "caption"}]}


def write_conversations(records: Iterable[dict[str, Any]], out: str | Path) -> int:
    """Write ``records`` as one LLaVA JSON list to ``out``; returns how many were written."""
    items = list(records)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, indent=1))
    return len(items)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["vqa", "coco", "karpathy", "csv"])
    parser.add_argument("--questions", help="VQAv2 questions JSON (vqa)")
    parser.add_argument("--annotations", help="VQAv2 answers / COCO or Karpathy captions JSON")
    parser.add_argument("--csv", help="captions CSV (csv)")
    parser.add_argument("--split", default="train", help="Karpathy split")
    parser.add_argument("--image-root", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.kind == "vqa":
        from polyfuse.data.vqa import VQAv2Reader

        records = vqa_conversations(VQAv2Reader(args.questions, args.image_root, args.annotations), args.image_root)
    elif args.kind == "coco":
        from polyfuse.data.coco import CocoCaptionsReader

        records = caption_conversations(CocoCaptionsReader(args.annotations, args.image_root, unit="image"),
                                        args.image_root)
    elif args.kind == "karpathy":
        from polyfuse.data.coco import KarpathyCaptionsReader

        records = caption_conversations(KarpathyCaptionsReader(args.annotations, args.image_root, split=args.split,
                                                               unit="image"), args.image_root)
    else:
        from polyfuse.data.csv_captions import CsvCaptionsReader

        records = caption_conversations(CsvCaptionsReader(args.csv, image_root=args.image_root), args.image_root)
    print(f"{args.out}: {write_conversations(records, args.out)} conversations")


if __name__ == "__main__":
    main()
