"""Attention of a :class:`~polyfuse.models.MultimodalLM`'s language model over the spliced modality tokens.

For the explain path (:mod:`polyfuse.reporting.attention`, ``polyfuse-explain``): the maps are
returned, never kept on modules, under the fusion maps' naming ``"{query}->{key}/layer{i}"``:

``"text->{m}/layer{i}"``: ``(B, H, L, N_m)``, the attention probabilities of layer ``i`` from every
position of the spliced sequence (queries) to modality ``m``'s tokens (keys, in order; ``N_m`` the
most tokens any sample has). Rows of padding and of the modality tokens themselves are zero, so an
average over queries is over the text; a sample without ``m`` (or with fewer tokens) is zero there.

The LM runs with Hugging Face's ``eager`` attention for that pass (the fused kernels do not return
probabilities) and is switched back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

from torch import Tensor, nn

if TYPE_CHECKING:
    from polyfuse.models.lm_head import LMOutput
    from polyfuse.models.multimodal_lm import MultimodalLM, Spliced

__all__ = ["eager_attention", "modality_attention", "run_with_attention"]


@contextmanager
def eager_attention(lm: nn.Module) -> Iterator[None]:
    """Run ``lm`` (a ``PreTrainedModel``, ``peft``-wrapped or not) with ``eager`` attention inside the block."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    previous = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


def modality_attention(layers: Sequence[Tensor], spliced: "Spliced", modalities: Sequence[str]) -> dict[str, Tensor]:
    """Per-layer ``(B, H, L, L)`` probabilities -> ``{"text->{m}/layer{i}": (B, H, L, N_m)}`` (module docstring)."""
    batch, length = spliced.attention_mask.shape
    queries = spliced.attention_mask.bool().clone()
    for b, spans in enumerate(spliced.spans):
        for start, end in spans.values():
            queries[b, start:end] = False
    maps: dict[str, Tensor] = {}
    for modality in modalities:
        widths = [spans[modality][1] - spans[modality][0] for spans in spliced.spans if modality in spans]
        if not widths:
            continue
        for layer, probs in enumerate(layers):
            out = probs.new_zeros(batch, probs.shape[1], length, max(widths))
            for b, spans in enumerate(spliced.spans):
                if modality in spans:
                    start, end = spans[modality]
                    out[b, :, :, : end - start] = probs[b, :, :, start:end]
            maps[f"text->{modality}/layer{layer}"] = out * queries[:, None, :, None].to(out.dtype)
    return maps


def run_with_attention(model: "MultimodalLM", spliced: "Spliced") -> tuple["LMOutput", dict[str, Tensor]]:
    """The LM's outputs on ``spliced`` and its attention maps over the modality tokens."""
    with eager_attention(model.lm):
        outputs = model.language_model(spliced, output_attentions=True)
    layers = outputs.layer_attentions
    if not layers:
        raise RuntimeError(f"{type(model.lm).__name__} returned no attention probabilities with output_attentions=True")
    maps = modality_attention([probs.detach() for probs in layers], spliced, model.modalities)
    outputs.layer_attentions = None  # the maps are what the caller asked for; the full (L, L) ones are dropped
    return outputs, maps
