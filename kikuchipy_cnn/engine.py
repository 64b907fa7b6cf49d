"""ONNX Runtime inference: provider choice, cached sessions, batching.

Nothing else in the package talks to ONNX Runtime. Sessions are cached per
process, keyed by weights file, providers and thread count, and are never
pickled: dask tasks carry the card's path and look the session up here.
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
from functools import lru_cache

import numpy as np

from kikuchipy_cnn.card import ModelCard, ModelCardError
from kikuchipy_cnn._warnings import user_stacklevel

__all__ = ["InferenceSession", "auxiliary_session", "choose_providers", "get_session", "run_auxiliary"]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

_lock = threading.Lock()
_sessions: dict[tuple, "InferenceSession"] = {}
_auxiliary_sessions: dict[tuple, object] = {}  # small helper models (pattern check)
_warned: set[str] = set()


def _ort():
    import onnxruntime

    return onnxruntime


def _warn_once(key: str, message: str):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=user_stacklevel())


@lru_cache(maxsize=1)
def _cuda_device_count() -> int:
    """Number of CUDA devices the driver reports, 0 without a driver."""
    names = ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def choose_providers(providers: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Return the execution providers to use.

    Parameters
    ----------
    providers
        Providers requested by the user, e.g. ``["CPUExecutionProvider"]``.
        If not given, CUDA is used when ONNX Runtime has it and a CUDA
        device is present, otherwise the CPU. TensorRT is used only when
        requested.

    Returns
    -------
    providers
        Provider names, in order of preference, always ending with the CPU.
    """
    available = _ort().get_available_providers()
    if providers is not None:
        providers = [providers] if isinstance(providers, str) else list(providers)
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ValueError(
                f"Execution providers {unknown} are not available in this ONNX "
                f"Runtime installation; available are {available}"
            )
        return providers + ([CPU] if CPU not in providers else [])
    if CUDA in available and _cuda_device_count() > 0:
        return [CUDA, CPU]
    return [CPU]


def default_threads() -> int:
    """Intra-op threads per session: the cores shared among the threads of a
    dask worker, so that concurrent tasks do not oversubscribe the CPU."""
    n_cpu = os.cpu_count() or 1
    concurrent = 1
    try:
        from distributed import get_worker

        concurrent = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        concurrent = int(os.environ.get("KIKUCHIPY_CNN_CONCURRENT_TASKS", "1"))
    return max(1, n_cpu // max(concurrent, 1))


class InferenceSession:
    """A model's ONNX Runtime session with batching.

    Use :func:`get_session` rather than creating it directly.
    """

    def __init__(self, card: ModelCard, providers: list[str], threads: int):
        self._max_batch = 2**31  # lowered when the device runs out of memory
        ort = _ort()
        card.verify_weights()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        wanted = providers
        gpu = CUDA in providers or TENSORRT in providers
        if gpu:
            # Without the CUDA libraries ONNX Runtime logs a wall of errors and
            # falls back to the CPU: silence them, then say it once
            opts.log_severity_level = 4
            ort.set_default_logger_severity(4)
        try:
            self._session = ort.InferenceSession(
                str(card.weights_path), sess_options=opts, providers=providers
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelCardError(
                f"ONNX Runtime could not load the weights of model {card.name!r} "
                f"({card.weights_path}): {e}"
            ) from e
        finally:
            if gpu:
                ort.set_default_logger_severity(3)
        self.providers = self._session.get_providers()
        if wanted[0] != CPU and self.providers[0] == CPU:
            _warn_once(
                "gpu-fallback",
                f"{wanted[0]} could not be used (are the CUDA libraries "
                "installed? see the onnxruntime-gpu install notes); running on the "
                "CPU instead",
            )
        self.card = card
        self._check_graph()

    @property
    def provider(self) -> str:
        """The provider that runs the model."""
        return self.providers[0]

    def _check_graph(self):
        card = self.card
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != card.input_name:
            raise ModelCardError(
                f"Card of model {card.name!r} names input {card.input_name!r}, but "
                f"the ONNX graph has inputs {[i.name for i in inputs]}"
            )
        graph_shape = inputs[0].shape
        for got, want in zip(graph_shape[1:], card.input_shape[1:]):
            if isinstance(got, int) and got != want:
                raise ModelCardError(
                    f"Card of model {card.name!r} gives input shape "
                    f"{list(card.input_shape)}, but the ONNX graph expects "
                    f"{graph_shape}"
                )
        outputs = {o.name: o for o in self._session.get_outputs()}
        for role, name in card.outputs.items():
            if name not in outputs:
                raise ModelCardError(
                    f"Card of model {card.name!r} names output {name!r} ({role}), "
                    f"but the ONNX graph has outputs {list(outputs)}"
                )
        n = outputs[card.outputs["probabilities"]].shape[-1]
        if isinstance(n, int) and n != len(card.classes):
            raise ModelCardError(
                f"Card of model {card.name!r} lists {len(card.classes)} classes, but "
                f"the ONNX graph returns {n} probabilities"
            )

    def run(
        self, x: np.ndarray, outputs: tuple[str, ...] = ("probabilities",),
        batch_size: int = 256,
    ) -> dict[str, np.ndarray]:
        """Run the model on preprocessed input in batches.

        Parameters
        ----------
        x
            Preprocessed input of shape ``(n, 1, size, size)``.
        outputs
            Output roles from the card, e.g. ``("probabilities", "cam")``.
        batch_size
            Patterns per run. Halved and retried when the device runs out of
            memory; later runs of this session start from the reduced size.

        Returns
        -------
        results
            Output role → array with ``n`` rows.
        """
        names = []
        for role in outputs:
            if role not in self.card.outputs:
                raise ValueError(
                    f"Model {self.card.name!r} has no {role!r} output; it has "
                    f"{list(self.card.outputs)}"
                )
            names.append(self.card.outputs[role])
        parts: dict[str, list] = {r: [] for r in outputs}
        start = 0
        n = x.shape[0]
        # a size that ran out of memory before is not tried again
        batch_size = min(int(batch_size), self._max_batch)
        while start < n:
            stop = min(start + batch_size, n)
            try:
                res = self._session.run(names, {self.card.input_name: x[start:stop]})
            except Exception as e:
                if batch_size > 1 and _is_out_of_memory(e):
                    batch_size //= 2
                    self._max_batch = min(self._max_batch, batch_size)
                    _warn_once(
                        "oom", f"Device out of memory: batch size reduced to {batch_size}"
                    )
                    continue
                raise
            for role, r in zip(outputs, res):
                parts[role].append(r)
            start = stop
        if n == 0:
            return {r: np.zeros((0,)) for r in outputs}
        return {r: np.concatenate(p) for r, p in parts.items()}


#: Patterns per inference batch by execution provider (a GPU needs large
#: batches to be kept busy; out-of-memory errors halve them)
DEFAULT_BATCH_SIZES = {"CUDAExecutionProvider": 4096, "TensorrtExecutionProvider": 4096}


def default_batch_size(provider: str) -> int:
    """Patterns per inference batch for an execution provider: 4096 on a
    GPU, 256 on the CPU."""
    return DEFAULT_BATCH_SIZES.get(provider, 256)


def _is_out_of_memory(error: Exception) -> bool:
    msg = str(error).lower()
    return "out of memory" in msg or "failed to allocate" in msg


def get_session(
    card: ModelCard,
    providers: list[str] | tuple[str, ...] | None = None,
    threads: int | None = None,
) -> InferenceSession:
    """Return the cached session of a model, creating it on first use.

    Parameters
    ----------
    card
        The model's card.
    providers
        Execution providers; see :func:`choose_providers`.
    threads
        Intra-op threads; by default :func:`default_threads`.
    """
    providers = choose_providers(providers)
    threads = default_threads() if threads is None else int(threads)
    key = (str(card.weights_path), card.sha256, tuple(providers), threads)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            session = InferenceSession(card, providers, threads)
            _sessions[key] = session
    return session


def _auxiliary_session(path: str, sha256: str, threads: int):
    key = (path, sha256, threads)
    with _lock:
        session = _auxiliary_sessions.get(key)
        if session is None:
            import hashlib
            from pathlib import Path

            data = Path(path).read_bytes()
            got = hashlib.sha256(data).hexdigest()
            if got != sha256:
                raise ModelCardError(
                    f"The weights {path} have sha256 {got}, not the expected {sha256}: "
                    "the file is damaged or was replaced; reinstall kikuchipy-cnn"
                )
            ort = _ort()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            session = ort.InferenceSession(data, sess_options=opts, providers=[CPU])
            _auxiliary_sessions[key] = session
    return session


def auxiliary_session(path, sha256: str):
    """The cached CPU session of a small auxiliary ONNX model (e.g. the
    learned pattern check, a pooled model); its weights are checked against
    ``sha256`` when it is created."""
    return _auxiliary_session(str(path), sha256, default_threads())


def run_auxiliary(path, sha256: str, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Run a small auxiliary ONNX model (one input, one output; e.g. the
    learned pattern check) on the CPU in batches; its weights are checked
    against ``sha256`` when the session is created."""
    session = auxiliary_session(path, sha256)
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: x[s : s + batch_size]})[0]
             for s in range(0, x.shape[0], batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)


def clear_sessions():
    """Drop all cached sessions."""
    with _lock:
        _sessions.clear()
        _auxiliary_sessions.clear()
