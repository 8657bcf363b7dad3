"""Missing / noisy modality evaluation, uniform across fusion methods.

>>> from polyfuse.robustness import RobustnessConfig, evaluate_robustness
>>> records = evaluate_robustness(model, test_batches, RobustnessConfig(subsets="single"))
"""

from polyfuse.robustness.corruptions import CORRUPTIONS, corrupt, corruptions_for
from polyfuse.robustness.evaluate import DEFAULT_LEVELS, RobustnessConfig, evaluate_clean, evaluate_robustness
from polyfuse.robustness.metrics import effective_robustness, minmax_normalise, relative_robustness
from polyfuse.robustness.missing import drop_modalities, modality_subsets
from polyfuse.robustness.summary import summarise

__all__ = ["CORRUPTIONS", "corrupt", "corruptions_for", "DEFAULT_LEVELS", "RobustnessConfig", "evaluate_clean",
           "evaluate_robustness",
           "effective_robustness", "minmax_normalise", "relative_robustness", "drop_modalities", "modality_subsets",
           "summarise"]
