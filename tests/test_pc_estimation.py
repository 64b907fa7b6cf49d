"""Pattern-centre estimation without the phase (kikuchipy_cnn.pc_estimation)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import kikuchipy_cnn
from kikuchipy_cnn import pc_estimation as pe
from kikuchipy_cnn.bands import change_pc, pc_map

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

SHAPE = (120, 120)
TRUTH = np.array([0.48, 0.27, 0.58])


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _fcc_primitive(rng) -> np.ndarray:
    """Primitive fcc cell (rows, a = 3.52 Å) in a random orientation."""
    a = 3.52 / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)
    return a @ _rotation(rng).T


def _seen_with(direct: np.ndarray, pc_true, pc_seen) -> pe._PatternLattice:
    """A perfect lattice and twelve of its bands as they are indexed when
    measured with the wrong PC ``pc_seen``: directions mapped by ``pc_map``
    (truth -> seen), band normals by ``change_pc``."""
    d = direct @ pc_map(SHAPE, pc_true, pc_seen).T
    hkl = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1],
                    [1, -1, 0], [1, 0, -1], [0, 1, -1], [2, 1, 0], [1, 2, 1]])
    g = hkl @ np.linalg.inv(direct).T
    normals = change_pc(g / np.linalg.norm(g, axis=1, keepdims=True), SHAPE, pc_true, pc_seen)
    return pe._PatternLattice(d, pe.symmetry_candidates(direct), np.asarray(pc_seen, float), len(hkl),
                              hkl, normals)


def test_pc_map_moves_normals_as_change_pc():
    rng = np.random.default_rng(0)
    a, b = (0.45, 0.3, 0.6), (0.52, 0.27, 0.66)
    d = rng.normal(size=(2, 3))
    n = np.cross(d[0], d[1])
    A = pc_map(SHAPE, a, b)
    moved = np.cross(A @ d[0], A @ d[1])  # the plane through the moved directions
    got = change_pc(n / np.linalg.norm(n), SHAPE, a, b)
    assert abs(abs(got @ moved) / np.linalg.norm(moved) - 1) < 1e-12


def test_metric_symmetry_and_projection_of_a_cubic_cell():
    direct = _fcc_primitive(np.random.default_rng(1))
    bravais, rot = pe.metric_symmetry(direct, 0.01)
    assert bravais == "cF" and len(rot) == 48
    g = direct @ direct.T
    np.testing.assert_allclose(pe.symmetric_part(g, rot), g, atol=1e-9)
    sheared = direct @ np.array([[1, 0.04, 0], [0, 1, 0], [0, 0, 0.97]]).T
    gs = sheared @ sheared.T
    p = pe.symmetric_part(gs, rot)
    np.testing.assert_allclose(pe.symmetric_part(p, rot), p, atol=1e-9)  # a projection
    assert np.abs(gs - p).max() > 0.01


def test_wrong_pc_keeps_a_lattice_but_breaks_its_symmetry():
    rng = np.random.default_rng(2)
    lat = _seen_with(_fcc_primitive(rng), TRUTH, TRUTH + [0.03, -0.02, 0.02])
    rot = lat.candidates["cF"]
    assert pe._rms(pe.asymmetry(lat, rot, SHAPE, TRUTH)) < 1e-9
    assert pe._rms(pe.asymmetry(lat, rot, SHAPE, lat.pc_ref)) > 0.01


def _perfect_terms(seed: int, n: int, start):
    """Fit terms of ``n`` fcc lattices seen at ``start`` while the truth is TRUTH."""
    rng = np.random.default_rng(seed)
    lats = [_seen_with(_fcc_primitive(rng), TRUTH, start) for _ in range(n)]
    return [(lat, lat.candidates["cF"], pe._PatternPC(np.zeros(3), np.zeros(2)), i)
            for i, lat in enumerate(lats)]


def test_fit_recovers_the_pc_from_perfect_lattices():
    start = TRUTH + [0.03, 0.02, -0.03]
    terms = _perfect_terms(3, 3, start)
    pc, resid, _ = pe._fit_pc(terms, SHAPE, start)
    np.testing.assert_allclose(pc, TRUTH, atol=1e-6)
    assert pe._rms(resid) < 1e-8


def test_band_refinement_recovers_the_pc_from_perfect_bands():
    terms = _perfect_terms(6, 2, TRUTH + [0.03, 0.02, -0.03])
    pc, cov, rms = pe.refine_bands(terms, SHAPE, TRUTH + [0.005, -0.005, 0.005])
    np.testing.assert_allclose(pc, TRUTH, atol=1e-6)
    assert rms < 1e-7 and np.all(np.diag(cov) < 1e-10)


def test_band_refinement_recovers_a_pc_that_moves_with_the_beam():
    rng = np.random.default_rng(7)
    grad = np.array([[0.002, -0.003], [0.001, 0.002], [0.0005, 0.001]])  # per row, column step
    pos = np.array([(r, c) for r in range(2) for c in range(3)], float)
    pos -= pos.mean(0)
    start = TRUTH + [0.01, -0.01, 0.01]
    terms = []
    for i, p in enumerate(pos):
        lat = _seen_with(_fcc_primitive(rng), TRUTH + grad @ p, start)
        terms.append((lat, lat.candidates["cF"], pe._PatternPC(np.zeros(3), p), i))
    x, cov, rms = pe.refine_bands(terms, SHAPE, np.concatenate([TRUTH + 0.003, np.zeros(6)]))
    np.testing.assert_allclose(x[:3], TRUTH, atol=1e-6)
    np.testing.assert_allclose(x[3:].reshape(3, 2), grad, atol=1e-6)
    assert cov.shape == (9, 9) and rms < 1e-7


def test_too_few_constraints_are_refused():
    with pytest.raises(ValueError, match="not determined"):
        pe._check_constraints("aP", 20)
    with pytest.raises(ValueError, match="not determined"):
        pe._check_constraints("mC", 5)
    pe._check_constraints("oP", 1)
    pe._check_constraints("cF", 1)


def test_noise_patterns_are_refused():
    rng = np.random.default_rng(4)
    noise = rng.poisson(100, size=(3, 80, 80)).astype(np.float32)
    with pytest.raises(ValueError, match="not determined|do not constrain"):
        kikuchipy_cnn.estimate_pc(noise, pc0=(0.5, 0.3, 0.6))


def test_array_needs_a_start_and_no_affine_model():
    with pytest.raises(ValueError, match="pc0"):
        kikuchipy_cnn.estimate_pc(np.zeros((60, 60), np.float32))
    with pytest.raises(ValueError, match="navigation positions"):
        kikuchipy_cnn.estimate_pc(np.zeros((60, 60), np.float32), pc0=TRUTH, pc_model="affine")


def test_indexing_option_is_validated():
    with pytest.raises(ValueError, match="indexing must be one of"):
        kikuchipy_cnn.estimate_pc(np.zeros((60, 60), np.float32), pc0=TRUTH, indexing="hough")


def test_kikuchipy_experimental_ni_scan_from_directions_alone():
    # 9 real 60 px patterns: their band widths cannot be measured and mislead
    # the indexing; from directions alone the bands give a cubic F lattice and
    # a PC within 0.012 of the file's calibrated one, from 0.03 off
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    ref = s.detector.pc.reshape(-1, 3).mean(0)
    e = kikuchipy_cnn.estimate_pc(s, pc0=ref + np.array([0.03, -0.03, 0.03]), indexing="directions")
    assert e.lattice == "cF" and e.indexing == "directions"
    assert np.abs(e.pc - ref).max() <= 0.012, (e.pc, ref)
    assert np.all(e.uncertainty < 0.01)


@pytest.fixture(scope="module")
def ni_scan():
    """Six dynamical Ni patterns, 120 px, seen with TRUTH."""
    from pc_estimation import dynamical_ni

    return dynamical_ni(6, SHAPE[0], TRUTH, np.random.default_rng(5))


def test_recovers_a_known_offset_on_dynamical_ni(ni_scan):
    start = TRUTH + np.array([0.02, -0.015, 0.015])  # 0.029 off
    e = kikuchipy_cnn.estimate_pc(ni_scan, pc0=start, beam_energy=20.0)
    assert e.lattice == "cF"
    assert np.linalg.norm(e.pc - TRUTH) <= 0.01
    assert e.asymmetry < e.asymmetry0
    assert np.all(e.uncertainty > 0) and np.all(e.uncertainty < 0.01)
    assert 0 < e.rms_angle < np.deg2rad(1.0)
    assert e.n_patterns_used == e.used.sum() >= 3


def test_signal_is_not_modified_and_gives_the_array_result(ni_scan):
    import kikuchipy as kp

    s = kp.signals.EBSD(ni_scan.reshape(2, 3, *SHAPE).copy())
    start = TRUTH + np.array([-0.02, 0.01, 0.02])
    s.detector = kp.detectors.EBSDDetector(shape=SHAPE, pc=start, sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    data, pc = s.data.copy(), s.detector.pc.copy()
    e = kikuchipy_cnn.estimate_pc(s)
    assert np.array_equal(s.data, data) and np.array_equal(s.detector.pc, pc)
    assert e.pc_per_pattern.shape == (6, 3)
    e_arr = kikuchipy_cnn.estimate_pc(ni_scan, pc0=start, beam_energy=20.0)
    np.testing.assert_allclose(e.pc, e_arr.pc, atol=1e-9)


def test_max_patterns_uses_a_spread_subset_of_a_lazy_signal(ni_scan):
    import kikuchipy as kp

    s = kp.signals.EBSD(ni_scan.copy()).as_lazy()
    s.detector = kp.detectors.EBSDDetector(shape=SHAPE, pc=TRUTH + 0.01, sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    e = kikuchipy_cnn.estimate_pc(s, max_patterns=3)
    assert not e.used[[1, 3, 4]].any() and 1 <= e.n_patterns_used <= 3
    assert np.linalg.norm(e.pc - TRUTH) < np.linalg.norm(e.pc0 - TRUTH)


def _scan_signal(patterns, pc):
    import kikuchipy as kp

    s = kp.signals.EBSD(patterns.reshape(2, 3, *SHAPE).copy())
    s.detector = kp.detectors.EBSDDetector(shape=SHAPE, pc=pc, sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    return s


def test_check_detector_flags_a_pc_the_bands_disagree_with(ni_scan):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        e = pe.check_detector(_scan_signal(ni_scan, TRUTH))  # consistent: silent
    assert np.abs(e.pc - TRUTH).max() < 0.01
    wrong = TRUTH + [0.04, 0.0, 0.0]
    s = _scan_signal(ni_scan, wrong)
    with pytest.warns(RuntimeWarning, match="disagrees with the bands.*set s.detector.pc"):
        e = pe.check_detector(s)
    assert np.array_equal(s.detector.pc.reshape(-1, 3)[0], wrong)  # not changed
    assert abs(e.pc[0] - TRUTH[0]) < 0.01


def test_check_detector_flags_the_default_pc_and_validates():
    import kikuchipy as kp

    s = kp.signals.EBSD(kp.data.nickel_ebsd_small().data.astype(np.float32))
    with pytest.warns(RuntimeWarning, match="default pattern centre.*set s.detector.pc"):
        pe.check_detector(s, static_background=None)
    with pytest.raises(ValueError, match="pc0"):
        pe.check_detector(s, pc0=TRUTH)
    with pytest.raises(TypeError, match="EBSD signal"):
        pe.check_detector(np.zeros((60, 60)))


def test_check_detector_on_emsoft_ni_loaded_with_the_wrong_pcx():
    """EBSD_TEST_Ni.h5 loads with PCx 0.46875 (EMsoft 5 sign on an EMsoft 4
    file); detectors.tsv has the truth, 0.53125."""
    import warnings

    import kikuchipy as kp
    from conftest import shared_data_dir

    path = shared_data_dir() / "kp_emsoft_ni_sim" / "EBSD_TEST_Ni.h5"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    s = kp.load(path)
    assert abs(s.detector.pc[..., 0].ravel()[0] - 0.46875) < 1e-6
    with pytest.warns(RuntimeWarning, match="disagrees with the bands"):
        e = pe.check_detector(s)
    assert abs(e.pc[0] - 0.53125) < 0.01
    s.detector.pc = (0.53125, 0.45833, 0.625)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pe.check_detector(s)
