"""Using a trained model from Python: :func:`load` a run directory or an exported folder, then
:meth:`InferenceModel.predict` on raw inputs; :func:`export_run` (``polyfuse-export``) writes the
self-contained folder. See docs/inference.md.
"""

from polyfuse.inference.build import build_model
from polyfuse.inference.export import export_run
from polyfuse.inference.load import load
from polyfuse.inference.predict import InferenceModel
from polyfuse.inference.preprocess import Preprocessing

__all__ = ["load", "export_run", "build_model", "InferenceModel", "Preprocessing"]
