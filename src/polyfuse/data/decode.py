"""Raw samples -> tensors, in DataLoader workers, with bad input turned into markers.

:class:`SampleDecoder` applies the image / audio / text / video pipelines to a raw sample
(:mod:`polyfuse.data.reader`). :class:`DecodedDataset` and :class:`DecodedIterableDataset` wrap
any reader with a decoder: a sample that fails (corrupt or missing file, empty caption, any decoder,
transform or tokenizer error) becomes a :class:`~polyfuse.data.errors.BadSample` that the collate
function turns into a placeholder row and the loader counts, or in strict mode raises
:class:`~polyfuse.data.io.DataFileError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from torch.utils.data import Dataset, IterableDataset

from polyfuse.data.audio import AudioPipeline
from polyfuse.data.errors import BadSample
from polyfuse.data.image import ImagePipeline
from polyfuse.data.io import DataFileError, EncodedMedia, source_name
from polyfuse.data.reader import MODALITIES, SOURCE_KEY, modality_kind
from polyfuse.data.text import TextPipeline
from polyfuse.data.video import VideoPipeline


#: what a pipeline may raise on bad input besides DataFileError (decoders, transforms, tokenizers)
DECODE_ERRORS = (OSError, ValueError, RuntimeError, EOFError, TypeError, IndexError)


class SampleDecoder:
    """Decode the ``modalities`` of a raw sample; every other key passes through unchanged.

    An absent modality (``None`` or no key) stays ``None`` (``present=False`` after collate), and so
    does one whose pipeline returns ``None`` (a video file without a sound track given as audio).

    Args:
        modalities: which of ``image``, ``audio``, ``text``, ``video`` to decode (others are dropped);
            numbered names (``image_2``) use their kind's pipeline (:func:`~polyfuse.data.reader.modality_kind`).
        image, audio, text, video: the pipelines; the one for each requested modality is required.
        train: use the training transforms (random crops, augmentation).
        sound_track: when ``audio`` is requested and a sample has no audio source of its own, read
            the sound track of its ``video`` file (absent when the file has none).
    """

    def __init__(self, modalities: Sequence[str], image: ImagePipeline | None = None,
                 audio: AudioPipeline | None = None, text: TextPipeline | None = None, train: bool = False,
                 video: VideoPipeline | None = None, sound_track: bool = True) -> None:
        unknown = [m for m in modalities if modality_kind(m) not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; readers provide {', '.join(MODALITIES)}")
        pipelines = {"image": image, "audio": audio, "text": text, "video": video}
        missing = [m for m in modalities if pipelines[modality_kind(m)] is None]
        if missing:
            raise ValueError(f"modalities {missing} need a pipeline: set data.{missing[0]} in the data config")
        self.modalities, self.pipelines, self.train = tuple(modalities), pipelines, train
        self.sound_track = sound_track

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any] | BadSample:
        sample_id = str(raw.get("id", "?"))
        sample = {k: v for k, v in raw.items() if modality_kind(k) not in MODALITIES and k != SOURCE_KEY}
        sample["id"] = sample_id
        for modality in self.modalities:
            value = raw.get(modality)
            if value is None and modality == "audio" and self.sound_track:
                value = raw.get("video")
            if value is None:
                sample[modality] = None
                continue
            kind = modality_kind(modality)
            if kind == "text":
                source = str(raw.get(SOURCE_KEY, "annotations"))
                if not isinstance(value, str) or not value.strip():
                    return BadSample(sample_id, source, f"empty caption/text {value!r}")
                try:
                    sample[modality] = self.pipelines["text"](value)
                except DECODE_ERRORS as error:
                    return BadSample(sample_id, source, f"cannot tokenize text: {type(error).__name__}: {error}")
                continue
            try:
                sample[modality] = self.pipelines[kind](value, train=self.train)
            except DataFileError as error:
                return BadSample(sample_id, source_name(value), str(error))
            except DECODE_ERRORS as error:  # a transform failing on what the decoder returned
                name = source_name(value) if isinstance(value, (str, Path, EncodedMedia)) else repr(value)[:80]
                return BadSample(sample_id, name, f"cannot decode {modality} file {name}: "
                                                  f"{type(error).__name__}: {error}")
        return sample


def _resolve(result: dict[str, Any] | BadSample, strict: bool, targets: Sequence[str],
             source: str) -> dict[str, Any] | BadSample:
    if not isinstance(result, BadSample):
        missing = [name for name in targets if result.get(name) is None]
        if missing:
            result = BadSample(str(result.get("id", "?")), source, f"sample has no target {missing}")
    if strict and isinstance(result, BadSample):
        raise result.error()
    return result


def _decode(raw: dict[str, Any] | BadSample, decoder: SampleDecoder, strict: bool,
            targets: Sequence[str]) -> dict[str, Any] | BadSample:
    if isinstance(raw, BadSample):
        return _resolve(raw, strict, (), raw.source)
    return _resolve(decoder(raw), strict, targets, str(raw.get(SOURCE_KEY, raw.get("id", "?"))))


class DecodedDataset(Dataset):
    """A map-style reader whose samples are decoded on access (in the worker that asks).

    ``__getitem__`` returns the decoded sample or a :class:`BadSample`; with ``strict=True`` it
    raises :class:`~polyfuse.data.io.DataFileError` naming the file instead.
    """

    def __init__(self, reader: Dataset, decoder: SampleDecoder, strict: bool = False) -> None:
        self.reader, self.decoder, self.strict = reader, decoder, strict
        self.targets = tuple(getattr(reader, "targets", ()))

    def __len__(self) -> int:
        return len(self.reader)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        try:
            raw = self.reader[index]
        except DataFileError as error:
            raw = BadSample(str(index), str(error).split(":", 1)[0], str(error))
        return _decode(raw, self.decoder, self.strict, self.targets)


class DecodedIterableDataset(IterableDataset):
    """A streaming reader (e.g. :class:`~polyfuse.data.shards.ShardReader`) with decoding; bad
    samples are yielded as :class:`BadSample` markers (strict mode raises)."""

    def __init__(self, reader: IterableDataset, decoder: SampleDecoder, strict: bool = False) -> None:
        self.reader, self.decoder, self.strict = reader, decoder, strict
        self.targets = tuple(getattr(reader, "targets", ()))

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.reader, "set_epoch"):
            self.reader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any] | BadSample]:
        for raw in self.reader:
            yield _decode(raw, self.decoder, self.strict, self.targets)
