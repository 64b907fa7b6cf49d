"""Band front end: pixel geometry against kikuchipy's, and bands of simulated
Ni patterns against the true plane normals and Bragg angles."""

from __future__ import annotations

import numpy as np
import pytest

from kikuchipy_cnn.bands import (
    detect_bands,
    electron_wavelength,
    pixel_directions,
    to_sample_frame,
)


def test_electron_wavelength():
    # 20 kV: 0.08588 Å; 30 kV: 0.06979 Å (relativistic)
    assert electron_wavelength(20) == pytest.approx(0.08588, abs=2e-5)
    assert electron_wavelength(30) == pytest.approx(0.06979, abs=2e-5)


@pytest.mark.parametrize("shape,pc", [((60, 60), (0.421, 0.2206, 0.5049)), ((30, 40), (0.6, 0.3, 0.7))])
def test_pixel_directions_match_kikuchipy(shape, pc):
    import kikuchipy as kp
    from kikuchipy.signals.util._master_pattern import _get_direction_cosines_from_detector

    det = kp.detectors.EBSDDetector(shape=shape, pc=pc, sample_tilt=70, tilt=5)
    ours = to_sample_frame(pixel_directions(shape, pc), det).reshape(-1, 3)
    theirs = _get_direction_cosines_from_detector(det).reshape(-1, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_pattern_centre_is_the_optical_axis():
    r = pixel_directions((101, 101), (0.5, 0.5, 0.6))
    np.testing.assert_allclose(r[50, 50], [0, 0, 1], atol=1e-12)
    # PCy counts from the top: a pattern centre near the top puts (0, 0, 1) there
    r = pixel_directions((100, 100), (0.505, 0.205, 0.6))
    assert np.argmax(r[..., 2]) == np.ravel_multi_index((20, 50), (100, 100))


def _ni_simulation(n, size, seed=0):
    import kikuchipy as kp
    from orix.quaternion import Rotation

    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    rot = Rotation(q / np.linalg.norm(q, axis=1, keepdims=True))  # uniform, seeded
    pcs = np.column_stack([rng.uniform(0.4, 0.6, n), rng.uniform(0.2, 0.35, n), rng.uniform(0.5, 0.65, n)])
    pats = []
    for i in range(n):
        det = kp.detectors.EBSDDetector(shape=(size, size), pc=pcs[i], sample_tilt=70)
        pats.append(np.asarray(mp.get_patterns(rot[i], det, energy=20, show_progressbar=False).data))
    return np.array(pats, np.float32).reshape(n, size, size), pcs, rot, det


def test_strong_bands_of_ni_are_its_planes_with_bragg_widths():
    from orix.vector import Vector3d

    pats, pcs, rot, det = _ni_simulation(6, 120)
    bands = detect_bands(pats, pcs, n_bands=8)
    assert bands.normals.shape == (6, 8, 3) and bands.valid.all()
    np.testing.assert_allclose(np.linalg.norm(bands.normals, axis=-1), 1, atol=1e-9)
    # {111}, {200}, {220}, {311} of fcc Ni (a = 3.524 Å): direction and first order
    fam = {(1, 1, 1): 3, (1, 0, 0): 4, (1, 1, 0): 8, (3, 1, 1): 11}
    dirs, d = [], []
    for h, n2 in fam.items():
        for p in set(__import__("itertools").permutations(h)):
            for s in ([1, 1, 1], [1, -1, 1], [1, 1, -1], [-1, 1, 1]):
                v = np.array(p) * s
                dirs.append(v / np.linalg.norm(v))
                d.append(3.524 / np.sqrt(n2))
    dirs, d = np.array(dirs), np.array(d)
    two_theta = 2 * np.arcsin(electron_wavelength(20) / (2 * d))
    errs, ratios = [], []
    for i in range(6):
        nc = (rot[i] * Vector3d(to_sample_frame(bands.normals[i, :4], det))).data
        cos = np.abs(nc @ dirs.T)
        errs.append(np.degrees(np.arccos(cos.max(1).clip(-1, 1))))
        ratios.append(bands.width[i, :4] / two_theta[cos.argmax(1)])
    errs, ratios = np.concatenate(errs), np.concatenate(ratios)
    # measured on this simulation: median 0.05 deg, widths 0.9 x 2 theta_B
    assert np.median(errs) < 0.2 and np.mean(errs < 1.0) >= 0.85
    assert np.isfinite(ratios).mean() >= 0.75
    assert 0.8 < np.nanmedian(ratios) < 1.1


def test_widths_not_claimed_below_resolution():
    # at 30 px a band is about one pixel wide: no width is measured
    pats, pcs, _, _ = _ni_simulation(2, 30, seed=1)
    bands = detect_bands(pats, pcs, n_bands=6)
    assert np.isnan(bands.width).mean() > 0.8


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="too small"):
        detect_bands(np.ones((2, 8, 8)), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="pattern centres for 3 patterns"):
        detect_bands(np.ones((3, 40, 40)), np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="PCz > 0"):
        detect_bands(np.ones((1, 40, 40)), (0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="rows, columns"):
        detect_bands(np.ones((40,)), (0.5, 0.5, 0.5))


def test_band_detection_leaves_the_environment_alone():
    import os
    import subprocess
    import sys

    code = (
        "import os, numpy as np\n"
        "before = dict(os.environ)\n"
        "from kikuchipy_cnn.bands import detect_bands\n"
        "detect_bands(np.random.default_rng(0).random((1, 40, 40)), (0.5, 0.3, 0.6))\n"
        "print(sorted(k for k, v in os.environ.items() if before.get(k) != v))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_band_trace_distance_is_the_angle_to_the_plane():
    from kikuchipy_cnn.bands import band_trace_distance

    shape, pc = (40, 50), (0.45, 0.3, 0.7)
    n = np.array([[0.0, 1.0, 0.0], [0.3, -0.2, 0.9]])
    d = band_trace_distance(shape, pc, n * [[2.0], [1.0]])  # length does not matter
    r = pixel_directions(shape, pc)
    nn = n / np.linalg.norm(n, axis=1, keepdims=True)
    np.testing.assert_allclose(d, np.arcsin(np.abs(np.einsum("ijc,kc->kij", r, nn))), atol=1e-6)
    assert d.shape == (2, 40, 50) and d.dtype == np.float32
    # the plane y = 0 is the row through the pattern centre (PCy from the top)
    row = np.argmin(d[0].mean(axis=1))
    assert abs(row + 0.5 - pc[1] * shape[0]) <= 0.5
    np.testing.assert_allclose(band_trace_distance(shape, pc, n[1]), d[1])
    with pytest.raises(ValueError, match="non-zero"):
        band_trace_distance(shape, pc, np.zeros(3))
