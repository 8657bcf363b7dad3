"""One process of the exactly-once distributed-evaluation check, run by test_distributed_eval.py.

Usage: ``python -m tests.distributed.disteval_worker DATA_DIR OUT_DIR RANK WORLD_SIZE PORT``. With ``WORLD_SIZE > 1`` it
joins a gloo process group on ``127.0.0.1:PORT``; with 1 it is the single-process reference.

For every datamodule path (AV-digits, CSV, COCO, VQAv2, WebDataset shards; the files under
``DATA_DIR`` written by :func:`write_datasets`) it reads this rank's share of the evaluation split
through ``PolyfuseDataModule.loader`` (``EpochSampler(pad=False)`` / streaming shards), turns each
sample into fixed "model outputs" -- random vectors seeded by the content of its image and text, so
any process computes the same outputs for the same sample -- and feeds the metrics the heads use:
classification accuracy / macro F1, zero-shot top-k, retrieval R@K (one-to-many), ITM ranking (full
and top-k candidates), VQA accuracy, caption scores (with Java). It writes
``OUT_DIR/{path}.rank{RANK}.json``: the sample ids it saw and the computed metrics.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from polyfuse.batch import Batch, Encoded
from polyfuse.cli.config import config_dir, repo_root
from tests.distributed.harness import init_gloo

BATCH_SIZE = 3  # split sizes 269 / 20 / 40 / 65 / 20: none is a multiple of 2 ranks x 3
DIM = 16
PATHS = ("avdigits", "csv", "coco", "vqa", "shards")


def write_datasets(root: Path) -> dict[str, list[str]]:
    """Write the format exports of AV-digits under ``root``; ``{path: data overrides}``."""
    from tests.cli import format_datasets as formats  # the repository is on PYTHONPATH (harness.clean_env)

    tutorial_file = repo_root() / "docs" / "tutorials" / "finetune_vilt_vqa.py"
    spec = importlib.util.spec_from_file_location("finetune_vilt_vqa", tutorial_file)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)  # type: ignore[union-attr]
    overrides = {"avdigits": ["data.modalities=[image,text]", "data.text_field=caption", "data.augment=false"],
                 "csv": formats.csv_dataset(root / "csv"), "coco": formats.coco_dataset(root / "coco"),
                 "shards": formats.shard_dataset(root / "shards")}
    annotations = root / "coco" / "annotations" / "captions_val2017.json"   # a second caption per image
    coco = json.loads(annotations.read_text())
    captions = [a["caption"] for a in coco["annotations"]]
    for number, image in enumerate(coco["images"]):
        coco["annotations"].append({"id": len(coco["annotations"]), "image_id": image["id"],
                                    "caption": captions[(number + 1) % len(captions)]})
    annotations.write_text(json.dumps(coco))
    vqa = tutorial.export_avdigits_as_vqav2(root / "vqa", limit=13)
    overrides["vqa"] = ["data=vqav2", f"data.root={vqa}", f"data.text.tokenizer={formats.AVDIGITS / 'tokenizer.json'}",
                        "data.image.size=32", "data.image.mode=L", "data.image.mean=[0.5]", "data.image.std=[0.5]",
                        "data.bad_samples.min_samples=1"]
    keep = ("data", "+data", "~data")
    return {name: [o for o in value if o.startswith(keep)] + ["data.num_workers=0", f"data.batch_size={BATCH_SIZE}"]
            for name, value in overrides.items()}


def content_vectors(values: torch.Tensor, mask: torch.Tensor | None, salt: int) -> torch.Tensor:
    """``(B, DIM)``: per sample, a normal vector seeded by its content (identical inputs, identical vector)."""
    from polyfuse.metrics import content_key

    keys = content_key(values, mask)
    return torch.stack([torch.randn(DIM, generator=torch.Generator().manual_seed((int(k) ^ salt) & 0x7FFFFFFF))
                        for k in keys])


class Evaluation:
    """The metrics of one split and the fixed outputs that feed them."""

    def __init__(self, path: str) -> None:
        from polyfuse.heads import ClassificationHead
        from polyfuse.heads.zero_shot import ZeroShotHead
        from polyfuse.metrics import CaptionScores, RetrievalRecall, VQAAccuracy
        from polyfuse.metrics.itm_ranking import ITMRanking

        self.path, self.labelled = path, False
        generator = torch.Generator().manual_seed(0)
        self.classifier = torch.randn(10, DIM, generator=generator)
        self.bilinear = torch.randn(DIM, generator=generator)
        self.classification = ClassificationHead(DIM, 10).make_metrics("test")
        self.zero_shot_head = ZeroShotHead(DIM, {"image": DIM, "text": DIM}, class_names=[str(i) for i in range(10)],
                                           templates=["{}"], tokenizer=lambda texts: None)
        self.zero_shot = self.zero_shot_head.make_metrics("test")
        dedupe = {"avdigits": ["text"], "csv": ["text"], "shards": ["text"], "coco": ["image"]}.get(path)
        self.retrieval = None if dedupe is None else RetrievalRecall([("image", "text")], ks=(1, 5, 10), dedupe=dedupe)
        self.ranking = ITMRanking(ks=(1, 5, 10), chunk=64)
        self.ranking_top3 = ITMRanking(ks=(1, 5, 10), candidates=3, chunk=64)
        self.vqa = VQAAccuracy() if path == "vqa" else None
        java = shutil.which("java") is not None and importlib.util.find_spec("pycocoevalcap") is not None
        self.captions = (CaptionScores(metrics=("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"))
                         if path == "avdigits" and java else None)

    def scorer(self, pairs: dict[str, Encoded]) -> torch.Tensor:
        image, text = pairs["image"].tokens.mean(1), pairs["text"].tokens.mean(1)
        return (image * text * self.bilinear).sum(-1) + (image * text).sum(-1)

    def update(self, batch: Batch) -> None:
        from polyfuse.heads.zero_shot import zero_shot_logits
        from polyfuse.metrics import content_key

        image, text = batch.inputs["image"], batch.inputs["text"]
        image_vec = content_vectors(image.values, image.mask, 1)
        text_emb = 0.7 * image_vec + content_vectors(text.values, text.mask, 2)
        if "label" in batch.targets:
            self.labelled = True
            logits = image_vec @ self.classifier.T + 0.3 * text_emb[:, :10].roll(1, dims=1)
            self.zero_shot_head.update_metrics(self.zero_shot, zero_shot_logits(image_vec, self.classifier), batch)
            self.classification.update(logits, batch.targets["label"])
        if self.retrieval is not None:
            keys = {m: content_key(batch.inputs[m].values, batch.inputs[m].mask) for m in self.retrieval.dedupe}
            self.retrieval.update({"image": image_vec, "text": text_emb}, None, keys, ids=batch.ids)
        image_keys, text_keys = content_key(image.values, image.mask), content_key(text.values, text.mask)
        for ranking in (self.ranking, self.ranking_top3):
            ranking.update(batch.ids, Encoded(image_vec), Encoded(text_emb), image_keys, text_keys, self.scorer,
                           image_vec, text_emb)
        if self.vqa is not None:
            answers = batch.extras["answers"]
            predictions = [a[int(i) % len(a)] if int(i) % 3 else "no" for i, a in zip(batch.ids, answers)]
            self.vqa.update(predictions, answers)
        if self.captions is not None:
            captions = batch.extras["caption"]
            predictions = [c if int(i) % 3 else " ".join(c.split()[:3]) for i, c in zip(batch.ids, captions)]
            self.captions.update(batch.ids, predictions, [[c] for c in captions])

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.labelled:
            out.update({f"cls/{k}": float(v) for k, v in self.classification.compute().items()})
            out.update({f"zero_shot/{k}": float(v) for k, v in self.zero_shot.compute().items()})
        if self.retrieval is not None:
            out.update({f"retrieval/{k}": v for k, v in self.retrieval.compute().items()})
        out.update({f"itm/{k}": v for k, v in self.ranking.compute().items()})
        out.update({f"itm_top3/{k}": v for k, v in self.ranking_top3.compute().items()})
        if self.vqa is not None:
            out["vqa_acc"] = float(self.vqa.compute())
        if self.captions is not None:
            out.update({f"caption/{k}": v for k, v in self.captions.compute().items()})
        return out


def evaluate(path: str, overrides: list[str]) -> dict[str, Any]:
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    split = cfg.data.test_splits[0]
    evaluation = Evaluation(path)
    seen: list[str] = []
    with torch.no_grad():
        for batch in datamodule.loader(split):
            seen.extend(batch.ids)
            evaluation.update(batch)
    return {"split": split, "seen": seen, "metrics": evaluation.compute()}


def main() -> None:
    data, out, rank, world_size, port = Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:6])
    torch.set_num_threads(1)
    if world_size > 1:
        init_gloo(rank, world_size, f"tcp://127.0.0.1:{port}", timeout_s=1800)
    overrides = json.loads((data / "overrides.json").read_text())
    for path in PATHS:
        result = evaluate(path, overrides[path])
        (out / f"{path}.rank{rank}.json").write_text(json.dumps(result))
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
