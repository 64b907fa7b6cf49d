"""kikuchipy-cnn: crystal structure classification of EBSD patterns with
CNNs trained on physics simulations.

Importing the package adds :meth:`classify_structure` to kikuchipy's
:class:`~kikuchipy.signals.EBSD` (and so to ``LazyEBSD``).
"""

from importlib.metadata import PackageNotFoundError, version

from kikuchipy_cnn.card import ModelCard, ModelCardError, WeightsError
from kikuchipy_cnn.classify import classify_structure
from kikuchipy_cnn.crystal_map import labels, probabilities
from kikuchipy_cnn.hookspecs import hookimpl
from kikuchipy_cnn.plotting import format_summary, plot_maps, summary
from kikuchipy_cnn.indexing import index_phases
from kikuchipy_cnn.pc_estimation import PCEstimate, check_detector, estimate_pc
from kikuchipy_cnn.preprocessing import Preprocessing, preprocess
from kikuchipy_cnn.saliency import get_saliency
from kikuchipy_cnn.registry import (
    DEFAULT_MODEL,
    UnknownModelError,
    get_model,
    list_models,
)
from kikuchipy_cnn.symmetry import JOINT_CLASSES, SpaceGroupClass, space_group_class
from kikuchipy_cnn import _attach

try:
    __version__ = version("kikuchipy-cnn")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MODEL",
    "JOINT_CLASSES",
    "ModelCard",
    "ModelCardError",
    "PCEstimate",
    "Preprocessing",
    "SpaceGroupClass",
    "UnknownModelError",
    "WeightsError",
    "classify_structure",
    "check_detector",
    "estimate_pc",
    "format_summary",
    "get_model",
    "get_saliency",
    "hookimpl",
    "index_phases",
    "labels",
    "plot_maps",
    "list_models",
    "preprocess",
    "probabilities",
    "space_group_class",
    "summary",
]

_attach.warn_if_both_runtimes()
_attach.attach_methods()
