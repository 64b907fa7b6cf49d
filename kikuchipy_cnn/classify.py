"""Classify the crystal structure of every pattern of an EBSD signal."""

from __future__ import annotations

import os
import time
import warnings
from functools import lru_cache

import numpy as np
from orix.crystal_map import CrystalMap

from kikuchipy_cnn.card import ModelCard
from kikuchipy_cnn.crystal_map import build_crystal_map
from kikuchipy_cnn.engine import default_batch_size, get_session
from kikuchipy_cnn.preprocessing import Preprocessing, preprocess
from kikuchipy_cnn.registry import get_model
from kikuchipy_cnn._chunks import compute, map_patterns
from kikuchipy_cnn.pattern_check import CHECK_CODES, check_patterns as _check_patterns
from kikuchipy_cnn.phases import POOL_MODES
from kikuchipy_cnn._warnings import user_stacklevel

__all__ = ["classify_structure"]


@lru_cache(maxsize=16)
def _card(path: str) -> ModelCard:
    return ModelCard.from_file(path)


def resolve_model(model: str | ModelCard | None) -> ModelCard:
    """Return the card of a model given by name, card file (a path ending in
    ``.yaml``), card or None (default)."""
    if isinstance(model, ModelCard):
        return model
    if isinstance(model, os.PathLike) or (isinstance(model, str) and model.endswith(".yaml")):
        return ModelCard.from_file(model)
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a model name, a card.yaml path or a ModelCard, not {model!r}")
    return get_model(model)


def _checked_classify_chunk(patterns, excluded, check=True, **kwargs):
    """:func:`_classify_chunk` after the model-independent pattern check
    (:mod:`kikuchipy_cnn.pattern_check`): patterns that are not Kikuchi
    patterns are not given to the model.

    Returns ``(n, n_classes + 3)`` (more with ``sketch``, ``cells`` or
    ``features``): the columns of :func:`_classify_chunk`, then the check
    code and the learned check's probability (NaN where excluded, or the
    check is off).
    """
    n = patterns.shape[0]
    extra = np.full((n, 2), np.nan, dtype=np.float32)
    keep = np.flatnonzero(~excluded)
    if check and keep.size:
        code, score = _check_patterns(patterns[keep], kwargs.get("static_background"))
        extra[keep, 0] = code
        extra[keep, 1] = score
        excluded = excluded.copy()
        excluded[keep[code != 0]] = True
    out = _classify_chunk(patterns, excluded, **kwargs)
    return np.concatenate([out, extra], axis=1)


#: Preprocessing of the pattern sketches of band models (pixel models use
#: their own input)
_SKETCH_RECIPE = Preprocessing()


def sketch_preprocessing(card) -> Preprocessing:
    """The preprocessing of the patterns that sketches and spectra are made
    from, for discovering phases: a pixel model's own input, else
    :data:`_SKETCH_RECIPE`."""
    return card.preprocessing if card.input_kind == "pixels" else _SKETCH_RECIPE


def _sketch_length(card) -> int:
    """Length of the pattern sketches of a model's patterns
    (:func:`kikuchipy_cnn.phases.sketch_length` of its preprocessed size)."""
    from kikuchipy_cnn.phases import sketch_length

    return sketch_length(sketch_preprocessing(card).size)


def _d_spacing_columns(card) -> int:
    """Columns of a pattern's d-spacing histogram among its discovery
    inputs: :data:`kikuchipy_cnn.phases.DSPACING_BINS` when the card's
    discovery signatures name ``"d_spacings"``, else 0."""
    from kikuchipy_cnn.phases import DSPACING_BINS

    return DSPACING_BINS if "d_spacings" in card.pool_signatures else 0


def _discovery_layout(card) -> tuple[slice, slice, slice]:
    """Where a pattern's spectrum, d-spacing histogram (empty unless the
    card's signatures use it) and packed sketch lie within its
    :func:`sketch_columns` discovery columns."""
    from kikuchipy_cnn.phases import SPECTRUM_BINS

    nd = _d_spacing_columns(card)
    return (slice(0, SPECTRUM_BINS), slice(SPECTRUM_BINS, SPECTRUM_BINS + nd),
            slice(SPECTRUM_BINS + nd, sketch_columns(card)))


def sketch_columns(card) -> int:
    """float32 columns that hold one pattern's discovery inputs: its radial
    spectrum (:func:`kikuchipy_cnn.phases.pattern_spectra`), its d-spacing
    histogram if the card's signatures use it
    (:func:`kikuchipy_cnn.phases.d_spacing_histogram`) and its sketch
    (:func:`kikuchipy_cnn.phases.pattern_sketches`, as float16 pairs)."""
    from kikuchipy_cnn.phases import SPECTRUM_BINS

    return SPECTRUM_BINS + _d_spacing_columns(card) + (_sketch_length(card) + 1) // 2


def _pack_sketches(sk: np.ndarray, columns: int) -> np.ndarray:
    """float32 sketches ``(n, m)`` as float16 pairs in ``columns`` float32
    columns (half the memory of the chunk results)."""
    half = np.zeros((sk.shape[0], 2 * columns), np.float16)
    half[:, : sk.shape[1]] = sk
    return half.view(np.float32)


def unpack_sketches(packed: np.ndarray, card) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The spectra, d-spacing histograms (None unless the card's signatures
    use them) and float32 sketches from the :func:`sketch_columns` columns
    of :func:`_classify_chunk`."""
    spec, dsp, sketch = _discovery_layout(card)
    spectra = np.array(packed[:, spec], dtype=np.float32)
    d_spacings = np.array(packed[:, dsp], dtype=np.float64) if dsp.stop > dsp.start else None
    # a float16 view of the packed columns (rows contiguous), widened once
    half = packed[:, sketch]
    if half.strides[-1] != half.itemsize:
        half = np.ascontiguousarray(half)
    return spectra, d_spacings, half.view(np.float16)[:, : _sketch_length(card)].astype(np.float32)


#: Columns per pattern of its rebuilt lattice in :func:`_classify_chunk`'s
#: output: the Niggli cell (:data:`_CELL_VALUES`, rows) and its scale to Å (1)
_CELL_VALUES = 9
CELL_COLUMNS = _CELL_VALUES + 1


def _classify_chunk(patterns, excluded, card_path, providers, batch_size, static_background,
                    per_pattern=None, wavelength=None, sketch=False, features=False, cells=False):
    """Per-chunk work: preprocessing (pixels) or band features (bands) → ONNX
    Runtime → probabilities.

    Returns ``(n, n_classes + 1)``: probabilities (NaN where excluded or
    unusable) and a last column that is 1 for unusable patterns; with
    ``sketch=True`` followed by each pattern's discovery inputs
    (:func:`sketch_columns`: :func:`kikuchipy_cnn.phases.pattern_spectra`,
    if the card's signatures use them the band d-spacings
    :func:`~kikuchipy_cnn.phases.d_spacing_histogram`, and
    :func:`~kikuchipy_cnn.phases.pattern_sketches` of the preprocessed
    pattern, packed; 0 where not classified); with
    ``cells=True`` (band models) followed by each pattern's lattice rebuilt
    from its band directions (:data:`CELL_COLUMNS` values: the Niggli cell,
    rows the basis vectors, then the factor that takes it to Å; NaN where
    none or not classified); with ``features=True`` (band
    models) followed by each pattern's band features (for pooling the
    evidence of a phase; NaN where not classified).
    """
    from kikuchipy_cnn.phases import pattern_sketches, pattern_spectra

    card = _card(card_path)
    n = patterns.shape[0]
    ncol = sketch_columns(card) if sketch else 0
    nfeat = card.input_shape[1] if features else 0
    ncell = CELL_COLUMNS if cells else 0
    out = np.full((n, len(card.classes) + 1 + ncol + ncell + nfeat), np.nan, dtype=np.float32)
    out[:, len(card.classes) : len(card.classes) + 1 + ncol] = 0
    keep = np.flatnonzero(~excluded)
    if keep.size == 0:
        return out
    if card.input_kind == "bands":
        x, valid, cell, dsp, scale = _band_input(patterns[keep], per_pattern[keep], wavelength, card,
                                                 static_background)
    else:
        x, valid = preprocess(patterns[keep], card.preprocessing, static_background)
    session = get_session(card, providers)
    good = keep[valid]
    if good.size:
        probs = session.run(x[valid], ("probabilities",), batch_size)["probabilities"]
        out[good, : len(card.classes)] = probs
        if nfeat:
            out[good, out.shape[1] - nfeat :] = x[valid]
        if ncell:
            first = len(card.classes) + 1 + ncol
            out[good, first : first + _CELL_VALUES] = cell[valid].reshape(-1, _CELL_VALUES)
            out[good, first + _CELL_VALUES] = scale[valid]
        if sketch:
            if card.input_kind == "bands":
                x, _ = preprocess(patterns[good], sketch_preprocessing(card), static_background)
            else:
                x = x[valid]
            block = out[:, len(card.classes) + 1 : len(card.classes) + 1 + ncol]  # a view
            spec, dcols, sketch = _discovery_layout(card)
            block[good, spec] = pattern_spectra(x)
            if dcols.stop > dcols.start:
                block[good, dcols] = dsp[valid]
            block[good, sketch] = _pack_sketches(pattern_sketches(x), sketch.stop - sketch.start)
    out[keep[~valid], len(card.classes)] = 1
    return out


def band_sets(patterns, pcs, card, static_background):
    """The bands a band model reads: the patterns (static background divided
    out) checked usable (finite, not constant) and their bands detected with
    each one's PC. Returns the :class:`~kikuchipy_cnn.bands.BandSet` of the
    usable patterns (None if none), which patterns are usable and their
    angular pixel sizes. Shared by classification and saliency."""
    from kikuchipy_cnn.bands import detect_bands, pixel_angle
    from kikuchipy_cnn.preprocessing import static_background_divisor

    x = np.asarray(patterns, dtype=np.float32).copy()
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(x).all(axis=(1, 2)) & (np.ptp(x, axis=(1, 2)) > 0)
    if not valid.any():
        return None, valid, np.zeros(0)
    if static_background is not None:
        x /= static_background_divisor(static_background, x.shape[-2:])
    pcs = np.asarray(pcs, np.float64)[valid]
    bands = detect_bands(x[valid], pcs, n_bands=card.band_settings["n_bands"])
    return bands, valid, pixel_angle(x.shape[1:], pcs)


def _band_input(patterns, pcs, wavelength, card, static_background):
    """Band features of patterns (:func:`band_sets`), which patterns are
    usable (finite, not constant), each pattern's lattice rebuilt from its
    band directions (``(n, 3, 3)``, NaN where none: ``band_features(cells=)``,
    same pass), the d-spacing histogram of its bands
    (:func:`kikuchipy_cnn.phases.d_spacing_histogram`, NaN where none) and
    the factor that takes its cell to Å (``(n,)``, NaN where none:
    ``band_features(cell_scales=)``)."""
    from kikuchipy_cnn.features import band_features
    from kikuchipy_cnn.phases import DSPACING_BINS, d_spacing_histogram

    bands, valid, angles = band_sets(patterns, pcs, card, static_background)
    feats = np.zeros((len(valid), card.input_shape[1]), dtype=np.float32)
    cells = np.full((len(valid), 3, 3), np.nan)
    d_spacings = np.full((len(valid), DSPACING_BINS), np.nan)
    scales = np.full(len(valid), np.nan)
    if bands is not None:
        found = np.full((int(valid.sum()), 3, 3), np.nan)
        scale = np.full(int(valid.sum()), np.nan)
        feats[valid] = band_features(bands, wavelength, angles, cells=found, cell_scales=scale)
        cells[valid], scales[valid] = found, scale
        d_spacings[valid] = d_spacing_histogram(bands.width, bands.valid, wavelength)
    return feats, valid, cells, d_spacings, scales


#: kikuchipy's pattern centre when none is known (Bruker convention)
KIKUCHIPY_DEFAULT_PC = (0.5, 0.5, 0.5)


def detector_geometry(signal, nav_shape, pc=None) -> tuple[np.ndarray, float]:
    """Pattern centre of every pattern ``(n, 3)`` (Bruker convention, from
    ``signal.detector``, or ``pc`` when given: ``(n, 3)``, already validated
    by :func:`validate_pc`) and the electron wavelength (Å) from the beam
    energy in the signal's metadata (20 kV, with a warning, when it is missing).

    Warns when the detector carries kikuchipy's default pattern centre, which is
    almost never the real one: band models need the true geometry."""
    from kikuchipy_cnn.bands import electron_wavelength

    n = int(np.prod(nav_shape)) if nav_shape else 1
    if pc is not None:
        return np.asarray(pc, np.float64).reshape(n, 3), electron_wavelength(_beam_energy(signal))
    det = signal.detector
    sig_shape = tuple(signal.axes_manager.signal_shape[::-1])
    if tuple(det.shape) != sig_shape:
        raise ValueError(
            f"The signal's detector has shape {tuple(det.shape)} but the patterns are {sig_shape}: "
            "set s.detector to the detector of these patterns (kikuchipy.detectors.EBSDDetector)"
        )
    pc = np.asarray(det.pc, dtype=np.float64).reshape(-1, 3)
    if len(pc) == 1:
        pc = np.repeat(pc, n, axis=0)
    if len(pc) != n:
        raise ValueError(
            f"The signal's detector has {len(pc)} pattern centres for {n} patterns: give one, "
            "or one per pattern (s.detector.pc of shape navigation shape + (3,))"
        )
    if np.allclose(pc, KIKUCHIPY_DEFAULT_PC):
        warnings.warn(
            "The signal's detector has kikuchipy's default pattern centre (0.5, 0.5, 0.5), "
            "which is almost never the real one; band models read the lattice from band "
            "angles and need the true geometry. Set it, e.g. s.detector.pc = (PCx, PCy, PCz) "
            "in the Bruker convention (see kikuchipy.detectors.EBSDDetector for converting "
            "TSL, Oxford or EMsoft values; command line: kikuchipy-cnn classify --pc)",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return pc, electron_wavelength(_beam_energy(signal))


def _beam_energy(signal) -> float:
    """The beam energy (kV) in the signal's metadata, or 20 kV with a warning."""
    energy = None
    try:
        energy = float(signal.metadata.Acquisition_instrument.SEM.beam_energy)
    except (AttributeError, TypeError, ValueError):
        pass
    if energy is None or not 1 <= energy <= 100:
        warnings.warn(
            "The signal's metadata give no beam energy (Acquisition_instrument.SEM.beam_energy, "
            "kV): assuming 20 kV. Set it with "
            "s.metadata.set_item('Acquisition_instrument.SEM.beam_energy', 20.0)",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        energy = 20.0
    return energy


#: ``pc`` values of :func:`classify_structure` that are not numbers
PC_MODES = ("estimate", "check")


def validate_pc(pc, nav_shape) -> str | np.ndarray | None:
    """Return ``pc`` of :func:`classify_structure` checked: None, one of
    :data:`PC_MODES`, or the pattern centre of every pattern ``(n, 3)``
    (Bruker convention) from one ``(PCx, PCy, PCz)`` or one per pattern
    (navigation shape + ``(3,)`` or ``(n, 3)``)."""
    if pc is None:
        return None
    if isinstance(pc, str):
        if pc not in PC_MODES:
            raise ValueError(
                f"pc must be None, 'estimate', 'check' or (PCx, PCy, PCz), not {pc!r}"
            )
        return pc
    n = int(np.prod(nav_shape)) if nav_shape else 1
    try:
        arr = np.asarray(pc, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"pc must be None, 'estimate', 'check' or numbers (PCx, PCy, PCz), not {pc!r}"
        ) from None
    if arr.shape == (3,):
        arr = np.broadcast_to(arr, (n, 3))
    elif arr.shape in ((n, 3), tuple(nav_shape) + (3,)):
        arr = arr.reshape(n, 3)
    else:
        raise ValueError(
            f"pc has shape {arr.shape}: give one pattern centre (PCx, PCy, PCz) or one per "
            f"pattern, of shape {tuple(nav_shape) + (3,)} or ({n}, 3)"
        )
    if not np.isfinite(arr).all() or (arr[:, 2] <= 0).any():
        raise ValueError(
            "pc must be finite with PCz > 0 (Bruker convention: PCx from the left / width, "
            "PCy from the top / height, PCz / height)"
        )
    return arr.copy()


def _pc_for_band_model(signal, pc, static_background, verbose) -> tuple[np.ndarray | None, object]:
    """The PC override for a band model and the :class:`PCEstimate` behind it:
    ``pc`` itself, the estimate (``"estimate"``), or None (the detector's;
    ``"check"`` first warns if it disagrees with the bands)."""
    from kikuchipy_cnn.pc_estimation import check_detector, estimate_pc

    if pc is None or isinstance(pc, np.ndarray):
        return pc, None
    if pc == "check":
        return None, check_detector(signal, static_background=static_background)
    try:
        est = estimate_pc(signal, static_background=static_background)
    except ValueError as e:
        raise ValueError(
            f"The pattern centre could not be estimated from the patterns: {e}. Give it instead "
            "with pc=(PCx, PCy, PCz) or s.detector.pc = (PCx, PCy, PCz) (Bruker convention; "
            "command line: kikuchipy-cnn classify --pc PCX PCY PCZ), or start the estimate "
            "closer to the truth by setting s.detector.pc"
        ) from e
    if verbose:
        print(f"  Pattern centre: {_format_estimate(est)}")
    return est.pc_per_pattern, est


def _format_estimate(est) -> str:
    pc = ", ".join(f"{v:.4f}" for v in est.pc)
    sd = ", ".join(f"{v:.4f}" for v in est.uncertainty)
    return (f"(PCx, PCy, PCz) = ({pc}) +- ({sd}) estimated from {est.n_patterns_used} "
            f"pattern(s) ({est.lattice} lattice; start {', '.join(f'{v:.4f}' for v in est.pc0)})")


def _warn_rejected(codes: np.ndarray, has_background: bool = True) -> None:
    """Warn once about the patterns the pattern check rejected; without a
    static background, say how to give raw patterns theirs."""
    counts = {c: int((codes == c).sum()) for c in CHECK_CODES if c}
    if any(counts.values()):
        what = ", ".join(f"{k} {CHECK_CODES[c].split(' (')[0]}" for c, k in counts.items() if k)
        hint = ""
        if not has_background and counts.get(4):
            hint = (
                ". No static background was divided out: if these are raw patterns "
                "with a strong detector background, give theirs (s.static_background, "
                "or static_background=... here) or remove it first with "
                "s.remove_static_background()"
            )
        warnings.warn(
            f"{sum(counts.values())} pattern(s) are not usable Kikuchi patterns ({what}) and "
            "were not classified (phase_id -1; see the map's 'kikuchi_check' property, or "
            f"pass check=False){hint}",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )


def _navigation(signal) -> tuple[tuple[int, ...], tuple[float, ...], str]:
    am = signal.axes_manager
    nav_shape = tuple(am.navigation_shape[::-1])
    step_sizes = tuple(float(a.scale) for a in am.navigation_axes[::-1])
    scan_unit = "px"
    if am.navigation_dimension > 0:
        unit = str(am.navigation_axes[0].units)
        if unit not in ("<undefined>", "", "None"):
            scan_unit = unit
    return nav_shape, step_sizes, scan_unit


def validate_signal(signal):
    """Raise a clear error unless ``signal`` is a 2-D-signal EBSD signal with
    at most two navigation dimensions."""
    from hyperspy.signal import BaseSignal
    from kikuchipy.signals import EBSD

    if isinstance(signal, BaseSignal) and signal.axes_manager.signal_dimension != 2:
        raise ValueError(
            f"Patterns must be 2-D images, but the signal has "
            f"{signal.axes_manager.signal_dimension} signal dimension(s). Create an "
            "EBSD signal from an array of shape (..., rows, cols) with "
            "kikuchipy.signals.EBSD(array)"
        )
    if not isinstance(signal, EBSD):
        raise TypeError(
            f"Expected a kikuchipy EBSD or LazyEBSD signal, not {type(signal).__name__}. "
            "Load patterns with kikuchipy.load(), or wrap an array of shape "
            "(..., rows, cols) with kikuchipy.signals.EBSD(array)"
        )
    am = signal.axes_manager
    if am.navigation_dimension > 2:
        raise ValueError(
            f"The signal has {am.navigation_dimension} navigation dimensions; at most "
            "2 (a map) are supported. Reshape or slice it first"
        )
    if not (
        np.issubdtype(signal.data.dtype, np.integer)
        or np.issubdtype(signal.data.dtype, np.floating)
    ):
        raise TypeError(
            f"Patterns must be integer or floating point, not {signal.data.dtype}"
        )


def validate_pool(pool) -> str:
    """Return ``pool`` of :func:`classify_structure` if it is one of
    :data:`~kikuchipy_cnn.phases.POOL_MODES`, else raise a ValueError naming them."""
    if not isinstance(pool, str) or pool not in POOL_MODES:
        raise ValueError(
            f"pool must be one of {', '.join(repr(m) for m in POOL_MODES)} ('phases': discover "
            f"the phases and give each one class pooled from its patterns; 'none': one class per "
            f"pattern), not {pool!r}"
        )
    return pool


def validate_mask(navigation_mask, nav_shape) -> np.ndarray | None:
    """Return the navigation mask as a boolean array, or raise a clear
    error."""
    if navigation_mask is None:
        return None
    mask = np.asarray(navigation_mask)
    if mask.dtype != bool:
        raise ValueError(
            f"The navigation mask must be a boolean array (True = exclude), not "
            f"{mask.dtype}"
        )
    if mask.shape != tuple(nav_shape):
        raise ValueError(
            f"The navigation mask shape {mask.shape} and the signal's navigation "
            f"shape {tuple(nav_shape)} must be identical"
        )
    if mask.all():
        raise ValueError(
            "The navigation mask excludes every pattern: at least one value must be "
            "False (True means excluded)"
        )
    return mask


def static_background_of(signal, static_background) -> np.ndarray | None:
    """Return the static background to divide the patterns by."""
    sig_shape = tuple(signal.axes_manager.signal_shape[::-1])
    if static_background is None or static_background is False:
        return None
    if isinstance(static_background, str):
        if static_background != "auto":
            raise ValueError(
                f"static_background must be 'auto', None or an array, not "
                f"{static_background!r}"
            )
        bg = getattr(signal, "static_background", None)
        if bg is None:
            return None
        bg = np.asarray(bg)
        if bg.shape != sig_shape or not np.isfinite(bg).all() or bg.mean() <= 0:
            return None
        return bg
    bg = np.asarray(static_background)
    if bg.shape != sig_shape:
        raise ValueError(
            f"Static background shape {bg.shape} does not match the pattern shape "
            f"{sig_shape}"
        )
    return bg


def _prepare(signal, model, navigation_mask, batch_size, providers, static_background,
             show_progressbar):
    """Validation and set-up shared by classification and saliency."""
    validate_signal(signal)
    nav_shape, step_sizes, scan_unit = _navigation(signal)
    mask = validate_mask(navigation_mask, nav_shape)
    card = resolve_model(model)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size}")
    bg = static_background_of(signal, static_background)
    if show_progressbar is None:
        from hyperspy.defaults_parser import preferences

        show_progressbar = preferences.General.show_progressbar
    session = get_session(card, providers)  # fail early, before any chunk runs
    if batch_size is None:
        batch_size = default_batch_size(session.provider)
    return nav_shape, step_sizes, scan_unit, mask, card, bg, show_progressbar, session, batch_size


def map_model(signal, nav_shape, mask, card, session, batch_size, bg, func, out_shape,
              per_pattern=None, **extra):
    """Lazy per-pattern results of ``func`` run chunk by chunk with a model's
    session (see :func:`~kikuchipy_cnn._chunks.map_patterns`)."""
    return map_patterns(
        signal.data,
        nav_shape,
        func,
        out_shape,
        mask,
        batch_size,
        per_pattern=per_pattern,
        card_path=str(card.path),
        providers=tuple(session.providers),
        batch_size=int(batch_size),
        static_background=bg,
        **extra,
    )


def classify_structure(
    signal,
    model: str | ModelCard | None = None,
    navigation_mask: np.ndarray | None = None,
    min_score: float | None = None,
    batch_size: int | None = None,
    providers: list[str] | None = None,
    static_background: np.ndarray | str | None = "auto",
    show_progressbar: bool | None = None,
    verbose: int = 1,
    return_saliency: bool = False,
    phase_list: "PhaseList | None" = None,
    check: bool = True,
    pc: "str | tuple[float, float, float] | np.ndarray | None" = None,
    pool: str = "phases",
) -> CrystalMap | tuple[CrystalMap, "EBSDSaliency"]:
    r"""Classify the crystal structure of every pattern with a CNN.

    Each pattern gets probabilities of the joint classes
    ``"<Bravais lattice> <Laue class>"`` (23 for the bundled models), from
    which crystal system, Bravais lattice and Laue class probabilities are
    summed, so the levels never contradict each other.

    Parameters
    ----------
    signal
        EBSD or LazyEBSD signal with 0, 1 or 2 navigation dimensions. Any
        pattern shape and integer or float dtype, raw or processed. Not
        modified.
    model
        Name of a registered model (see :func:`~kikuchipy_cnn.list_models`),
        the path of a model card file (``card.yaml``) or a model card. If not
        given, the default model.
    navigation_mask
        Boolean array of the navigation shape (numpy order); True means the
        pattern is *excluded* (not classified).
    min_score
        Patterns whose top class probability is below this get
        ``phase_id = -1`` (not classified); with ``pool="phases"`` (default)
        the pooled top probability of the pattern's discovered phase, so
        all patterns of a phase below it get -1. If not given, the model
        card's recommended value. Pass 0 to assign every pattern a class.
    batch_size
        Patterns per inference batch. If not given, 4096 on a GPU and 256
        on the CPU; halved automatically if the device runs out of memory.
    providers
        ONNX Runtime execution providers. If not given, CUDA when it is
        usable, otherwise the CPU.
    static_background
        ``"auto"`` (default) divides raw patterns by the static background
        stored with the signal, if any; None uses none; or an array of the
        pattern shape.
    show_progressbar
        Whether to show a progress bar. If not given, one is shown if
        ``verbose`` is 1 and hyperspy's preference
        ``hs.preferences.General.show_progressbar`` (which kikuchipy
        follows) is True, so that ``verbose=0`` prints nothing.
    verbose
        Print information (model, provider, speed) if 1 (default); nothing
        if 0.
    return_saliency
        Whether to also return class-activation heatmaps of the predicted
        classes (see :func:`~kikuchipy_cnn.get_saliency`).
    phase_list
        Candidate phases, if known (e.g. from CIF files with
        :meth:`orix.crystal_map.Phase.from_cif`). Each is mapped to its
        joint class through its space group; scores are then over the
        candidates' classes (renormalised) and the map uses these phases
        and ids, ready for kikuchipy's indexing. Candidates of the same
        class cannot be told apart: a warning names them.
    check
        Whether to check, independently of the model, that each pattern is
        a usable Kikuchi pattern before classifying it (default True; see
        :func:`~kikuchipy_cnn.pattern_check.check_patterns`). Patterns that
        are too small (shorter side < 32 px), blank, saturated, or not
        Kikuchi patterns (noise, photographs, other images; a learned
        check) get ``phase_id = -1`` whatever the model says; the map's
        ``"kikuchi_check"`` property gives the reason (0 passed, 1 too
        small, 2 blank, 3 saturated, 4 not a Kikuchi pattern) and
        ``"kikuchi_probability"`` the learned check's probability.
    pc
        Pattern centre for band models (cards with ``input.kind: bands``,
        e.g. ``"kcnn-bands-mlp"``), Bruker convention. None (default): the
        signal's ``s.detector.pc``. ``(PCx, PCy, PCz)``, or one per pattern
        (navigation shape + ``(3,)``, e.g. ``PCEstimate.pc_per_pattern``):
        used instead of the detector's; the signal is not changed.
        ``"estimate"``: estimated from the patterns first with
        :func:`~kikuchipy_cnn.estimate_pc` (default settings, started at the
        detector's PC, which should be within ~0.05 of the truth; the mask is
        not applied to it), printed with its uncertainty when ``verbose``,
        and kept on the map (see Returns); a ValueError when the patterns do
        not constrain it. For other settings call ``estimate_pc()`` and pass
        its ``pc_per_pattern`` here. ``"check"``: the detector's PC, after
        :func:`~kikuchipy_cnn.pc_estimation.check_detector` warns if it is
        kikuchipy's default or disagrees with the bands (this runs the
        estimate too). Pixel models do not use a PC: any value other than
        None is ignored with a warning.
    pool
        ``"phases"`` (default): discover the phases of the scan without prior
        knowledge and give each one class, pooled from all its patterns
        (see :mod:`kikuchipy_cnn.phases` and ``docs/phases.md``). Grains
        are found from the similarity of neighbouring patterns (sketches of
        the preprocessed patterns computed in the same pass: the data are
        read once), grains are grouped into phases by the signatures the
        card names (``pooling: {signatures: [...]}``, else
        :data:`~kikuchipy_cnn.phases.DEFAULT_SIGNATURES`): their mean class
        log-probabilities, radial power spectra and, for band models, the
        histograms of their bands' d-spacings read off the band widths with
        the beam energy (:func:`~kikuchipy_cnn.phases.discover_phases`),
        and each phase's patterns are pooled with
        :func:`~kikuchipy_cnn.phases.pool_probabilities` (tempering from the
        card's ``pooling: {tempering: β}``, else
        :data:`~kikuchipy_cnn.phases.POOL_TEMPERING`; the bar for splitting
        phases from its ``pooling: {split_r2: [a, b]}``, else
        :data:`~kikuchipy_cnn.phases.SPLIT_R2`; both were fitted for
        ``kcnn-resnet-s`` 0.2.0, and a UserWarning says so unless the card's
        ``pooling:`` has ``split_r2`` and either ``tempering`` or a pooled
        model: :attr:`~kikuchipy_cnn.card.ModelCard.pooling_fitted`). A band model whose card has a pooled model
        (``pooling: {model: ...}``) pools the *evidence* instead: the band
        features of each phase's patterns, averaged per grain and summarised
        over its grains (:func:`~kikuchipy_cnn.phases.pool_evidence`), are
        classified by that model. ``min_score`` then
        applies to the *pooled* top probability: all patterns of a phase
        below it get ``phase_id = -1`` and, like patterns below ``min_score``
        with ``"none"``, are reported (labels, scores) with their own most
        probable class. Masked, rejected and unusable
        patterns are never pooled. With one classified pattern the result is
        that of ``"none"``. ``"none"``: one class per pattern.

    Returns
    -------
    xmap
        Phase map with one phase per class (named e.g. ``"cF m-3m"``, with
        the Laue class as point group), identity rotations (no orientation
        is determined), and properties ``"scores"`` (top probability),
        ``"margin"`` (top minus second probability),
        ``"crystal_system_score"``, ``"bravais_lattice_score"``,
        ``"laue_class_score"`` and each class's probability (see
        :func:`~kikuchipy_cnn.probabilities`), and ``"kikuchi_check"``,
        ``"kikuchi_probability"`` (see ``check``; NaN where masked or the
        check is off). Masked, rejected by the check and unusable (NaN,
        infinite or constant) patterns have ``phase_id = -1`` and NaN
        properties.
        With ``pc="estimate"`` the map also has properties ``"pcx"``,
        ``"pcy"``, ``"pcz"`` (the estimated PC of each pattern, saved with the
        map) and the attribute ``xmap.pc_estimate`` (the
        :class:`~kikuchipy_cnn.PCEstimate` with the uncertainty and
        diagnostics; on this object only: orix's CrystalMap has no metadata
        that is saved or kept by slicing); with ``pc="check"``,
        ``xmap.pc_estimate`` is the check's estimate.
        With ``pool="phases"`` the map has one phase per discovered phase
        instead of one per class: ids 0, 1, ... (phase 0 has the most
        patterns), named by its pooled class (``"cF m-3m"``; numbered,
        ``"cF m-3m (1)"``, ``"cF m-3m (2)"``, when two phases share a class),
        each in its own colour; with ``phase_list``, the candidate phase of
        each discovered phase's pooled class (candidates' ids and names).
        The per-pattern properties above are kept, but ``"scores"``,
        ``"margin"`` and the level scores are those of the class the pattern
        is assigned (its phase's pooled class), so no level's score is below
        the joint score; ``"pattern_score"`` is the pattern's own top
        probability (``"scores"`` of ``pool="none"``). Plus ``"phase_index"`` (the
        discovered phase of every pattern, also where it is below
        ``min_score``), ``"grain_index"`` (its grain) and ``"pooled_score"``
        (its phase's pooled top probability), -1 / NaN where not classified.
        ``xmap.pooled_phases`` (a :class:`~kikuchipy_cnn.phases.PooledPhases`,
        on this object only, like ``pc_estimate``) holds each discovered
        phase's name, map id, pooled probabilities over ``classes``, pooled
        score, numbers of patterns and grains, and the tempering.

        Band models add each pattern's reduced cell, rebuilt from its band
        directions (``"cell_b_over_a"``, ``"cell_c_over_a"``,
        ``"cell_alpha"``, ``"cell_beta"``, ``"cell_gamma"``: the Niggli cell,
        a <= b <= c, degrees; NaN where none was found) and sized from its
        band widths and the beam energy (``"cell_a"`` in Å, NaN where fewer
        than three indexed bands have a width;
        :func:`~kikuchipy_cnn.lattice.length_scale`), and with
        ``pool="phases"`` each phase's consensus cell shape, the share of its
        grains that agree and its size (``xmap.pooled_phases.cells``,
        ``cell_support``, ``cell_size``;
        :func:`~kikuchipy_cnn.phases.phase_cells`), and the conventional cell
        of its pooled class where the cell's metric reaches that lattice
        (``conventional_cells``; without ``phase_list`` also the phase's
        ``structure.lattice``, Å). Where the shape is right, a third to two
        fifths of the lengths of held-out simulated phases are within 10 %.
    saliency
        Heatmaps, returned if ``return_saliency=True``.

    See Also
    --------
    kikuchipy_cnn.labels, kikuchipy_cnn.list_models

    Examples
    --------
    >>> import kikuchipy as kp
    >>> import kikuchipy_cnn
    >>> s = kp.data.nickel_ebsd_small()
    >>> xmap = s.classify_structure(verbose=0, show_progressbar=False)
    >>> xmap.phases_in_data.names
    ['cF m-3m']
    """
    validate_pool(pool)
    if min_score is not None and not 0 <= float(min_score) <= 1:
        raise ValueError(f"min_score must be in [0, 1], not {min_score}")
    if show_progressbar is None and not verbose:
        show_progressbar = False
    nav_shape, step_sizes, scan_unit, mask, card, bg, show_progressbar, session, batch_size = _prepare(
        signal, model, navigation_mask, batch_size, providers, static_background,
        show_progressbar,
    )
    if min_score is None:
        min_score = card.min_score
    if return_saliency and not card.saliency_methods:
        raise ValueError(
            f"Model {card.name!r} gives no saliency maps (its card lists no saliency method); "
            "call classify_structure() without return_saliency, or use a pixel model such as "
            "'kcnn-resnet-s' for saliency"
        )
    if phase_list is not None:
        from kikuchipy_cnn.crystal_map import candidate_columns

        candidate_columns(phase_list, card.classes)  # validate before the work
    pc = validate_pc(pc, nav_shape)
    if pc is not None and card.input_kind != "bands":
        warnings.warn(
            f"pc is ignored: model {card.name!r} classifies the pixels and does not use the "
            "pattern centre (only band models, e.g. 'kcnn-bands-mlp', do); leave pc=None",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        pc = None
    n = int(np.prod(nav_shape)) if nav_shape else 1
    n_used = n - (int(mask.sum()) if mask is not None else 0)
    if verbose:
        print(
            "Structure classification information:\n"
            f"  Model: {card.name} {card.version}\n"
            f"  Execution provider: {session.provider}"
        )
    geometry, estimate = {}, None
    if card.input_kind == "bands":
        pc, estimate = _pc_for_band_model(signal, pc, bg, verbose)
        pcs, wavelength = detector_geometry(signal, nav_shape, pc)
        geometry = {"per_pattern": pcs, "wavelength": wavelength}
    if verbose:  # after the PC: a refused estimate classifies nothing
        print(f"Classifying {n_used} pattern(s)")
    t0 = time.perf_counter()
    pooling = pool == "phases"
    evidence = pooling and card.pooled_model is not None
    if evidence:
        card.verify_pooled_model()  # before the work, not after it
    n_features = card.input_shape[1] if evidence else 0
    n_cell = CELL_COLUMNS if card.input_kind == "bands" else 0  # each pattern's rebuilt lattice
    n_sketch = sketch_columns(card) if pooling else 0
    lazy_out = map_model(
        signal, nav_shape, mask, card, session, batch_size, bg, _checked_classify_chunk,
        (len(card.classes) + 3 + n_sketch + n_cell + n_features,),
        check=bool(check), sketch=pooling, **geometry, **({"features": True} if evidence else {}),
        **({"cells": True} if n_cell else {}),
    )
    out = compute(lazy_out, show_progressbar)
    dt = time.perf_counter() - t0
    n_classes = len(card.classes)
    check_out = out[:, -2:]  # pattern check: code, probability
    probs, unusable = out[:, :n_classes], out[:, n_classes] == 1
    n_bad = int(unusable.sum())
    if n_bad:
        warnings.warn(
            f"{n_bad} pattern(s) are not finite or are constant and were not "
            "classified (phase_id -1)",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
    classified = np.isfinite(probs).all(axis=1)
    cells = cell_scales = None
    if n_cell:
        first = n_classes + 1 + n_sketch
        cells = np.asarray(out[:, first : first + _CELL_VALUES], dtype=np.float64).reshape(-1, 3, 3)
        cell_scales = np.asarray(out[:, first + _CELL_VALUES], dtype=np.float64)
        cells[~classified] = np.nan
        cell_scales[~classified] = np.nan
    if verbose:
        print(f"  Classification speed: {n_used / max(dt, 1e-9):.1f} patterns/s")
    if pooling and classified.sum() >= 2:
        from kikuchipy_cnn.crystal_map import build_pooled_crystal_map
        from kikuchipy_cnn.phases import discover_phases

        if not card.pooling_fitted:
            from kikuchipy_cnn.phases import POOL_TEMPERING, SPLIT_R2

            default = {"tempering": f"tempering {POOL_TEMPERING}", "split_r2": f"split bar {SPLIT_R2}"}
            defaults = [default[k] for k in card.unfitted_pooling]
            warnings.warn(
                f"Model {card.name!r} has no pooling settings fitted for it in its card: "
                f"pool='phases' uses the defaults fitted for 'kcnn-resnet-s' ({', '.join(defaults)}), "
                "which may split or merge this model's phases wrongly; pass pool='none' or add "
                "pooling: to the card",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        first = n_classes + 1
        spectra, d_spacings, sketches = unpack_sketches(out[:, first : first + sketch_columns(card)], card)
        discovery = discover_phases(probs, sketches, nav_shape, classified, spectra=spectra,
                                    d_spacings=d_spacings, signatures=card.pool_signatures,
                                    split_r2=card.pool_split_r2)
        pooled = None
        if evidence:
            from kikuchipy_cnn.phases import pool_evidence

            feats = out[:, out.shape[1] - 2 - n_features : out.shape[1] - 2]
            pooled = pool_evidence(feats, np.where(classified, discovery.phase, -1), discovery.grain,
                                   card.pooled_model, card.pooled_sha256)
        xmap = build_pooled_crystal_map(
            probs, classified, discovery, card, nav_shape, step_sizes, scan_unit,
            float(min_score), mask, phase_list, tempering=card.pool_tempering, evidence=pooled,
            cells=cells, cell_scales=cell_scales,
        )
        if verbose:
            print(f"  Phases found: {discovery.n_phases} (from {discovery.n_grains} grain(s), "
                  f"told apart by {', '.join(card.pool_signatures)})\n"
                  + "\n".join("    " + line for line in repr(xmap.pooled_phases).splitlines()))
    else:
        xmap = build_crystal_map(
            probs, classified, card, nav_shape, step_sizes, scan_unit, float(min_score), mask,
            phase_list,
        )
    if cells is not None:
        from kikuchipy_cnn.crystal_map import add_cell_props

        add_cell_props(xmap, cells, cell_scales)
    xmap.prop["kikuchi_check"] = check_out[xmap.is_in_data, 0]
    xmap.prop["kikuchi_probability"] = check_out[xmap.is_in_data, 1]
    if check:
        _warn_rejected(check_out[:, 0], has_background=bg is not None)
    if estimate is not None:
        if isinstance(pc, np.ndarray):  # "estimate": the PC used
            for j, name in enumerate(("pcx", "pcy", "pcz")):
                xmap.prop[name] = pc[xmap.is_in_data, j]
        xmap.pc_estimate = estimate
    if return_saliency:
        from kikuchipy_cnn.saliency import get_saliency

        with warnings.catch_warnings():  # already said above, once is enough
            warnings.filterwarnings("ignore", message="The signal's metadata give no beam energy")
            saliency = get_saliency(
                signal, model=card, navigation_mask=navigation_mask, batch_size=batch_size,
                providers=providers, static_background=static_background,
                show_progressbar=show_progressbar,
                pc=np.asarray(geometry["per_pattern"]).reshape(-1, 3) if geometry else None,  # the PC used
            )
        return xmap, saliency
    return xmap
