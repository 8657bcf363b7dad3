"""Raw inputs -> the model's input tensors, with the evaluation preprocessing of the run's data config.

The settings come from the run's ``data`` section (:meth:`Preprocessing.from_data_config`): the
AV-digits data module (:mod:`polyfuse.data.avdigits`: greyscale ``uint8`` scaled to ``[-1, 1]``,
the clip cut to ``max_audio_seconds``, the word-level tokenizer with ``[CLS] ... [SEP]`` kept on
truncation) or the ``image`` / ``audio`` / ``text`` / ``video`` pipelines of
:class:`~polyfuse.training.MultimodalDataModule` (:mod:`polyfuse.data.image`, ``audio``, ``text``,
``video``: :mod:`polyfuse.inference.video`).
They are plain JSON (:meth:`Preprocessing.to_dict`), which is how an exported folder stores them.
Augmentation is never applied: this is the evaluation path.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from polyfuse.batch import Batch
from polyfuse.data.audio import AudioPipeline, _window_start
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.image import ImagePipeline
from polyfuse.data.io import EncodedMedia, open_image, resample
from polyfuse.data.text import TextPipeline
from polyfuse.data.video import VideoPipeline
from polyfuse.inference.video import VIDEO_SETTINGS, VideoPreprocessor

__all__ = ["ImagePreprocessor", "AudioPreprocessor", "TextPreprocessor", "Preprocessing"]

AVDIGITS_DATAMODULE = "polyfuse.training.AVDigitsDataModule"
FILE_INPUTS = (str, Path, EncodedMedia)


class ImagePreprocessor:
    """A PIL image, a file path, an ``EncodedMedia``, or a ``uint8`` array / tensor (``(H, W)``,
    ``(H, W, C)`` numpy, ``(C, H, W)`` torch) -> ``float32 (C, size, size)``.

    A floating-point tensor is taken as an already preprocessed model input and only checked.
    ``kind="avdigits"``: :func:`polyfuse.data.avdigits.image_transform` (evaluation), after a squash
    resize when the image is not ``size`` x ``size``; ``kind="pipeline"``: the evaluation transform
    of :class:`~polyfuse.data.image.ImagePipeline` with these settings.
    """

    def __init__(self, size: int, mode: str = "RGB", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, resize: str = "shortest", interpolation: str = "bicubic",
                 jpeg_draft: bool = True, kind: str = "pipeline") -> None:
        if kind not in ("pipeline", "avdigits"):
            raise ValueError(f"image preprocessing kind must be 'pipeline' or 'avdigits', got {kind!r}")
        self.kind = kind
        self.pipeline = ImagePipeline(size, mode, mean, std, resize, train_crop_scale=None, jpeg_draft=jpeg_draft,
                                      interpolation=interpolation)
        self.settings = dict(kind=kind, size=int(size), mode=mode, mean=mean and list(mean), std=std and list(std),
                             resize=resize, interpolation=interpolation, jpeg_draft=jpeg_draft)
        if kind == "avdigits":
            from torchvision.transforms import v2

            from polyfuse.data.avdigits import image_transform

            self.finish = image_transform(train=False)
            self.resize = v2.Resize((int(size), int(size)), antialias=True)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.pipeline.shape

    def _pil(self, image: Any) -> Any:
        from PIL import Image

        if isinstance(image, FILE_INPUTS):
            return open_image(image, self.pipeline.mode) if self.kind == "avdigits" else self.pipeline.decode(image)
        if isinstance(image, Tensor):
            image = image.detach().cpu()
            image = image.squeeze(0) if image.dim() == 3 and image.shape[0] == 1 else image
            image = image.permute(1, 2, 0) if image.dim() == 3 else image
            image = image.numpy()
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise TypeError(f"image arrays must be uint8 pixels (got {image.dtype}); pass a float torch tensor "
                                f"{self.shape} only when it is already preprocessed")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise TypeError(f"image input must be a PIL image, a path, a uint8 array / tensor or a preprocessed "
                            f"float tensor {self.shape}; got {type(image).__name__}")
        return image.convert(self.pipeline.mode)

    def __call__(self, image: Any) -> Tensor:
        if isinstance(image, Tensor) and image.is_floating_point():
            if tuple(image.shape) != self.shape:
                raise ValueError(f"a float image tensor is taken as preprocessed and must have shape {self.shape}, "
                                 f"got {tuple(image.shape)} (pass uint8 pixels to have it preprocessed)")
            return image.detach().cpu().to(torch.float32)
        pil = self._pil(image)
        if self.kind == "pipeline":
            return self.pipeline.eval_transform(pil).as_subclass(Tensor)
        pixels = torch.from_numpy(np.asarray(pil).copy())
        pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
        if tuple(pixels.shape[1:]) != self.shape[1:]:
            pixels = self.resize(pixels)
        return self.finish(pixels).as_subclass(Tensor)


class AudioPreprocessor:
    """An audio file (or ``EncodedMedia``), or a waveform (1-D numpy array / tensor at ``rate`` Hz,
    default the model's) -> mono ``float32 (T,)`` at ``sample_rate``, at most ``max_seconds`` long
    (the window starts where ``crop`` says: ``"start"`` or ``"center"``)."""

    def __init__(self, sample_rate: int, max_seconds: float | None = None, crop: str = "start",
                 pad_to_max: bool = False) -> None:
        crop = "start" if crop == "random" else crop  # evaluation is deterministic
        self.pipeline = AudioPipeline(sample_rate, max_seconds, eval_crop=crop, pad_to_max=pad_to_max)
        self.settings = dict(sample_rate=int(sample_rate), max_seconds=max_seconds, crop=crop, pad_to_max=pad_to_max)

    @property
    def sample_rate(self) -> int:
        return self.pipeline.sample_rate

    def __call__(self, audio: Any, rate: int | None = None) -> Tensor:
        if isinstance(audio, FILE_INPUTS):
            return self.pipeline(audio)
        if isinstance(audio, Tensor):
            audio = audio.detach().cpu().to(torch.float32).numpy()
        wave = np.asarray(audio, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"an audio waveform must be 1-D (T,), got shape {wave.shape}; pass a list for a batch")
        if rate is not None and int(rate) != self.sample_rate:
            wave = resample(wave, int(rate), self.sample_rate)
        limit = self.pipeline.max_samples
        if limit is not None and wave.size > limit:
            start = _window_start(wave.size, limit, self.pipeline.eval_crop)
            wave = wave[start:start + limit]
        return torch.from_numpy(np.ascontiguousarray(wave))


class TextPreprocessor:
    """A string -> ``int64 (L,)`` token ids (a 1-D integer tensor passes as pre-tokenized ids).

    ``kind="avdigits"``: the AV-digits tokenizer as :class:`~polyfuse.data.avdigits.AVDigitsDataset`
    uses it (truncation keeps the final ``[SEP]``); ``kind="pipeline"``:
    :class:`~polyfuse.data.text.TextPipeline`.
    """

    def __init__(self, tokenizer: str | Path, max_length: int = 64, pad_token: str | None = None,
                 lowercase: bool = False, kind: str = "pipeline") -> None:
        if kind not in ("pipeline", "avdigits"):
            raise ValueError(f"text preprocessing kind must be 'pipeline' or 'avdigits', got {kind!r}")
        self.kind, self.max_length = kind, int(max_length)
        self.pipeline = TextPipeline(tokenizer, max_length, pad_token=pad_token, lowercase=lowercase)
        self.settings = dict(kind=kind, tokenizer=str(tokenizer), max_length=int(max_length), pad_token=pad_token,
                             lowercase=lowercase)
        self._avdigits_tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer``."""
        if self.kind == "pipeline":
            return self.pipeline.tokenizer
        if self._avdigits_tokenizer is None:
            from polyfuse.data.avdigits import load_tokenizer

            self._avdigits_tokenizer = load_tokenizer(self.settings["tokenizer"])
        return self._avdigits_tokenizer

    @property
    def pad_id(self) -> int:
        if self.kind == "pipeline":
            return self.pipeline.pad_id
        return int(self.tokenizer.token_to_id(self.settings["pad_token"] or "[PAD]"))

    def __call__(self, text: Any) -> Tensor:
        if isinstance(text, Tensor) and not text.is_floating_point() and text.dim() == 1:
            return text.detach().cpu().to(torch.long)
        if not isinstance(text, str):
            raise TypeError(f"text input must be a string (or a 1-D tensor of token ids), got {type(text).__name__}")
        if self.kind == "pipeline":
            return self.pipeline(text)
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.max_length:  # keep [CLS] ... and the final [SEP], as AVDigitsDataset.tokenize
            ids = ids[: self.max_length - 1] + ids[-1:]
        return torch.tensor(ids, dtype=torch.long)


def _settings(target: type, node: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """``names`` read from a config node, with ``target``'s defaults for keys the node leaves out."""
    defaults = {k: p.default for k, p in inspect.signature(target.__init__).parameters.items()}
    return {name: node.get(name, defaults.get(name)) for name in names}


class Preprocessing:
    """The per-modality preprocessors of a model (``None`` where a modality has none: such a modality
    takes only preprocessed tensors) and the collate step that makes a :class:`~polyfuse.batch.Batch`."""

    def __init__(self, image: ImagePreprocessor | None = None, audio: AudioPreprocessor | None = None,
                 text: TextPreprocessor | None = None, video: VideoPreprocessor | None = None) -> None:
        self.image, self.audio, self.text, self.video = image, audio, text, video

    def __getitem__(self, modality: str) -> Any:
        return {"image": self.image, "audio": self.audio, "text": self.text, "video": self.video}.get(modality)

    @classmethod
    def from_data_config(cls, data: Mapping[str, Any], modalities: Sequence[str]) -> "Preprocessing":
        """The evaluation preprocessing of a run's ``data`` config section, for ``modalities``."""
        if data.get("_target_") == AVDIGITS_DATAMODULE:
            root = Path(str(data["root"]))
            info_path = root / "info.json"
            if not info_path.is_file():
                raise FileNotFoundError(f"AV-digits info file not found: {info_path} (the run's data.root); the "
                                        "preprocessing settings are read from it")
            info = json.loads(info_path.read_text())
            size = int(info.get("image_size", 32))
            return cls(
                image=ImagePreprocessor(size, "L", [0.5], [0.5], "squash", kind="avdigits")
                if "image" in modalities else None,
                audio=AudioPreprocessor(int(info["sample_rate"]), float(data.get("max_audio_seconds", 1.5)))
                if "audio" in modalities else None,
                text=TextPreprocessor(root / "tokenizer.json", int(data.get("max_text_length", 32)), "[PAD]",
                                      kind="avdigits") if "text" in modalities else None)
        image, audio, text, video = (data.get(m) if m in modalities else None
                                     for m in ("image", "audio", "text", "video"))
        return cls(
            image=ImagePreprocessor(**_settings(ImagePipeline, image, ("size", "mode", "mean", "std", "resize",
                                                                       "interpolation", "jpeg_draft")))
            if image else None,
            audio=AudioPreprocessor(**{**_settings(AudioPipeline, audio, ("sample_rate", "max_seconds", "pad_to_max")),
                                       "crop": _settings(AudioPipeline, audio, ("eval_crop",))["eval_crop"]})
            if audio else None,
            text=TextPreprocessor(**_settings(TextPipeline, text, ("tokenizer", "max_length", "pad_token",
                                                                  "lowercase"))) if text else None,
            video=VideoPreprocessor(**_settings(VideoPipeline, video, VIDEO_SETTINGS)) if video else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (``text.tokenizer`` is the tokenizer file's path as given)."""
        return {m: p.settings for m in ("image", "audio", "text", "video") if (p := self[m]) is not None}

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], base: str | Path | None = None) -> "Preprocessing":
        """The inverse of :meth:`to_dict`; a relative tokenizer path is taken relative to ``base``."""
        text = dict(settings["text"]) if "text" in settings else None
        if text is not None and base is not None and not text["tokenizer"].startswith("pkg://") \
                and not Path(text["tokenizer"]).is_absolute():
            text["tokenizer"] = str(Path(base) / text["tokenizer"])
        return cls(image=ImagePreprocessor(**settings["image"]) if "image" in settings else None,
                   audio=AudioPreprocessor(**settings["audio"]) if "audio" in settings else None,
                   text=TextPreprocessor(**text) if text is not None else None,
                   video=VideoPreprocessor(**settings["video"]) if "video" in settings else None)

    def sample(self, modality: str, value: Any, sample_rate: int | None = None) -> Tensor | None:
        """One sample's input tensor (``None`` stays ``None``: the modality is absent)."""
        if value is None:
            return None
        preprocessor = self[modality]
        if preprocessor is None:
            if isinstance(value, Tensor):
                return value
            raise ValueError(f"no preprocessing is known for modality {modality!r} (the run's data config has none); "
                             "pass its preprocessed tensor")
        return preprocessor(value, sample_rate) if modality == "audio" else preprocessor(value)

    def collate(self, modalities: Sequence[str], samples: Sequence[Mapping[str, Tensor | None]]) -> Batch:
        """``samples`` (modality -> tensor or ``None``) -> a :class:`Batch` with masks and ``present`` flags."""
        pad = {"text": self.text.pad_id} if self.text is not None and "text" in modalities else {}
        shapes: dict[str, Sequence[int]] = {m: p.shape for m in ("image", "video")
                                            if m in modalities and (p := self[m]) is not None}
        pad_to: dict[str, int] = {}
        if self.audio is not None and "audio" in modalities:
            audio = self.audio.pipeline
            if audio.pad_to_max:
                pad_to["audio"] = audio.max_samples
            elif all(sample.get("audio") is None for sample in samples):
                # audio absent from every sample: a clip-long silent placeholder (present=False), since
                # the collate's one-sample placeholder is shorter than an audio CNN's pooling window
                pad_to["audio"] = audio.max_samples or audio.sample_rate
        collate = MultimodalCollate(list(modalities), targets=(), pad_values=pad, shapes=shapes, pad_to=pad_to)
        batch = collate([{"id": str(i), **sample} for i, sample in enumerate(samples)])
        text = batch.inputs.get("text")
        if text is not None and text.values.is_floating_point() and not bool(text.present_or_full().any()):
            # text absent from every sample: the collate's placeholder is float; token ids are int64
            batch.inputs["text"] = replace(text, values=text.values.long())
        return batch
