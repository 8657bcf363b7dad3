"""Generative multimodal models: multimodal VAEs (MVAE, MMVAE) and cross-modal translators.

>>> from polyfuse.generative import MultimodalVAE, TokenDecoder
>>> vae = MultimodalVAE({"image": 64, "audio": 64, "text": 64}, latent_dim=32, posterior="poe")
>>> vae.elbo(features, present)["loss"]                  # negative ELBO over sub-sampled subsets
>>> vae.generate({"audio": audio_features}, "image")    # audio -> image features

Experts and joint posteriors: :mod:`~polyfuse.generative.experts`; decoders (features, tokens):
:mod:`~polyfuse.generative.decoders`; translators used by the ``translation`` fusion:
:mod:`~polyfuse.generative.translator`. See ``docs/alignment.md``.
"""

from polyfuse.generative.decoders import FeatureDecoder, TokenDecoder
from polyfuse.generative.experts import GaussianExpert, mixture_log_prob, product_of_experts
from polyfuse.generative.gaussian import gaussian_log_prob, kl_to_standard_normal, reparameterize
from polyfuse.generative.mvae import MultimodalVAE
from polyfuse.generative.translator import RegressionTranslator, Translator, VAETranslator, build_translator

__all__ = [
    "FeatureDecoder", "TokenDecoder", "GaussianExpert", "mixture_log_prob", "product_of_experts",
    "gaussian_log_prob", "kl_to_standard_normal", "reparameterize", "MultimodalVAE", "RegressionTranslator",
    "Translator", "VAETranslator", "build_translator",
]
