"""Attach the package's methods to kikuchipy's EBSD signal on import."""

import warnings
from importlib.metadata import PackageNotFoundError, distribution

_MARK = "_kikuchipy_cnn"
_warned_both = False


def _method(func):
    def method(self, *args, **kwargs):
        return func(self, *args, **kwargs)

    method.__name__ = func.__name__
    method.__qualname__ = f"EBSD.{func.__name__}"
    method.__doc__ = func.__doc__
    setattr(method, _MARK, True)
    return method


def attach_methods():
    """Add ``classify_structure`` and ``get_saliency`` to :class:`kikuchipy.signals.EBSD`, unless
    an attribute of that name that is not ours already exists."""
    from kikuchipy.signals import EBSD

    from kikuchipy_cnn.classify import classify_structure
    from kikuchipy_cnn.saliency import get_saliency

    for func in (classify_structure, get_saliency):
        name = func.__name__
        existing = getattr(EBSD, name, None)
        if existing is not None and not getattr(existing, _MARK, False):
            warnings.warn(
                f"kikuchipy's EBSD already has an attribute {name!r}; kikuchipy-cnn "
                f"does not overwrite it. Call kikuchipy_cnn.{name}(signal, ...) instead",
                UserWarning,
                stacklevel=3,
            )
            continue
        setattr(EBSD, name, _method(func))


def _installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def warn_if_both_runtimes():
    """Warn once if both onnxruntime and onnxruntime-gpu are installed: they
    install into the same folder and overwrite each other."""
    global _warned_both
    if not _warned_both and _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        _warned_both = True
        warnings.warn(
            "Both onnxruntime and onnxruntime-gpu are installed; they overwrite each "
            "other. Keep one: `pip uninstall onnxruntime onnxruntime-gpu` then "
            "`pip install onnxruntime-gpu` (or onnxruntime where no GPU wheel exists)",
            RuntimeWarning,
            stacklevel=3,
        )
