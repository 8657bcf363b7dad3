"""CLIP4Clip (Luo et al., 2022): video-text retrieval on a polyfuse :class:`~polyfuse.models.CLIP`.

Every frame goes through CLIP's image tower, a temporal model aggregates the frame embeddings
(:class:`~polyfuse.encoders.FrameTemporalEncoder`: ``"mean"`` = CLIP4Clip's meanP, ``"seq"`` = its
sequential transformer, seqTransf), and the clip embedding is compared with CLIP's text embedding
by cosine similarity scaled by CLIP's logit scale. The towers are CLIP's own modules (shared, not
copied), so a CLIP loaded from open_clip (:meth:`CLIP.from_open_clip`) is fine-tuned in place.

The same model trains through ``polyfuse-train`` as a :class:`~polyfuse.models.MultimodalModel` with
a ``FrameTemporalEncoder`` around CLIP's image tower for ``video`` and a contrastive head
(``configs/model/encoder/video_clip4clip.yaml``); this class is the stand-alone form for
evaluation and export, as :class:`CLIP` is for images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.batch import ModalityInput
from polyfuse.encoders.video import FrameTemporalEncoder
from polyfuse.metrics import retrieval_recall
from polyfuse.models.clip import CLIP

__all__ = ["CLIP4Clip"]


class CLIP4Clip(nn.Module):
    """Video <-> text retrieval: ``forward(video, mask, token_ids)`` returns ``(video features (B, E),
    text features (B, E), exp(logit_scale))``, the features normalised (as :meth:`CLIP.forward`).

    Args:
        clip: a :class:`CLIP` (its image tower embeds frames, its text tower captions).
        temporal: ``"mean"`` (meanP) or ``"seq"`` (seqTransf; starts equal to meanP).
        depth, heads: the sequential transformer (CLIP4Clip: 4 layers, CLIP's text width / 64 heads).
        max_frames: the longest clip (frame position embeddings).
    """

    def __init__(self, clip: CLIP, temporal: str = "mean", depth: int = 4, heads: int | None = None,
                 max_frames: int = 12) -> None:
        super().__init__()
        if temporal not in ("mean", "seq"):
            raise ValueError(f"CLIP4Clip temporal must be 'mean' or 'seq', got {temporal!r}")
        heads = heads or max(1, clip.embed_dim // 64)
        self.clip = clip
        self.video = FrameTemporalEncoder(clip.visual, temporal=temporal, depth=depth, heads=heads,
                                          max_frames=max_frames, output="pooled", pool="mean", eps=1e-5)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def encode_video(self, video: Tensor, mask: Tensor | None = None, normalize: bool = False) -> Tensor:
        """``video: (B, T, 3, H, W)`` (CLIP-normalised frames) + frame mask ``(B, T)`` -> ``(B, E)``."""
        features = self.video(ModalityInput(video, mask)).tokens[:, 0]
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, token_ids: Tensor, normalize: bool = False, mask: Tensor | None = None) -> Tensor:
        """As :meth:`CLIP.encode_text`."""
        return self.clip.encode_text(token_ids, normalize=normalize, mask=mask)

    def forward(self, video: Tensor, mask: Tensor | None, token_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (self.encode_video(video, mask, normalize=True), self.encode_text(token_ids, normalize=True),
                self.logit_scale.exp())

    @torch.no_grad()
    def retrieval(self, video: Tensor, mask: Tensor | None, token_ids: Tensor,
                  caption_to_video: Tensor | None = None, ks: tuple[int, ...] = (1, 5, 10),
                  batch_size: int = 64) -> dict[str, float]:
        """Video <-> text recall@K (``video_to_text/R@k``, ``text_to_video/R@k``, ``rsum``);
        ``caption_to_video: (num_texts,)`` as ``caption_to_image`` in :meth:`CLIP.retrieval`."""
        masks = [None] * len(video.split(batch_size)) if mask is None else mask.split(batch_size)
        video_features = torch.cat([self.encode_video(chunk, chunk_mask, normalize=True)
                                    for chunk, chunk_mask in zip(video.split(batch_size), masks)])
        text_features = torch.cat([self.encode_text(chunk, normalize=True) for chunk in token_ids.split(batch_size)])
        scores = retrieval_recall(video_features @ text_features.T, ks, caption_to_video)
        return {k.replace("a_to_b", "video_to_text").replace("b_to_a", "text_to_video"): v for k, v in scores.items()}
