"""Losses: contrastive (InfoNCE/CLIP, SigLIP) with distributed gathering, VQA soft-BCE, captioning CE.

>>> from polyfuse.losses import ContrastiveLoss
>>> loss = ContrastiveLoss()(image_features, text_features, logit_scale)
"""

from polyfuse.losses.captioning import sequence_cross_entropy
from polyfuse.losses.contrastive import ContrastiveLoss
from polyfuse.losses.gather import distributed_world, gather_features
from polyfuse.losses.siglip import SigLipLoss
from polyfuse.losses.vqa import vqa_soft_bce

__all__ = ["ContrastiveLoss", "SigLipLoss", "gather_features", "distributed_world", "vqa_soft_bce",
           "sequence_cross_entropy"]
