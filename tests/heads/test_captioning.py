"""CaptioningHead and GenerativeVQAHead: teacher forcing, generation in eval mode, metrics wiring."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from polyfuse.heads import CaptioningHead, GenerativeVQAHead
from polyfuse.heads.generation import greedy_search
from polyfuse.heads.decoder import DecoderStepper
from polyfuse.losses import sequence_cross_entropy

from . import head_cases as cases

HEAD = partial(CaptioningHead, vocab_size=cases.VOCAB, dim=16, depth=1, heads=2, max_length=8, dropout=0.0,
               bos_id=cases.CLS, eos_id=cases.SEP, pad_id=cases.PAD, num_beams=2)


def test_teacher_forcing_shifts_and_ignores_padding() -> None:
    model = cases.model(HEAD, fusion="early")
    batch = cases.batch(5, caption=["a"] * 5)
    out = model(batch)
    ids = batch.targets["caption_ids"]
    length = int((ids != cases.PAD).sum(1).max())
    assert out.outputs["logits"].shape == (5, length - 1, cases.VOCAB)
    labels = out.outputs["labels"]
    assert (labels[ids[:, 1:length] == cases.PAD] == -100).all()
    assert out.outputs["generated"] is None           # no generation while training
    loss = model.head.loss(out.outputs, batch)
    torch.testing.assert_close(loss, sequence_cross_entropy(out.outputs["logits"], labels, label_smoothing=0.1))
    cases.assert_all_parameters_get_gradients(model, loss, ignore=("missing", "fusion.pooler"))


def test_eval_mode_generates_text_and_collects_captions() -> None:
    model = cases.model(HEAD, fusion="early").eval()
    batch = cases.batch(4, caption=["one", "two", "three", ["four", "4"]])
    with torch.no_grad():
        out = model(batch)
    generated = out.outputs["generated"]
    assert len(generated) == 4 and all(isinstance(text, str) for text in generated)
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    captions = metrics["captions"]
    assert captions.predictions == dict(zip(batch.ids, generated))
    assert captions.references["s3"] == ["four", "4"] and captions.references["s0"] == ["one"]


def test_generate_greedy_equals_a_manual_argmax_loop() -> None:
    head = HEAD(in_dim=16).eval()
    memory = torch.randn(3, 4, 16)
    sequences, _ = head.generate(memory, num_beams=1)
    expected, _ = greedy_search(DecoderStepper(head.decoder, memory), 3, cases.CLS, cases.SEP, cases.PAD, 8)
    torch.testing.assert_close(sequences, expected)
    # the cache path and the full forward agree on the argmax at every step
    with torch.no_grad():
        prefix = torch.cat([torch.full((3, 1), cases.CLS), sequences], dim=1)
        full = head.decoder(prefix[:, :-1], memory).argmax(-1)
    for row in range(3):
        seq = sequences[row].tolist()
        end = seq.index(cases.SEP) + 1 if cases.SEP in seq else len(seq)
        assert full[row, :end].tolist() == seq[:end]


def test_decode_stops_at_eos_and_skips_specials() -> None:
    head = HEAD(in_dim=16)
    assert head.decode(torch.tensor([[7, 8, cases.SEP, 9], [cases.CLS, 5, cases.PAD, cases.PAD]])) == ["7 8", "5"]


def test_encoded_memory_needs_no_fusion() -> None:
    model = cases.model(partial(HEAD, memory="encoded", memory_modalities=["image"]), fusion=None)
    batch = cases.batch(3, caption=["a"] * 3)
    out = model(batch)
    cases.assert_all_parameters_get_gradients(model.head, model.head.loss(out.outputs, batch),
                                              ignore=("memory_projections.text",))


def test_missing_target_is_explained() -> None:
    model = cases.model(partial(HEAD, target="nope"), fusion="early")
    with pytest.raises(KeyError, match="nope"):
        model(cases.batch(2))


def test_generative_vqa_scores_generated_answers() -> None:
    head = partial(GenerativeVQAHead, vocab_size=cases.VOCAB, dim=16, depth=1, heads=2, target="caption_ids",
                   bos_id=cases.CLS, eos_id=cases.SEP, pad_id=cases.PAD)
    model = cases.model(head, fusion="early").eval()
    batch = cases.batch(3, answers=[["yes"] * 10] * 3)
    with torch.no_grad():
        out = model(batch)
    metrics = model.head.make_metrics()
    model.head.update_metrics(metrics, out.outputs, batch)
    value = metrics.compute()["vqa_acc"].item()
    expected = 100.0 * sum(text == "yes" for text in out.outputs["generated"]) / 3
    assert value == pytest.approx(expected)
