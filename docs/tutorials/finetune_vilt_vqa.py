"""Tutorial: fine-tune ViLT on your own VQA data.

Your data: questions, ten human answers per question, and images, written in the VQAv2 layout
(``v2_OpenEnded_mscoco_<split>_questions.json``, ``v2_mscoco_<split>_annotations.json``,
``<split>/COCO_<split>_<12-digit image id>.jpg``), which polyfuse's ``VQAv2Reader`` reads. The
model: ``polyfuse.models.ViLT`` loaded from a Hugging Face ``save_pretrained`` directory
(``ViLT.from_hf``), with a fresh VQA head over the answer vocabulary of your training answers. The
training: the repository's recipe ``experiment=vilt_vqav2`` (AdamW, linear warmup and decay, soft
score BCE, official VQA accuracy), pointed at your files with command-line overrides.

So that it runs anywhere without a download, the script makes both stand-ins itself:

* the data: the questions of the embedded AV-digits dataset (``data/avdigits/metadata.jsonl``:
  "what digit is shown ?", "is the digit even ?", ... with ten answers each), exported to the VQAv2
  layout; replace ``--data`` with the folder of your own files;
* the checkpoint: a small randomly initialised ``ViltModel`` saved with ``save_pretrained``, shaped
  for 32 x 32 images and AV-digits' word-level tokenizer. With real weights, download
  ``dandelin/vilt-b32-mlm`` once (``huggingface-cli download dandelin/vilt-b32-mlm --local-dir
  vilt-b32-mlm``), pass ``--checkpoint vilt-b32-mlm`` and its BERT tokenizer
  (``--tokenizer vilt-b32-mlm``) and your real image size (``--image-size 384``).

Run it from the repository root::

    python docs/tutorials/finetune_vilt_vqa.py                    # stand-ins, 5 epochs (a few minutes on a CPU)
    python docs/tutorials/finetune_vilt_vqa.py --tiny --out /tmp/vilt_smoke      # 2 steps: a smoke test
    python docs/tutorials/finetune_vilt_vqa.py --data my_vqa --checkpoint vilt-b32-mlm \\
        --tokenizer vilt-b32-mlm --image-size 384 --epochs 10 -- trainer=gpu      # your data, real weights
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from polyfuse.cli.config import avdigits_dir
from polyfuse.cli.eval import evaluation_batches
from polyfuse.reporting.runs import load_model

AVDIGITS = avdigits_dir()  # data/avdigits in a checkout, the copy inside an installed wheel
SPLITS = {"train": "train2014", "val": "val2014"}  # AV-digits split -> VQAv2 subtype

#: 2 training steps and one evaluation batch: checks that everything connects, measures nothing
TINY = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1", "data.batch_size=16", "trainer.num_sanity_val_steps=0"]


def export_avdigits_as_vqav2(out: Path, limit: int | None = None) -> Path:
    """Write AV-digits' questions in the VQAv2 layout under ``out`` (the stand-in for your data)."""
    from PIL import Image

    records = [json.loads(line) for line in (AVDIGITS / "metadata.jsonl").read_text().splitlines() if line]
    for split, subtype in SPLITS.items():
        (out / subtype).mkdir(parents=True, exist_ok=True)
        questions, annotations = [], []
        chosen = [r for r in records if r["split"] == split][:limit]
        for record in chosen:
            image_id = int(record["id"])
            Image.open(AVDIGITS / record["image"]).convert("RGB").save(
                out / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", quality=95)
            for number, qa in enumerate(record["qa"]):
                question_id = image_id * 10 + number
                questions.append({"image_id": image_id, "question": qa["question"], "question_id": question_id})
                annotations.append({"question_id": question_id, "image_id": image_id, "answer_type": "other",
                                    "question_type": "what", "multiple_choice_answer": qa["answer"],
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                                for i, a in enumerate(qa["answers"])]})
        (out / f"v2_OpenEnded_mscoco_{subtype}_questions.json").write_text(
            json.dumps({"data_subtype": subtype, "questions": questions}))
        (out / f"v2_mscoco_{subtype}_annotations.json").write_text(
            json.dumps({"data_subtype": subtype, "annotations": annotations}))
        print(f"{subtype}: {len(chosen)} images, {len(questions)} questions -> {out}")
    return out


def save_standin_checkpoint(out: Path, image_size: int, vocab_size: int) -> Path:
    """A small random ``ViltModel`` in ``save_pretrained`` form (the stand-in for vilt-b32-mlm)."""
    from transformers import ViltConfig, ViltModel

    config = ViltConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, image_size=image_size, patch_size=4, num_channels=3,
                        max_position_embeddings=32)
    torch.manual_seed(0)
    ViltModel(config).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="your VQAv2-layout folder (default: AV-digits exported)")
    parser.add_argument("--checkpoint", type=Path, help="a ViLT save_pretrained folder (default: a stand-in)")
    parser.add_argument("--tokenizer", type=Path, default=AVDIGITS / "tokenizer.json",
                        help="the checkpoint's tokenizer (file or folder)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("outputs/tutorial_vilt_vqa"))
    parser.add_argument("--tiny", action="store_true", help="2 training steps on 16 images per split")
    parser.add_argument("overrides", nargs="*", help="more polyfuse-train overrides (after --)")
    args = parser.parse_args()

    data = args.data or export_avdigits_as_vqav2(args.out / "data", limit=16 if args.tiny else None)
    checkpoint = args.checkpoint or save_standin_checkpoint(args.out / "vilt-standin", args.image_size,
                                                            vocab_size=128)
    run_dir = args.out / "run"
    overrides = [
        "experiment=vilt_vqav2",                      # configs/experiment/vilt_vqav2.yaml: the paper's recipe
        f"data.root={data.resolve()}",                # your VQAv2-layout files
        f"model.model.path={checkpoint.resolve()}",   # the ViLT checkpoint (backbone; the VQA head starts fresh)
        f"data.text.tokenizer={args.tokenizer.resolve()}",
        f"data.image.size={args.image_size}",
        f"trainer.max_epochs={args.epochs}",
        "data.num_workers=0", "data.bad_samples.min_samples=1",
        "model.optimizer.lr=1e-3",                    # a from-scratch stand-in learns faster than 1e-4 allows
        f"hydra.run.dir={run_dir.resolve()}", "callbacks.progress_bar=null",
        *(TINY if args.tiny else []), *args.overrides]
    print("polyfuse-train", " \\\n    ".join(overrides), flush=True)
    subprocess.run([sys.executable, "-m", "polyfuse.cli.train", *overrides], check=True,
                   stdout=subprocess.DEVNULL if args.tiny else None)

    # The fine-tuned model answers questions: load the best checkpoint, predict on validation batches.
    module, config = load_model(run_dir, "best")
    vilt = module.model
    batches, _ = evaluation_batches(config, "val", batch_size=16, max_batches=1)
    batch = batches[0]
    with torch.no_grad():
        answers = vilt.head.predict(vilt(batch).outputs)
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"\nViLT with {sum(p.numel() for p in vilt.parameters()):,} parameters, "
          f"answer vocabulary of {len(vilt.head.vocabulary)}")
    print(f"official VQA accuracy on val: {summary['test']['val/vqa_acc']:.1f}%\n")
    for question, predicted, humans in list(zip(batch.extras["question"], answers, batch.extras["answers"]))[:8]:
        print(f"{question:<36} -> {predicted:<8} (humans: {', '.join(sorted(set(humans)))})")


if __name__ == "__main__":
    main()
