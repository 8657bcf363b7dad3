"""Datasets and the path from files to a :class:`~polyfuse.batch.Batch` (docs/data.md).

Readers (raw samples, no decoding): :class:`CocoCaptionsReader`, :class:`KarpathyCaptionsReader`,
:class:`VQAv2Reader`, :class:`CsvCaptionsReader`, :class:`HFDatasetReader`,
:class:`MediaFolderReader` (also video clip lists), :class:`MSRVTTReader` (video captions),
:class:`ShardReader` (WebDataset, streaming), :class:`LlavaConversationReader`
and :class:`AVDigitsInstructionReader` (conversations for :class:`~polyfuse.models.MultimodalLM`).
Decoding in workers: :class:`ImagePipeline`, :class:`AudioPipeline`, :class:`TextPipeline`, :class:`VideoPipeline`,
:class:`SampleDecoder`. Batching: :class:`MultimodalCollate`; loading: :class:`MultimodalLoader`.
Bad input: :class:`BadSample`, :class:`BadSamplePolicy`, :class:`BadSampleTracker`.
"""

from polyfuse.data.audio import AudioPipeline
from polyfuse.data.coco import CocoCaptionsReader, KarpathyCaptionsReader
from polyfuse.data.collate import MultimodalCollate
from polyfuse.data.csv_captions import CsvCaptionsReader
from polyfuse.data.decode import DecodedDataset, DecodedIterableDataset, SampleDecoder
from polyfuse.data.errors import BadSample, BadSamplePolicy, BadSampleTracker, TooManyBadSamplesError
from polyfuse.data.folder import MediaFolderReader
from polyfuse.data.hf import HFDatasetReader
from polyfuse.data.image import ImagePipeline
from polyfuse.data.io import DataFileError, EncodedMedia
from polyfuse.data.llava import AVDigitsInstructionReader, LlavaConversationReader
from polyfuse.data.loader import EpochSampler, MultimodalLoader
from polyfuse.data.msrvtt import MSRVTTReader
from polyfuse.data.shard_writer import write_shards
from polyfuse.data.shards import ShardReader
from polyfuse.data.text import TextPipeline
from polyfuse.data.video import VideoPipeline
from polyfuse.data.vqa import VQAv2Reader

__all__ = [
    "AudioPipeline", "BadSample", "BadSamplePolicy", "BadSampleTracker", "CocoCaptionsReader",
    "CsvCaptionsReader", "DataFileError", "DecodedDataset", "DecodedIterableDataset", "EncodedMedia", "EpochSampler",
    "AVDigitsInstructionReader", "HFDatasetReader", "ImagePipeline", "KarpathyCaptionsReader", "LlavaConversationReader", "MediaFolderReader", "MultimodalCollate",
    "MultimodalLoader", "MSRVTTReader", "VideoPipeline",
    "SampleDecoder", "ShardReader", "TextPipeline", "TooManyBadSamplesError", "VQAv2Reader", "write_shards",
]
