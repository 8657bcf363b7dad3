"""Early (single-stream) fusion: one transformer over the concatenated tokens of every modality."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.attention.varlen import Packing
from polyfuse.batch import Encoded
from polyfuse.fusion.base import Fusion, FusionOutput, register
from polyfuse.fusion.blocks import ModalityProjection, run_blocks
from polyfuse.fusion.masking import zero_invalid
from polyfuse.fusion.packed import gather_valid, interleave, scatter_rows, worth_packing
from polyfuse.layers import TransformerBlock


@register("early")
class EarlyFusion(Fusion):
    """Single-stream transformer over ``[CLS; x_1 + t_1; [MISS_1]; ...; x_M + t_M; [MISS_M]]``.

    Every modality's tokens are projected to ``width``, tagged with a learned modality-type
    embedding ``t_m`` and concatenated with a [CLS] token; ``depth`` pre-norm transformer blocks
    attend over the whole sequence. VL-BERT (Su et al., "VL-BERT: Pre-training of Generic
    Visual-Linguistic Representations", ICLR 2020) and ViLT (Kim, Son & Kim, "ViLT:
    Vision-and-Language Transformer Without Convolution or Region Supervision", ICML 2021).
    ``pooled`` is the [CLS] output (the ViLT pooler: Linear + tanh on a final LayerNorm), ``tokens``
    the whole sequence. Any number of modalities.

    Padding: padded tokens are masked as keys; their (masked) outputs are zero.

    Missing modalities: an absent modality's tokens are masked out of attention, and a learned
    per-modality [MISS_m] token -- valid only when modality ``m`` is absent -- takes their place,
    so the model sees *which* modality is missing (the learned-missing-token strategy of Ma et
    al., "Are Multimodal Transformers Robust to Missing Modality?", CVPR 2022).

    Attention maps: ``"joint/layer{i}"``, ``(B, H, L, L)`` over the sequence above.

    Packed execution (``packing=True``, docs/packing.md): each sample's *valid* tokens ([CLS], the
    present modalities' real tokens, the [MISS_m] of its absent modalities) are gathered into one
    packed sequence ``(T, width)`` (:mod:`polyfuse.fusion.packed`), the blocks run on it with
    block-diagonal attention per sample (``cu_seqlens``) and only the output tokens are scattered
    back to the padded layout above; ``pooled``, ``tokens`` and ``mask`` equal the padded path's.
    Padding, absent modalities and masks with holes cost nothing. The padded path runs instead for
    a batch without any invalid token (nothing to skip), for ``return_attention=True`` (maps are in
    the padded layout) and, without a class token, for a batch where some sample's first token is
    not valid (the padded path pools a masked query there, which a packed sequence does not hold).

    The exact ViLT layout (:class:`polyfuse.models.ViLT`) is ``project=False, class_token=False,
    missing_tokens=False, token_projection=False``: the sequence is ``[x_1 + t_1; ...; x_M + t_M]``,
    the first modality's first token (the text [CLS]) is pooled and the tokens are the final
    LayerNorm's output.

    Args:
        dims, out_dim: see :class:`Fusion`. width: transformer width (default ``out_dim``).
        depth: number of blocks. heads: attention heads. mlp_ratio, dropout: block options.
        project: per-modality ``Linear(D_m, width)``; ``False`` needs every ``D_m == width``.
        class_token: prepend the fusion's own learned [CLS] (else the first token is pooled).
        missing_tokens: add the learned [MISS_m] tokens (else an absent modality is only masked).
        token_projection: ``Linear(width, out_dim)`` on the output tokens; ``False`` needs
            ``out_dim == width``.
        eps: LayerNorm epsilon of blocks and final norm (default: 1e-6 in blocks, 1e-5 final).
        mlp_hidden: feed-forward width (overrides ``mlp_ratio``). activation: feed-forward
            activation. attn_dropout: attention-probability dropout. attention_backend: see
            :mod:`polyfuse.attention`.
        packing: run packed (see above); off by default, outputs identical either way.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, width: int | None = None, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1, *, project: bool = True,
                 class_token: bool = True, missing_tokens: bool = True, token_projection: bool = True,
                 eps: float | None = None, mlp_hidden: int | None = None, activation: str = "gelu",
                 attn_dropout: float = 0.0, attention_backend: str | None = None, packing: bool = False) -> None:
        super().__init__(dims, out_dim)
        self.packing = bool(packing)
        width = width or out_dim
        if not project and any(d != width for d in self.dims.values()):
            raise ValueError(f"EarlyFusion(project=False) needs every modality width == width {width}, "
                             f"got {self.dims}")
        if not token_projection and out_dim != width:
            raise ValueError(f"EarlyFusion(token_projection=False) needs out_dim == width, got {out_dim} vs {width}")
        self.project = ModalityProjection(self.dims, width, project=project)
        self.cls = nn.Parameter(torch.randn(width) * 0.02) if class_token else None
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(width) * 0.02) for m in self.dims}) if missing_tokens else None
        block_eps = 1e-6 if eps is None else eps
        self.blocks = nn.ModuleList([TransformerBlock(width, heads, mlp_ratio, dropout, attn_dropout, norm="pre",
                                                      eps=block_eps, activation=activation,
                                                      backend=attention_backend, mlp_hidden=mlp_hidden)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-5 if eps is None else eps)
        self.pooler = nn.Sequential(nn.Linear(width, out_dim), nn.Tanh())
        self.out = nn.Linear(width, out_dim) if token_projection else nn.Identity()

    def sequence(self, inputs: dict[str, Encoded]) -> tuple[Tensor, Tensor]:
        """The joint input sequence ``(B, [1 +] sum_m (L_m [+ 1]), width)`` and its mask ``(B, L)``."""
        projected = self.project(inputs)
        first = next(iter(projected.values()))
        batch = first.shape[0]
        parts, masks = [], []
        if self.cls is not None:
            parts.append(self.cls.expand(batch, 1, -1))
            masks.append(torch.ones(batch, 1, dtype=torch.bool, device=first.device))
        for name, encoded in inputs.items():
            parts.append(projected[name])
            masks.append(encoded.mask)
            if self.missing is not None:
                parts.append(self.missing[name].expand(batch, 1, -1))
                masks.append(~encoded.present_or_full()[:, None])
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def fuse(self, inputs: dict[str, Encoded], return_attention: bool = False) -> FusionOutput:
        if (self.packing and not return_attention and worth_packing(inputs)
                and self._pooled_token_is_valid(inputs)):
            return self.fuse_packed(inputs)
        x, mask = self.sequence(inputs)
        x, maps = run_blocks(self.blocks, x, mask, "joint/layer{i}", return_attention)
        x = self.norm(x)
        tokens = zero_invalid(self.out(x), mask)
        return FusionOutput(pooled=self.pooler(x[:, 0]), tokens=tokens, mask=mask, attentions=maps)

    def _pooled_token_is_valid(self, inputs: dict[str, Encoded]) -> bool:
        """Whether every sample's pooled position (the [CLS], else the first token) is a valid token."""
        return self.cls is not None or bool(next(iter(inputs.values())).mask[:, 0].all())

    def fuse_packed(self, inputs: dict[str, Encoded]) -> FusionOutput:
        """:meth:`fuse` on the valid tokens only (see the class docstring); same outputs, no maps."""
        first = next(iter(inputs.values())).tokens
        batch, device = first.shape[0], first.device
        samples = torch.arange(batch, device=device)
        # the parts of the sequence in order: (rows, rows per sample) and each row's (sample, padded column)
        parts: list[tuple[Tensor, Tensor]] = []
        places: list[tuple[Tensor, Tensor]] = []
        width = 0  # columns of the padded layout so far

        def add(rows: Tensor, lengths: Tensor, sample: Tensor, column: Tensor, columns: int) -> None:
            nonlocal width
            parts.append((rows, lengths))
            places.append((sample, width + column))
            width += columns

        if self.cls is not None:
            add(self.cls.expand(batch, -1), torch.ones_like(samples), samples, torch.zeros_like(samples), 1)
        for name, encoded in inputs.items():
            packed = gather_valid(encoded.tokens, encoded.mask)
            add(self.project.project(name, packed.rows), packed.lengths(), packed.samples(), packed.columns(),
                packed.length)
            if self.missing is not None:
                absent = ~encoded.present_or_full()
                add(self.missing[name].expand(int(absent.sum()), -1), absent.long(), samples[absent],
                    torch.zeros_like(samples[absent]), 1)
        x, destination, lengths = interleave(parts, batch)
        positions = torch.cat([sample * width + column for sample, column in places])  # in the (B * L) layout
        positions = torch.empty_like(positions).index_copy(0, destination, positions)  # in packed order
        packing = Packing.from_lengths(lengths, width)
        x, _ = run_blocks(self.blocks, x, None, "joint/layer{i}", False, packing=packing)
        x = self.norm(x)
        tokens = scatter_rows(self.out(x), positions, batch, width)
        mask = torch.zeros(batch * width, dtype=torch.bool, device=device).index_fill(0, positions, True)
        pooled = self.pooler(x.index_select(0, packing.cu_seqlens[:-1].long()))  # each sample's first row
        return FusionOutput(pooled=pooled, tokens=tokens, mask=mask.view(batch, width))
