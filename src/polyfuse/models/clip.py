"""CLIP (Radford et al., 2021) as a polyfuse model: loads and exports open_clip checkpoints exactly."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.batch import ModalityInput
from polyfuse.encoders.clip_text import CLIPTextEncoder
from polyfuse.encoders.loading import CheckpointError, StateDict, load_checked, read_state_dict
from polyfuse.encoders.pretrained.open_clip_architecture import (export_open_clip_text, export_open_clip_visual,
                                                                 text_tower_kwargs, vision_tower_kwargs)
from polyfuse.encoders.pretrained.open_clip_towers import (convert_open_clip_text, convert_open_clip_visual,
                                                           read_open_clip_config)
from polyfuse.encoders.vision import ViTEncoder
from polyfuse.heads.zero_shot import class_embeddings, zero_shot_logits
from polyfuse.metrics import retrieval_recall

OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


class CLIP(nn.Module):
    """Dual-stream CLIP: a :class:`ViTEncoder` and a causal :class:`CLIPTextEncoder`, each pooled and
    linearly projected to a shared ``embed_dim``, and a learned logit scale (temperature).

    ``forward(images, token_ids)`` returns ``(image_features (B, E), text_features (B, E), logit_scale)``
    -- normalised features and ``exp(logit_scale)`` -- as ``open_clip.CLIP.forward`` does, so the two
    are drop-in replacements. Built from open_clip's own model configs (:meth:`from_open_clip`,
    :meth:`from_config`) and exported back with :meth:`to_open_clip`; the towers are ordinary polyfuse
    encoders, usable in a :class:`~polyfuse.models.MultimodalModel` (re-fused, ablated, made robust).

    Padding: ``token_ids`` are right-padded with 0 (open_clip's convention). Without a mask, the
    causal mask alone keeps padding out of the pooled end-of-text token (``pool="argmax"``); a mask
    ``(B, L)`` may be given to :meth:`encode_text` (needed with ``pool="last"``). Images have no
    padding; this model has no notion of a missing modality (use the towers in a
    :class:`MultimodalModel` for that).

    Args:
        visual: pooled, projected image tower (``output="pooled"``, ``proj_dim=embed_dim``).
        text: pooled, projected text tower of the same output width.
        init_logit_scale: initial ``log`` of the logit scale (CLIP: ``log(1 / 0.07)``).
        init_logit_bias: initial logit bias (SigLIP-trained models), ``None`` for none.
        config: the open_clip model config the towers were built from (kept for :meth:`to_open_clip`).
    """

    def __init__(self, visual: ViTEncoder, text: CLIPTextEncoder, init_logit_scale: float = math.log(1 / 0.07),
                 init_logit_bias: float | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for name, tower in (("visual", visual), ("text", text)):
            if tower.output != "pooled":
                raise ValueError(f"CLIP needs a pooled {name} tower (output='pooled'), got output={tower.output!r}")
        if visual.out_dim != text.out_dim:
            raise ValueError(f"CLIP towers must embed to one width: visual {visual.out_dim}, text {text.out_dim}")
        self.visual, self.text = visual, text
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = None if init_logit_bias is None else nn.Parameter(torch.tensor(float(init_logit_bias)))
        self.config = dict(config or {})

    @property
    def embed_dim(self) -> int:
        return int(self.visual.out_dim)

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path) -> "CLIP":
        """Randomly initialised CLIP of an open_clip model config (dict, JSON file or model name)."""
        cfg = read_open_clip_config(config)
        source = f"open_clip config {config!r}" if isinstance(config, (str, Path)) else "open_clip config"
        if "embed_dim" not in cfg:
            raise CheckpointError(f"{source}: no 'embed_dim' (keys: {sorted(cfg)})")
        return cls(ViTEncoder(**vision_tower_kwargs(cfg, source)), CLIPTextEncoder(**text_tower_kwargs(cfg, source)),
                   init_logit_scale=cfg.get("init_logit_scale", math.log(1 / 0.07)),
                   init_logit_bias=cfg.get("init_logit_bias"), config=cfg)

    @classmethod
    def from_open_clip(cls, model_name: str | Path, checkpoint_path: str | Path | None = None,
                       **overrides: Any) -> "CLIP":
        """Load an open_clip checkpoint of architecture ``model_name`` (``"ViT-B-32"``, ``"ViT-L-14"``, ...).

        The architecture is open_clip's own config for that name (or a JSON config file, or a
        directory saved by :meth:`save_open_clip` / open_clip's ``local-dir:`` layout, which also
        holds the weights); ``overrides`` replace its top-level entries as
        ``open_clip.create_model(model_name, **overrides)`` does (e.g. ``vision_cfg=...``). The
        checkpoint (a ``.safetensors`` / ``.bin`` / ``.pt`` file, an open_clip training checkpoint,
        or a directory holding ``open_clip_model.safetensors``) must fit it exactly: otherwise a
        :class:`CheckpointError` lists the first missing, unexpected or mis-shaped keys.
        """
        directory = Path(str(model_name))
        if directory.is_dir():
            config = read_open_clip_config(directory / OPEN_CLIP_CONFIG)
            checkpoint_path = directory if checkpoint_path is None else checkpoint_path
        else:
            config = read_open_clip_config(str(model_name))
        if checkpoint_path is None:
            raise CheckpointError(f"{model_name}: no checkpoint_path given")
        config.update(overrides)
        model = cls.from_config(config)
        model.load_open_clip_state(read_state_dict(checkpoint_path), f"{checkpoint_path} ({model_name})")
        return model

    def load_open_clip_state(self, state: Mapping[str, Tensor], source: str = "open_clip state dict") -> None:
        """Load an open_clip ``CLIP`` state dict into this model, all or nothing."""
        if "visual.conv1.weight" not in state or not any(k.endswith("token_embedding.weight") for k in state):
            raise CheckpointError(f"{source}: not an open_clip ViT CLIP checkpoint (needs visual.conv1.weight and "
                                  f"token_embedding.weight; its first keys: {sorted(state)[:10]})")
        vision, _ = convert_open_clip_visual(dict(state), isinstance(self.visual.fc_norm, nn.LayerNorm))
        text, _ = convert_open_clip_text({k: v for k, v in state.items() if not k.startswith("visual.")})
        load_checked(self.visual, vision, f"{source}, visual tower", fresh_prefixes=())
        load_checked(self.text, text, f"{source}, text tower", fresh_prefixes=())
        scalars = {"logit_scale": self.logit_scale, "logit_bias": self.logit_bias}
        for name, param in scalars.items():
            if (param is None) != (name not in state):
                expected = "has" if param is not None else "has no"
                raise CheckpointError(f"{source}: the model {expected} {name!r}, the checkpoint does not agree")
            if param is not None:
                with torch.no_grad():
                    param.copy_(state[name].reshape(()))

    @classmethod
    def from_multimodal(cls, model: nn.Module, image: str = "image", text: str = "text") -> "CLIP":
        """A CLIP from a trained :class:`MultimodalModel` with ViT / CLIP-text encoders and a
        :class:`~polyfuse.heads.ContrastiveHead` (its projections are folded into the towers), e.g.
        to export a ``polyfuse-train`` run with :meth:`to_open_clip`. The weights are copied."""
        head = model.head
        towers = {}
        for modality, kind in ((image, ViTEncoder), (text, CLIPTextEncoder)):
            tower = model.encoders[modality] if modality in model.encoders else None
            if not isinstance(tower, kind) or tower.output != "pooled":
                raise ValueError(f"CLIP.from_multimodal needs a pooled {kind.__name__} for {modality!r}, got "
                                 f"{type(tower).__name__}")
            tower = copy.deepcopy(tower)
            projection = head.projections[modality] if hasattr(head, "projections") else nn.Identity()
            if isinstance(projection, nn.Linear):  # fold the head's projection into the tower's
                weight = projection.weight.detach()
                if isinstance(tower.proj, nn.Linear):
                    if tower.proj.bias is not None:
                        raise ValueError(f"{modality}: cannot fold a biased tower projection into the head's")
                    weight = weight @ tower.proj.weight.detach()
                tower.proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
                tower.proj.weight.data.copy_(weight)
                tower.out_dim = weight.shape[0]
            towers[modality] = tower
        scale = getattr(head, "logit_scale", None)
        bias = getattr(head, "logit_bias", None)
        return cls(towers[image], towers[text], math.log(1 / 0.07) if scale is None else scale.item(),
                   None if bias is None else bias.item())

    # -- exporting --------------------------------------------------------------------------------

    def open_clip_config(self) -> dict[str, Any]:
        """An open_clip model config describing this model (the one it was built from, if any)."""
        if self.config:
            return copy.deepcopy(self.config)
        v, t = self.visual, self.text
        vision = {"image_size": v.image_size, "patch_size": v.patch_size, "width": v.width, "layers": len(v.blocks),
                  "head_width": v.width // v.blocks[0].attn.heads, "mlp_ratio": v.blocks[0].mlp.fc1.out_features / v.width,
                  "pool_type": {"cls": "tok", "mean": "avg"}[v.pool],
                  "final_ln_after_pool": isinstance(v.fc_norm, nn.LayerNorm)}
        if v.in_chans != 3:
            vision["in_chans"] = v.in_chans  # polyfuse only: open_clip builds RGB towers
        text = {"context_length": t.context_length, "vocab_size": t.token_embedding.num_embeddings, "width": t.width,
                "heads": t.blocks[0].attn.heads, "layers": len(t.blocks),
                "mlp_ratio": t.blocks[0].mlp.fc1.out_features / t.width, "pool_type": t.pool,
                "no_causal_mask": not t.blocks[0].causal}
        quick = type(v.blocks[0].mlp.act).__name__ == "QuickGELU"
        return {"embed_dim": self.embed_dim, "quick_gelu": quick, "vision_cfg": vision, "text_cfg": text}

    def to_open_clip(self) -> StateDict:
        """This model as an open_clip state dict: ``open_clip.create_model(name).load_state_dict(sd)`` loads it
        exactly (``CLIP``; ``CustomTextCLIP`` layout, text under ``text.``, when the config sets ``custom_text``)."""
        state = export_open_clip_visual(self.visual)
        state.update(export_open_clip_text(self.text, prefix="text." if self.config.get("custom_text") else ""))
        state["logit_scale"] = self.logit_scale.detach().clone()
        if self.logit_bias is not None:
            state["logit_bias"] = self.logit_bias.detach().clone()
        return state

    def save_open_clip(self, directory: str | Path) -> Path:
        """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` (open_clip's ``local-dir:``
        layout, read back by :meth:`from_open_clip` and ``open_clip.create_model("local-dir:<dir>")``;
        open_clip itself builds RGB towers only)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": self.open_clip_config()}, indent=2))
        save_file({k: v.contiguous() for k, v in self.to_open_clip().items()}, str(directory / OPEN_CLIP_WEIGHTS))
        return directory

    # -- computing --------------------------------------------------------------------------------

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """``images: (B, 3, H, W)`` (CLIP-normalised) -> ``(B, embed_dim)``."""
        features = self.visual(images).tokens[:, 0]
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, token_ids: Tensor, normalize: bool = False, mask: Tensor | None = None) -> Tensor:
        """``token_ids: (B, L)`` int64 (0-padded, ``L <= context_length``), optional ``mask (B, L)`` -> ``(B, embed_dim)``.

        Without a mask, a tower pooling its last real token (``pool="last"``) takes the non-zero ids as real.
        """
        if mask is None and self.text.pool == "last":
            mask = token_ids != 0
        features = self.text(ModalityInput(token_ids, mask)).tokens[:, 0]
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(normalised image features (B, E), normalised text features (B, E), exp(logit_scale))``."""
        return (self.encode_image(images, normalize=True), self.encode_text(token_ids, normalize=True),
                self.logit_scale.exp())

    # -- evaluating -------------------------------------------------------------------------------

    @torch.no_grad()
    def zero_shot_classifier(self, class_names: list[str], templates: list[str], tokenize) -> Tensor:
        """``(num_classes, E)`` class embeddings: the mean over ``templates`` of normalised text embeddings,
        re-normalised (see :func:`polyfuse.heads.zero_shot.class_embeddings`). ``tokenize``: strings ->
        ``(N, L)`` ids or a :class:`ModalityInput`."""
        def embed(texts: list[str]) -> Tensor:
            tokens = tokenize(texts)
            ids, mask = (tokens.values, tokens.mask) if isinstance(tokens, ModalityInput) else (tokens, None)
            device = self.logit_scale.device
            return self.encode_text(ids.to(device), mask=None if mask is None else mask.to(device))

        return class_embeddings(embed, class_names, templates)

    @torch.no_grad()
    def zero_shot_logits(self, images: Tensor, classifier: Tensor, scale: float = 100.0) -> Tensor:
        """``(B, num_classes)`` logits of ``images`` against a :meth:`zero_shot_classifier`."""
        return zero_shot_logits(self.encode_image(images, normalize=True), classifier, scale)

    @torch.no_grad()
    def retrieval(self, images: Tensor, token_ids: Tensor, caption_to_image: Tensor | None = None,
                  ks: tuple[int, ...] = (1, 5, 10), batch_size: int = 256) -> dict[str, float]:
        """Image <-> text recall@K (``image_to_text/R@k``, ``text_to_image/R@k``, ``rsum``).

        ``caption_to_image: (num_texts,)`` gives the image each caption describes (COCO: five per
        image); ``None`` means one caption per image, in order.
        """
        image_features = torch.cat([self.encode_image(chunk, normalize=True) for chunk in images.split(batch_size)])
        text_features = torch.cat([self.encode_text(chunk, normalize=True) for chunk in token_ids.split(batch_size)])
        scores = retrieval_recall(image_features @ text_features.T, ks, caption_to_image)
        return {k.replace("a_to_b", "image_to_text").replace("b_to_a", "text_to_image"): v for k, v in scores.items()}
