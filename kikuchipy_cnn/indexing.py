"""Orientation indexing of a classified phase map, one phase per region.

:func:`index_phases` takes the crystal map from
:func:`~kikuchipy_cnn.classify_structure` (run with candidate phases) and
indexes the patterns of each classified phase with that phase only, by
Hough indexing (PyEBSDIndex) or dictionary indexing (kikuchipy), then merges
the results into one orientation and phase map.
"""

from __future__ import annotations

import contextlib
import io
from math import gcd

import numpy as np
from orix.crystal_map import CrystalMap, Phase, PhaseList, create_coordinate_arrays
from orix.quaternion import Rotation

from kikuchipy_cnn.classify import _navigation, validate_signal

__all__ = ["index_phases"]

METHODS = ("hough", "dictionary")

#: Properties of the merged map per method, as (name, dtype)
PROPS = {
    "hough": (("fit", np.float32), ("cm", np.float32), ("pq", np.float32), ("nmatch", np.int32)),
    "dictionary": (("scores", np.float32),),
}

#: Reflector families derived from a phase's structure for Hough indexing
N_FAMILIES = 4
#: Weakest family kept, as a fraction of the strongest |F|^2
MIN_INTENSITY = 0.01


def index_phases(
    signal,
    xmap: CrystalMap,
    detector,
    method: str = "hough",
    master_patterns: dict | None = None,
    reflectors: dict | None = None,
    resolution: float = 3.0,
    energy: float | None = None,
    indexer_kwargs: dict | None = None,
    show_progressbar: bool | None = None,
) -> CrystalMap:
    """Index each classified region of a phase map with that region's phase.

    The patterns classified as one phase are indexed with that phase alone,
    so Hough indexing never has to choose between phases with similar band
    angles (e.g. FCC and BCC), and dictionaries are matched only against
    the patterns they belong to.

    Parameters
    ----------
    signal
        EBSD signal that was classified, with at most two navigation
        dimensions.
    xmap
        Crystal map returned by ``signal.classify_structure(phase_list=...)``:
        its phases (with ids) are the candidate phases, and phase id -1
        marks patterns that were not classified.
    detector
        :class:`~kikuchipy.detectors.EBSDDetector` with the pattern shape,
        sample tilt and one projection center (PC), or one PC per pattern.
    method
        ``"hough"`` (default) for Hough indexing with PyEBSDIndex, or
        ``"dictionary"`` for dictionary indexing with simulated patterns
        from ``master_patterns``.
    master_patterns
        Dictionary indexing only: mapping of phase name to a
        :class:`~kikuchipy.signals.EBSDMasterPattern` in the Lambert
        projection, one for every classified phase.
    reflectors
        Hough indexing only: mapping of phase name to the reflector
        families {hkl} to index that phase with (a list of hkl or a
        :class:`~diffsims.crystallography.ReciprocalLatticeVector`). Phases
        not in the mapping get the strongest families of their structure
        (see Notes).
    resolution
        Dictionary indexing only: average misorientation in degrees
        between the orientations of the dictionary, sampled in each
        phase's fundamental zone. Default is 3.
    energy
        Dictionary indexing only: beam energy in kV of the master patterns
        to use. Default is the highest energy of each master pattern.
    indexer_kwargs
        Hough indexing only: keyword arguments passed to
        :meth:`~kikuchipy.detectors.EBSDDetector.get_indexer`, e.g.
        ``{"nBands": 10, "tSigma": 2, "rSigma": 2}``.
    show_progressbar
        Whether to print indexing information and show progress bars. If
        not given, HyperSpy's preference is used.

    Returns
    -------
    xmap
        Crystal map over the signal's navigation shape with the phases and
        ids of the input map, the orientations found, and the properties of
        the indexing method: ``"fit"``, ``"cm"``, ``"pq"`` and ``"nmatch"``
        (Hough) or ``"scores"`` (dictionary). Patterns that were not
        classified, or that Hough indexing could not index, have phase id
        -1 and zero properties.

    Raises
    ------
    ValueError
        If the map and the signal, or the detector and the patterns, differ
        in shape, if no pattern is classified, or if a phase lacks what its
        method needs.
    ImportError
        If Hough indexing is asked for and PyEBSDIndex is not installed.

    Notes
    -----
    Without ``reflectors`` for a phase, Hough indexing uses its
    :data:`N_FAMILIES` strongest families {hkl} by kinematical structure
    factor, one per direction (e.g. {111}, {200}, {220}, {311} for Ni
    Fm-3m; {110}, {200}, {211}, {310} for alpha-Fe Im-3m). This needs the
    atoms of the phase: read it with :meth:`~orix.crystal_map.Phase.from_cif`
    or give ``reflectors``. PyEBSDIndex's default families are FCC ones for
    every phase, which makes FCC and BCC phases indistinguishable.

    Hough indexing reads the patterns of one phase at a time into memory.

    Examples
    --------
    >>> xmap = s.classify_structure(phase_list=PhaseList([ni, fe]))  # doctest: +SKIP
    >>> xmap2 = index_phases(s, xmap, detector)  # doctest: +SKIP
    """
    method = _check_method(method)
    nav_shape, step_sizes, scan_unit = _validate(signal, xmap, detector)
    phase_ids = _full_phase_ids(xmap)
    groups = _phase_groups(xmap, phase_ids)
    verbose = _verbosity(show_progressbar)
    if method == "hough":
        results = _index_hough(signal, detector, groups, reflectors, indexer_kwargs, verbose)
    else:
        results = _index_dictionary(
            signal, detector, groups, master_patterns, resolution, energy, verbose
        )
    return _merge(results, xmap, method, nav_shape, step_sizes, scan_unit)


# ----------------------------------------------------------------------------
# Validation


def _check_method(method) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    return m


def _validate(signal, xmap, detector) -> tuple[tuple, tuple, str]:
    """Check that the signal, map and detector fit together; return the
    signal's navigation shape, step sizes and scan unit."""
    validate_signal(signal)
    if not isinstance(xmap, CrystalMap):
        raise TypeError(
            f"xmap must be an orix CrystalMap from classify_structure(), not "
            f"{type(xmap).__name__}"
        )
    nav_shape, step_sizes, scan_unit = _navigation(signal)
    n = int(np.prod(nav_shape))
    map_shape = tuple(int(d) for d in xmap.shape)
    if xmap.is_in_data.size != n or _squeeze(map_shape) != _squeeze(nav_shape):
        raise ValueError(
            f"The crystal map shape {map_shape} must match the signal's navigation "
            f"shape {tuple(nav_shape)}: pass the map classify_structure() returned "
            "for this signal"
        )
    sig_shape = tuple(signal.axes_manager.signal_shape[::-1])
    det_shape = tuple(int(d) for d in detector.shape)
    if det_shape != sig_shape:
        raise ValueError(
            f"The detector shape {det_shape} must match the pattern shape "
            f"{sig_shape}: create it with EBSDDetector(shape={sig_shape}, ...)"
        )
    if detector.navigation_size not in (1, n):
        raise ValueError(
            f"The detector has {detector.navigation_size} projection centers; give "
            f"one, or one per pattern ({n})"
        )
    return nav_shape, step_sizes, scan_unit


def _squeeze(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


def _full_phase_ids(xmap) -> np.ndarray:
    """Phase id of every map point, -1 where the point is not in the data."""
    ids = np.full(xmap.is_in_data.size, -1, dtype=int)
    ids[xmap.is_in_data] = xmap.phase_id
    return ids


def _phase_groups(xmap, phase_ids) -> list[tuple[int, Phase, np.ndarray]]:
    """Return (phase id, phase, flat indices of its points) for each phase
    with classified points, or raise if there is none."""
    groups = []
    for pid, phase in xmap.phases:
        if pid == -1:
            continue
        idx = np.flatnonzero(phase_ids == pid)
        if idx.size:
            groups.append((int(pid), phase, idx))
    if not groups:
        raise ValueError(
            "No pattern of the crystal map is classified as one of its phases (all "
            "are phase id -1): nothing to index. Check the candidate phases, or "
            "lower min_score in classify_structure()"
        )
    return groups


def _verbosity(show_progressbar) -> bool:
    if show_progressbar is None:
        from hyperspy.defaults_parser import preferences

        show_progressbar = preferences.General.show_progressbar
    return bool(show_progressbar)


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Silence kikuchipy's and PyEBSDIndex's printing and progress bars
    unless verbose."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ----------------------------------------------------------------------------
# Hough indexing


def _require_pyebsdindex():
    try:
        import pyebsdindex  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "Hough indexing needs PyEBSDIndex, an optional dependency: "
            "pip install pyebsdindex (or use method='dictionary')"
        ) from e


def _index_hough(signal, detector, groups, reflectors, indexer_kwargs, verbose) -> list:
    _require_pyebsdindex()
    reflectors = dict(reflectors or {})
    families = {phase.name: _phase_reflectors(phase, reflectors) for _, phase, _ in groups}
    results = []
    for pid, phase, idx in groups:
        results.append(
            _hough_one_phase(
                signal, detector, phase, idx, families[phase.name], indexer_kwargs, verbose
            )
        )
        results[-1]["phase_id"] = pid
    return results


def _phase_reflectors(phase, reflectors) -> np.ndarray:
    """Reflector families {hkl} of one phase: the user's, or derived from
    its structure."""
    if phase.space_group is None:
        raise ValueError(
            f"Phase {phase.name!r} has no space group, which Hough indexing needs; "
            "set it, e.g. Phase(name=..., space_group=225), or read the phase with "
            "Phase.from_cif()"
        )
    if phase.name in reflectors:
        ref = reflectors[phase.name]
        hkl = np.asarray(getattr(ref, "hkl", ref), dtype=float).reshape(-1, 3)
        if hkl.shape[0] == 0:
            raise ValueError(f"The reflectors of phase {phase.name!r} are empty")
        return hkl
    return _strongest_reflectors(phase)


def _strongest_reflectors(
    phase: Phase, n: int = N_FAMILIES, min_intensity: float = MIN_INTENSITY
) -> np.ndarray:
    """Return the strongest reflector families {hkl} of a phase.

    Families are ranked by kinematical structure factor :math:`|F_{hkl}|^2`;
    a family parallel to a stronger one (a higher order, e.g. {222} after
    {111}) is skipped, and so are families weaker than ``min_intensity``
    times the strongest.

    Parameters
    ----------
    phase
        Phase with space group and atoms.
    n
        Most families to return.
    min_intensity
        Weakest family kept, as a fraction of the strongest intensity.

    Returns
    -------
    hkl
        Array ``(<= n, 3)`` of families, strongest first.
    """
    from diffsims.crystallography import ReciprocalLatticeVector

    if phase.structure is None or len(phase.structure) == 0:
        raise ValueError(
            f"Phase {phase.name!r} has no atoms, so its reflectors cannot be derived "
            "from structure factors: give them with reflectors={"
            f"{phase.name!r}: [[h, k, l], ...]}}, or load the phase with "
            "Phase.from_cif()"
        )
    ph = _phase_in_angstrom(phase)
    abc = np.asarray(ph.structure.lattice.abcABG()[:3], dtype=float)
    rlv = ReciprocalLatticeVector.from_min_dspacing(ph, min_dspacing=abc.min() / 4)
    rlv = rlv.unique(use_symmetry=True)
    rlv.sanitise_phase()
    rlv.calculate_structure_factor()
    intensity = np.abs(np.asarray(rlv.structure_factor)) ** 2
    hkl = np.round(np.asarray(rlv.hkl, dtype=float)).astype(int)
    d = np.asarray(rlv.dspacing, dtype=float)
    order = np.lexsort((-d, -np.round(intensity / intensity.max(), 6)))
    kept, directions = [], set()
    for i in order:
        if intensity[i] < min_intensity * intensity.max() or len(kept) == n:
            break
        direction = _direction(hkl[i])
        if direction in directions:
            continue
        directions.add(direction)
        kept.append(hkl[i])
    return np.array(kept, dtype=float)


def _phase_in_angstrom(phase) -> Phase:
    """Copy of the phase with lattice parameters in Å, as the atomic
    scattering factors need: master pattern files (EMsoft) give them in nm,
    recognised by all three being below 1."""
    ph = phase.deepcopy()
    lat = ph.structure.lattice
    a, b, c, al, be, ga = lat.abcABG()
    if max(a, b, c) < 1:
        lat.setLatPar(a * 10, b * 10, c * 10, al, be, ga)
    return ph


def _direction(hkl) -> tuple[int, ...]:
    g = 0
    for v in hkl:
        g = gcd(g, int(abs(v)))
    return tuple(int(v) // max(g, 1) for v in hkl)


def _hough_one_phase(signal, detector, phase, idx, hkl, indexer_kwargs, verbose) -> dict:
    """Hough index the patterns ``idx`` (flat navigation indices) with one
    phase; return their rotations, success and properties."""
    from kikuchipy.signals import EBSD

    sig_shape = tuple(signal.axes_manager.signal_shape[::-1])
    patterns = signal.data.reshape((-1,) + sig_shape)[idx]
    patterns = np.asarray(patterns.compute() if hasattr(patterns, "compute") else patterns)
    sub = EBSD(patterns)
    det = _detector_subset(detector, idx)
    phase_list = PhaseList(phases=phase.deepcopy())
    indexer = det.get_indexer(phase_list, reflectors=[hkl], **dict(indexer_kwargs or {}))
    with _quiet(verbose):
        xmap = sub.hough_indexing(phase_list, indexer, verbose=int(verbose))
    return {
        "idx": idx,
        "indexed": np.asarray(xmap.phase_id) >= 0,
        "rotations": xmap.rotations.data,
        "prop": {name: np.asarray(xmap.prop[name]) for name, _ in PROPS["hough"]},
    }


def _detector_subset(detector, idx):
    """Detector with the PCs of the patterns ``idx`` only (or the one PC)."""
    det = detector.deepcopy()
    if detector.navigation_size > 1:
        det.pc = detector.pc_flattened[idx]
    return det


# ----------------------------------------------------------------------------
# Dictionary indexing


def _index_dictionary(
    signal, detector, groups, master_patterns, resolution, energy, verbose
) -> list:
    mps = _master_patterns_of(groups, master_patterns)
    nav_shape = tuple(signal.axes_manager.navigation_shape[::-1])
    det = _single_pc(detector)
    results = []
    for pid, phase, idx in groups:
        dictionary = _dictionary(mps[phase.name], phase, det, resolution, energy, verbose)
        mask = np.ones(int(np.prod(nav_shape)), dtype=bool)
        mask[idx] = False  # True = excluded
        with _quiet(verbose):
            xmap = signal.dictionary_indexing(
                dictionary, keep_n=1, navigation_mask=mask.reshape(nav_shape)
            )
        rot = xmap.rotations.data.reshape(-1, xmap.rotations_per_point, 4)[:, 0]
        scores = np.asarray(xmap.prop["scores"]).reshape(rot.shape[0], -1)[:, 0]
        results.append(
            {
                "phase_id": pid,
                "idx": idx,
                "indexed": np.ones(idx.size, dtype=bool),
                "rotations": rot,
                "prop": {"scores": scores},
            }
        )
    return results


def _master_patterns_of(groups, master_patterns) -> dict:
    if not master_patterns:
        raise ValueError(
            "Dictionary indexing needs master_patterns: a dict of phase name to "
            "kikuchipy EBSDMasterPattern (Lambert projection), one per classified "
            f"phase {[p.name for _, p, _ in groups]}"
        )
    missing = [p.name for _, p, _ in groups if p.name not in master_patterns]
    if missing:
        raise ValueError(
            f"No master pattern for the classified phase(s) {missing}; master_patterns "
            f"has {list(master_patterns)}"
        )
    for name, mp in master_patterns.items():
        if getattr(mp, "projection", "lambert") != "lambert":
            raise ValueError(
                f"The master pattern of {name!r} is in the {mp.projection!r} projection; "
                "dictionaries need the Lambert one: use mp.as_lambert()"
            )
    return master_patterns


def _single_pc(detector):
    """Dictionaries are simulated with one PC: the mean of the detector's."""
    if detector.navigation_size == 1:
        return detector
    det = detector.deepcopy()
    det.pc = detector.pc_average
    return det


def _dictionary(mp, phase, detector, resolution, energy, verbose):
    """Lazy dictionary of ``mp`` at orientations sampling the fundamental
    zone of ``phase`` with ``resolution`` degrees."""
    from orix.sampling import get_sample_fundamental

    rotations = get_sample_fundamental(resolution=resolution, point_group=phase.point_group)
    if energy is None:
        energy = _highest_energy(mp)
    return mp.get_patterns(
        rotations, detector, energy=energy, compute=False, show_progressbar=verbose
    )


def _highest_energy(mp):
    axes = mp.axes_manager
    for ax in axes.navigation_axes:
        if ax.name == "energy":
            return float(ax.axis[-1])
    return None


# ----------------------------------------------------------------------------
# Merging


def _merge(results, xmap, method, nav_shape, step_sizes, scan_unit) -> CrystalMap:
    """One crystal map over the navigation shape from the per-phase results."""
    n = xmap.is_in_data.size
    rot = np.zeros((n, 4))
    rot[:, 0] = 1
    phase_id = np.full(n, -1, dtype=int)
    prop = {name: np.zeros(n, dtype=dtype) for name, dtype in PROPS[method]}
    for r in results:
        idx, ok = r["idx"], r["indexed"]
        phase_id[idx[ok]] = r["phase_id"]
        rot[idx[ok]] = r["rotations"][ok]
        for name, values in r["prop"].items():
            prop[name][idx[ok]] = values[ok]
    if len(nav_shape) == 0:
        coords = {"x": np.zeros(1)}
    else:
        coords, _ = create_coordinate_arrays(nav_shape, step_sizes)
    phases = xmap.phases.deepcopy()
    out = CrystalMap(
        rotations=Rotation(rot),
        phase_id=phase_id,
        phase_list=phases,
        prop=prop,
        scan_unit=scan_unit,
        is_in_data=xmap.is_in_data.copy(),
        **coords,
    )
    # orix drops the phases absent from the data; keep every candidate
    if -1 in phase_id[xmap.is_in_data] and -1 not in phases.ids:
        phases.add_not_indexed()
    out.phases = phases
    return out
