"""Temperature scaling and expected calibration error.

The temperature ``T`` divides the logits before the softmax; it is fitted on
the validation split by minimising the negative log-likelihood and then baked
into the exported graph, so the card's probabilities are calibrated.
"""

from __future__ import annotations

import numpy as np

__all__ = ["expected_calibration_error", "fit_temperature", "nll", "softmax"]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer ``labels`` under
    ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels, dtype=np.int64)
    return float(-_log_softmax(z)[np.arange(len(labels)), labels].mean())


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Temperature minimising the validation NLL.

    The NLL is convex in ``1/T``; a golden-section search over ``log T``
    within ``bounds`` followed by a few Newton-free refinements is robust and
    needs no optimiser state.

    Parameters
    ----------
    logits
        Array ``(n, n_classes)`` of uncalibrated logits.
    labels
        Array ``(n,)`` of true class indices.
    bounds
        Search interval for ``T``.

    Returns
    -------
    temperature
        The fitted ``T`` (float).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError("logits must be (n, n_classes) and labels (n,), n > 0")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    f = lambda t: nll(logits, labels, np.exp(t))  # noqa: E731
    g = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
        if b - a < 1e-7:
            break
    return float(np.exp((a + b) / 2))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> float:
    """Expected calibration error of the top-1 confidence (equal-width bins).

    ``ECE = sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    # Bin (lo, hi]; confidence 0 cannot occur for a softmax
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)
