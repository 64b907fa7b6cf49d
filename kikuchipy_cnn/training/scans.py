"""Synthetic EBSD scans of simulated structures: grains on a grid, each one
structure at one random orientation, rendered with the data engine's
projection and degradation (as training patterns are). Used to calibrate
phase discovery and pooling (:mod:`kikuchipy_cnn.training.pooling_fit`) and
to benchmark them (``benchmarks/phase_discovery.py``)."""

from __future__ import annotations

import numpy as np

__all__ = ["discovery_inputs", "grain_layout", "render_scan", "scan_signal"]


def grain_layout(rows: int, cols: int, n_grains: int, rng) -> np.ndarray:
    """Voronoi grains on a ``rows`` x ``cols`` grid: grain index per point."""
    seeds = np.column_stack([rng.uniform(0, rows, n_grains), rng.uniform(0, cols, n_grains)])
    r, c = np.mgrid[:rows, :cols]
    d = (r.ravel()[:, None] + 0.5 - seeds[:, 0]) ** 2 + (c.ravel()[:, None] + 0.5 - seeds[:, 1]) ** 2
    _, grain = np.unique(d.argmin(axis=1), return_inverse=True)  # drop empty grains
    return grain.reshape(rows, cols)


def render_scan(masters, grain_master: np.ndarray, grain: np.ndarray, rng):
    """Raw patterns ``(rows, cols, r, c)`` of a scan and its detector geometry
    (``DetectorGeometry``): grain ``g`` shows master
    ``grain_master[g]`` at one random orientation; one detector and one set of
    degradation parameters for the scan (kikuchipy_cnn.training's projection
    and realism, as the data engine renders training patterns); every
    pattern gets its own noise."""
    from kikuchipy_cnn.training.projection import (
        detector_directions,
        project_many,
        random_geometry,
        random_quaternions,
    )
    from kikuchipy_cnn.training.realism import degrade, random_realism

    rows, cols = grain.shape
    g = grain.ravel()
    quats = random_quaternions(int(g.max()) + 1, rng)[g]
    midx = np.asarray(grain_master)[g]
    geom = random_geometry(rng)
    shape = geom.render_shape
    dc = detector_directions(geom, shape)
    clean = np.empty((g.size, *shape), dtype=np.float32)
    for stack, pos in masters.stacks().values():
        sel = np.flatnonzero(pos[midx] >= 0)
        if sel.size:
            clean[sel] = project_many(stack, pos[midx[sel]], quats[sel], dc, shape)
    params = random_realism(rng)
    raw = degrade(clean, [params] * g.size, rng, binning=geom.binning)
    return raw.reshape(rows, cols, *shape), geom


def scan_signal(raw, geom, masters, master_ids):
    """An EBSD signal of a rendered scan carrying its true geometry (the
    detector, Bruker PC) and beam energy (band models need both; pixel
    models ignore them). The masters were simulated at 10-30 kV each: the
    energy is the first master's, so in multi-phase scans the other phases'
    band widths do not match it (their directions do)."""
    import kikuchipy as kp
    from kikuchipy.detectors import EBSDDetector

    s = kp.signals.EBSD(raw)
    s.detector = EBSDDetector(shape=raw.shape[2:], pc=(geom.pcx, geom.pcy, geom.pcz), convention="bruker",
                              sample_tilt=geom.sample_tilt, tilt=geom.tilt)
    energy = float(masters.meta[int(master_ids[0])]["energy_kev"])
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", energy)
    return s


def discovery_inputs(signal, card) -> dict:
    """The per-pattern inputs of phase discovery that
    ``classify_structure(pool="phases")`` computes for ``signal`` (a rendered
    scan of :func:`scan_signal`: true detector, beam energy, no static
    background unless the signal has one), in numpy order of the navigation:

    - ``valid``: ``(n,)`` patterns usable for the sketches;
    - ``spectra``: ``(n, SPECTRUM_BINS)`` :func:`~kikuchipy_cnn.phases.pattern_spectra`
      (0 where not valid);
    - ``sketches``: :func:`~kikuchipy_cnn.phases.pattern_sketches`;
    - ``d_spacings``: ``(n, DSPACING_BINS)``
      :func:`~kikuchipy_cnn.phases.d_spacing_histogram` of the bands with the
      signal's PC and energy (band models; NaN rows where none, and for pixel
      models).
    """
    from kikuchipy_cnn.classify import (
        _band_input,
        detector_geometry,
        sketch_preprocessing,
        static_background_of,
    )
    from kikuchipy_cnn.phases import DSPACING_BINS, pattern_sketches, pattern_spectra
    from kikuchipy_cnn.preprocessing import preprocess

    nav_shape = tuple(signal.axes_manager.navigation_shape[::-1])
    raw = np.asarray(signal.data).reshape(-1, *signal.axes_manager.signal_shape[::-1])
    bg = static_background_of(signal, "auto")
    x, valid = preprocess(raw, sketch_preprocessing(card), bg)
    d_spacings = np.full((len(raw), DSPACING_BINS), np.nan)
    if card.input_kind == "bands":
        pcs, wavelength = detector_geometry(signal, nav_shape)
        d_spacings = _band_input(raw, pcs.reshape(-1, 3), wavelength, card, bg)[3]
    return {"valid": valid, "spectra": pattern_spectra(x, valid), "sketches": pattern_sketches(x, valid),
            "d_spacings": d_spacings}
