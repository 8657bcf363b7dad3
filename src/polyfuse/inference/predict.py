"""A loaded model ready for predictions on raw inputs: :class:`InferenceModel`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from polyfuse.batch import Batch
from polyfuse.heads.base import HeadContext
from polyfuse.inference.outputs import head_predictions, read_outputs, task_of, unbatch
from polyfuse.inference.preprocess import Preprocessing
from polyfuse.inference.video import sound_track_source

__all__ = ["InferenceModel"]


def _is_batch(modality: str, value: Any) -> bool:
    """Whether ``value`` holds several samples of ``modality`` (a list or tuple; for images also a 4-D
    array or tensor, for audio a 2-D one, for video a 5-D one)."""
    if isinstance(value, (list, tuple)):
        return True
    if isinstance(value, (Tensor, np.ndarray)):
        return value.ndim == {"image": 4, "audio": 2, "video": 5}.get(modality, 99)
    return False


class InferenceModel(nn.Module):
    """A trained polyfuse model with its preprocessing: raw inputs in, predictions out.

    Built by :func:`polyfuse.load`; in eval mode. Call :meth:`predict` with any subset of the
    model's modalities (the others are passed as absent, ``present=False``, which every polyfuse
    fusion handles), one sample or a list of samples; :meth:`preprocess` gives the
    :class:`~polyfuse.batch.Batch` it feeds the model, and calling the module on a batch runs the
    underlying :class:`~polyfuse.models.MultimodalModel`.

    Attributes:
        model: the :class:`~polyfuse.models.MultimodalModel`. preprocessing: its
            :class:`~polyfuse.inference.preprocess.Preprocessing`. labels: class names, or ``None``.
        config: the resolved config the model was built from. task: see :func:`task_of`.
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, labels: Sequence[str] | None = None,
                 config: Any = None) -> None:
        super().__init__()
        self.model = model
        self.preprocessing = preprocessing
        self.labels = None if labels is None else list(labels)
        self.config = config
        self.eval()

    @property
    def modalities(self) -> list[str]:
        return list(self.model.modalities)

    @property
    def task(self) -> str:
        return task_of(self.model.head)

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (``tokenizers.Tokenizer``): the text input's, else the captioning head's
        (which decodes the generated ids); ``None`` when the model has neither."""
        if self.preprocessing.text is not None:
            return self.preprocessing.text.tokenizer
        head = self.model.head
        return head.tokenizer if getattr(head, "tokenizer_path", None) else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, batch: Batch, return_attention: bool = False) -> Any:
        """The underlying model's output (:class:`~polyfuse.models.multimodal.ModelOutput`) on ``batch``."""
        return self.model(batch.to(self.device), return_attention=return_attention)

    def preprocess(self, *, sample_rate: int | None = None, sound_track: bool = True,
                   **inputs: Any) -> tuple[Batch, bool]:
        """``(batch, single)``: the raw inputs as a :class:`Batch`, and whether they were one sample.

        Args:
            sample_rate: rate of waveform inputs given as arrays (default: the model's).
            sound_track: when the model takes audio, a sample given a video file and no audio gets
                that file's sound track as its audio (absent, ``present=False``, when the file has
                none), as the data module's :class:`~polyfuse.data.decode.SampleDecoder` does.
            **inputs: modality -> one sample or a list of samples (``None`` entries = absent).
        """
        unknown = [m for m in inputs if m not in self.modalities]
        if unknown:
            raise KeyError(f"the model has no modality {unknown}; it takes {self.modalities}")
        given = {m: v for m, v in inputs.items() if v is not None}
        if not given:
            raise ValueError(f"predict needs at least one input among {self.modalities}")
        batched = {m: _is_batch(m, v) for m, v in given.items()}
        if len(set(batched.values())) > 1:
            raise ValueError(f"mix of single samples and batches: {batched} (pass lists for every modality, or "
                             "one sample for each)")
        single = not next(iter(batched.values()))
        rows = {m: [v] if single else list(v) for m, v in given.items()}
        sizes = {m: len(v) for m, v in rows.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the inputs have different batch sizes: {sizes}")
        size = next(iter(sizes.values()))
        if sound_track and "audio" in self.modalities and "video" in rows:
            audio = rows.get("audio", [None] * size)
            rows["audio"] = [a if a is not None else sound_track_source(v) for a, v in zip(audio, rows["video"])]
        samples = [{m: self.preprocessing.sample(m, rows[m][i], sample_rate) if m in rows else None
                    for m in self.modalities} for i in range(size)]
        return self.preprocessing.collate(self.modalities, samples), single

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> dict[str, Any]:
        """Batched predictions on a ready :class:`Batch` (see :meth:`predict`)."""
        batch = batch.to(self.device)
        head = self.model.head
        if task_of(head) in ("captioning", "generative_vqa", "multitask"):
            encoded = self.model.encode(batch)
            fused = None if self.model.fusion is None else self.model.fusion(encoded)
            context = HeadContext(encoded=encoded, encode=self.model.encode,
                                  encode_modality=self.model.encode_modality, fuse=self.model.fusion)
            return head_predictions(head, fused, batch, context, self.labels)
        return read_outputs(head, self.model(batch).outputs, self.labels)

    def predict(self, image: Any = None, text: Any = None, audio: Any = None, *, sample_rate: int | None = None,
                sound_track: bool = True, **others: Any) -> dict[str, Any]:
        """Predictions for raw inputs, as a dict (one sample: its values; a batch: lists / ``(B, ...)`` tensors).

        Inputs: images as PIL images, file paths, ``uint8`` arrays / tensors, or preprocessed
        ``float`` tensors; text as strings; audio as file paths or 1-D waveforms at ``sample_rate``;
        ``video=`` as video files (``.mp4``, ...; decoded and sampled as in the run's evaluation) or
        preprocessed ``float (T, C, H, W)`` clips. A list of them is a batch (``None`` in a list: that
        sample lacks the modality); a modality not given is absent for every sample, except audio
        next to a video file: its sound track (``sound_track=False``: absent).

        Returns (by task): classification ``label``, ``probs``, ``logits`` and ``label_name`` when the
        run has class names; VQA ``answer``, ``score``, ``scores``, ``logits``; captioning
        ``caption`` (generated with the head's decoding settings), ``tokens``, ``score``; retrieval
        ``embeddings`` and ``present`` per modality (L2-normalised, comparable by dot product);
        several tasks: one such dict per task name.
        """
        inputs = {"image": image, "text": text, "audio": audio, **others}
        inputs = {m: v for m, v in inputs.items() if v is not None or m in others}
        batch, single = self.preprocess(sample_rate=sample_rate, sound_track=sound_track, **inputs)
        predictions = self.predict_batch(batch)
        return unbatch(predictions, 0) if single else predictions
