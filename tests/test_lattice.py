"""Lattice reconstruction: named steps on exact lattices, and the whole chain
on exact and noisy band sets of known Bravais lattices."""

from __future__ import annotations

import numpy as np
import pytest

from kikuchipy_cnn.lattice import (
    cell_parameters,
    direction_bases,
    generated_sublattice,
    index_bands,
    lattice_matrix,
    lattice_symmetry,
    niggli_cell,
    reciprocal_vectors,
    reconstruct_lattice,
    refine_basis,
)

LAMBDA = 0.08588  # Å, 20 kV


def direct_basis(a, b, c, al, be, ga):
    """Cell parameters -> rows, written independently of ``lattice.lattice_matrix``
    (which the tests check against it)."""
    al, be, ga = np.radians([al, be, ga])
    v = np.sqrt(1 - np.cos(al) ** 2 - np.cos(be) ** 2 - np.cos(ga) ** 2 + 2 * np.cos(al) * np.cos(be) * np.cos(ga))
    return np.array(
        [[a, 0, 0], [b * np.cos(ga), b * np.sin(ga), 0],
         [c * np.cos(be), c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga), c * v / np.sin(ga)]]
    )  # fmt: skip


#: conventional cell, centring condition on (h, k, l), expected Bravais lattice
CASES = {
    "cF": ((3.52, 3.52, 3.52, 90, 90, 90), lambda h: ((h % 2 == 0).all(1) | (h % 2 == 1).all(1))),
    "cI": ((2.87, 2.87, 2.87, 90, 90, 90), lambda h: h.sum(1) % 2 == 0),
    "cP": ((4.1, 4.1, 4.1, 90, 90, 90), lambda h: np.ones(len(h), bool)),
    "hP": ((3.21, 3.21, 5.21, 90, 90, 120), lambda h: np.ones(len(h), bool)),
    "tI": ((3.9, 3.9, 6.1, 90, 90, 90), lambda h: h.sum(1) % 2 == 0),
    "oP": ((4.2, 5.1, 6.3, 90, 90, 90), lambda h: np.ones(len(h), bool)),
    "mP": ((4.2, 5.1, 6.3, 90, 104, 90), lambda h: np.ones(len(h), bool)),
}


def band_set(name, rng, n_bands=20, noise_angle=0.0, noise_width=0.0):
    """Bands of the lowest-order allowed reflections within a 45 deg cap,
    strongest = longest d (exact unless noise is asked for)."""
    cell, allowed = CASES[name]
    A = direct_basis(*cell)
    B = np.linalg.inv(A).T
    r = np.arange(-3, 4)
    h = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    h = h[np.any(h != 0, axis=1) & allowed(h)]
    g = h @ B
    q = rng.normal(size=(3, 3))
    R, _ = np.linalg.qr(q)
    g = g @ R.T
    axis = np.array([0, 0, 1.0])
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    # a band is seen when its plane passes within 45 deg of the screen centre
    seen = np.abs(u @ axis) < np.sin(np.radians(45))
    g, u = g[seen], u[seen]
    # one band per direction, the lowest order (longest d)
    keep, used = [], []
    for i in np.argsort(np.linalg.norm(g, axis=1)):
        if any(abs(u[i] @ u[j]) > 1 - 1e-9 for j in used):
            continue
        used.append(i)
        keep.append(i)
    keep = keep[:n_bands]
    g, u = g[keep], u[keep]
    d = 1 / np.linalg.norm(g, axis=1)
    w = 2 * np.arcsin(LAMBDA / (2 * d))
    if noise_angle:
        u = u + rng.normal(0, np.radians(noise_angle), u.shape)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
    if noise_width:
        w = w * np.exp(rng.normal(0, noise_width, w.shape))
    sign = rng.choice([-1, 1], size=(len(u), 1))
    return u * sign, w, d  # strength: longer d first


def test_reciprocal_vectors_lengths():
    n = np.array([[0, 0, 2.0], [1, 0, 0]])
    g, has = reciprocal_vectors(n, [2 * np.arcsin(LAMBDA / (2 * 2.0)), np.nan], LAMBDA)
    assert has.tolist() == [True, False]
    np.testing.assert_allclose(g[0], [0, 0, 0.5])
    np.testing.assert_allclose(g[1], [1, 0, 0])


def test_generated_sublattice_of_fcc_reflections():
    h = np.array([[1, 1, 1], [2, 0, 0], [0, 2, 0], [2, 2, 0], [3, 1, 1], [1, -1, 1], [0, 0, 2]])
    b = generated_sublattice(h)
    assert round(abs(np.linalg.det(b))) == 4  # all-odd/all-even: index 4 in Z^3
    # every reflection is an integer combination of the basis
    coeff = h @ np.linalg.inv(b)
    np.testing.assert_allclose(coeff, np.round(coeff), atol=1e-9)
    with pytest.raises(ValueError, match="three dimensions"):
        generated_sublattice([[1, 0, 0], [2, 0, 0], [0, 1, 0]])


def test_niggli_and_metric_symmetry_of_known_cells():
    # fcc primitive cell, given in a skewed setting
    a = 3.52
    prim = np.array([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    skew = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]]) @ prim
    red = niggli_cell(skew)
    np.testing.assert_allclose(sorted(cell_parameters(red)[:3]), [a / np.sqrt(2)] * 3, rtol=1e-6)
    assert lattice_symmetry(red)[0][1] == "cF"
    assert lattice_symmetry(direct_basis(3.21, 3.21, 5.21, 90, 90, 120))[0][1] == "hP"
    assert lattice_symmetry(direct_basis(4.2, 5.1, 6.3, 90, 90, 90))[0][1] == "oP"
    # a 2 % tetragonal distortion of a cube: cubic only at the loose tolerances
    ladder = dict(lattice_symmetry(direct_basis(4.0, 4.0, 4.08, 90, 90, 90)))
    assert ladder[0.005] == "tP" and ladder[0.05] == "cP"


def test_index_bands_in_the_true_basis():
    B = np.linalg.inv(direct_basis(4.2, 5.1, 6.3, 90, 104, 90)).T
    h = np.array([[1, 0, 0], [0, 1, 1], [1, -1, 2], [2, 0, -1], [0, 0, 1], [1, 1, 1]])
    g = (h @ B) * np.array([1, -1, 1, 1, -1, 1])[:, None]  # band normals have no sign
    hkl, cost, ok = index_bands(B, g, np.ones(len(h), bool))
    assert ok.all()
    np.testing.assert_array_equal(hkl, h * np.array([1, -1, 1, 1, -1, 1])[:, None])
    assert cost.max() < 0.3 * 2 + 1e-6  # only the |h| penalty
    # directions alone index too; a wrong cell (5 % longer b*) costs far more
    hkl, _, ok = index_bands(B, g / np.linalg.norm(g, axis=1, keepdims=True), np.zeros(len(h), bool))
    assert ok.all()
    _, wrong, _ = index_bands(B * np.array([[1], [1.05], [1]]), g, np.ones(len(h), bool))
    assert wrong.sum() > cost.sum() + 10


@pytest.mark.parametrize("name", list(CASES))
def test_reconstruction_of_exact_band_sets(name):
    rng = np.random.default_rng(1)
    n, w, d = band_set(name, rng, n_bands=22)
    fit = reconstruct_lattice(n, w, d, LAMBDA)
    assert fit is not None
    assert fit.n_indexed >= len(n) - 1
    assert fit.bravais_lattice(0.005) == name, fit.symmetry


def test_reconstruction_with_measured_noise_levels():
    # 0.2 deg on normals, 3 % on widths: cubic lattices still come out right
    ok = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n, w, d = band_set("cF", rng, n_bands=16, noise_angle=0.2, noise_width=0.03)
        fit = reconstruct_lattice(n, w, d, LAMBDA)
        ok += fit is not None and fit.bravais_lattice(0.05) == "cF"
    assert ok >= 5


@pytest.mark.parametrize("name", list(CASES))
def test_reconstruction_from_directions_alone(name):
    # no widths at all (as at 60 px): the shape of the cell still comes out
    rng = np.random.default_rng(1)
    n, w, d = band_set(name, rng, n_bands=22)
    fit = reconstruct_lattice(n, np.full(len(w), np.nan), d, LAMBDA, use_widths=False)
    assert fit is not None and fit.n_indexed >= len(n) - 1
    assert fit.bravais_lattice(0.005) == name, fit.symmetry
    # widths given are ignored: the same cell
    again = reconstruct_lattice(n, w, d, LAMBDA, use_widths=False)
    np.testing.assert_allclose(again.direct, fit.direct)


def test_reconstruction_from_noisy_directions():
    # 0.3 deg on the normals, no widths: cF and hP still come out on most sets
    ok = 0
    for name in ("cF", "hP"):
        for seed in range(4):
            n, w, d = band_set(name, np.random.default_rng(seed), n_bands=16, noise_angle=0.3)
            fit = reconstruct_lattice(n, w, d, LAMBDA, use_widths=False)
            ok += fit is not None and fit.bravais_lattice(0.05) == name
    assert ok >= 7


def test_direction_bases_vote_for_the_true_length_ratios():
    # tP with c/a = 1.3: a triple (100)*, (010)*, (001)* needs lengths 1 : 1 : 1/1.3
    A = direct_basis(4.0, 4.0, 5.2, 90, 90, 90)
    B = np.linalg.inv(A).T
    h = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [1, -1, 1],
                  [2, 0, 1], [1, 2, 1]])
    g = h @ B
    bases = direction_bases(g, np.arange(len(g)), n_top=3, n_peaks=1, divisors=(1,))
    assert bases.shape == (1, 3, 3)
    lengths = np.linalg.norm(bases[0], axis=1)
    np.testing.assert_allclose(lengths / lengths[0], [1, 1, 4.0 / 5.2], rtol=0.05)
    # no other bands: nothing votes, no basis
    assert len(direction_bases(g[:3], np.arange(3), n_top=3)) == 0


def test_refine_basis_from_directions_keeps_the_scale():
    A = direct_basis(4.2, 5.1, 6.3, 90, 104, 90)
    B = np.linalg.inv(A).T
    r = np.arange(-2, 3)
    h = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    h = h[np.any(h != 0, axis=1)][:40]
    u = h @ B
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    start = B * np.array([[1.0], [1.04], [0.97]]) + 0.002
    b, rms_angle, rms_length = refine_basis(start, h, u, np.zeros(len(h), bool))
    assert np.isnan(rms_length) and rms_angle < 1e-6
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(start))
    # the shape is the true one: same cell up to scale
    np.testing.assert_allclose(b / np.linalg.norm(b), B / np.linalg.norm(B), atol=1e-6)


def test_too_few_bands_give_no_lattice():
    rng = np.random.default_rng(2)
    n, w, d = band_set("cF", rng, n_bands=4)
    assert reconstruct_lattice(n, w, d, LAMBDA) is None
    n, w, d = band_set("cF", rng, n_bands=10)
    assert reconstruct_lattice(n, np.full(len(w), np.nan), d, LAMBDA) is None


def test_metric_candidates_measure_how_well_each_lattice_fits():
    rng = np.random.default_rng(3)
    n, w, d = band_set("tI", rng, n_bands=18)  # c/a = 1.56: never cubic
    fit = reconstruct_lattice(n, w, d, LAMBDA)
    assert "tI" in fit.candidates and fit.candidates["tI"][1] < np.radians(0.05)
    # a 3 % tetragonal cube: cP appears at a loose tolerance and then misfits the lengths
    CASES["tP3"] = ((4.0, 4.0, 4.12, 90, 90, 90), lambda h: np.ones(len(h), bool))
    try:
        n, w, d = band_set("tP3", rng, n_bands=18)
    finally:
        del CASES["tP3"]
    fit = reconstruct_lattice(n, w, d, LAMBDA)
    cand = fit.candidates
    assert cand["tP"][0] == 0.005 and "cP" in cand and cand["cP"][0] >= 0.02
    assert cand["cP"][2] > 3 * max(cand["tP"][2], 1e-4) or cand["cP"][1] > 3 * max(cand["tP"][1], 1e-5)


def test_lattice_work_leaves_the_environment_alone():
    import os

    before = os.environ.get("SPGLIB_WARNING")
    rng = np.random.default_rng(5)
    n, w, d = band_set("oP", rng, n_bands=14)
    reconstruct_lattice(n, w, d, LAMBDA)
    assert os.environ.get("SPGLIB_WARNING") == before


def test_cell_fingerprint_is_one_lattice_whatever_the_basis_and_scale():
    from kikuchipy_cnn.lattice import cell_fingerprint

    a = 3.52
    fcc60 = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a  # 60, 60, 60
    fcc90 = np.array([[0.5, 0.5, 0], [-0.5, 0.5, 0], [0, 0.5, 0.5]]) * a  # 90, 120, 120 (or 60, 60, 90)
    other = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]]) @ fcc60  # unimodular: the same lattice
    f = cell_fingerprint(fcc60)
    np.testing.assert_allclose(f, cell_fingerprint(fcc90), rtol=1e-12)
    np.testing.assert_allclose(f, cell_fingerprint(niggli_cell(other)), rtol=1e-12)
    np.testing.assert_allclose(f, cell_fingerprint(2.7 * fcc60), rtol=1e-12)  # scale-free
    np.testing.assert_allclose(f[:9], [1] * 6 + [np.sqrt(2)] * 3, rtol=1e-12)  # 12 + 6 neighbours
    bcc = np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]) * 2.87
    assert np.abs(np.log(cell_fingerprint(bcc) / f)).max() > 0.1
    with pytest.raises(ValueError, match="non-degenerate"):
        cell_fingerprint(np.ones((3, 3)))


def test_consensus_cell_is_the_weighted_medoid_of_agreeing_shapes():
    from kikuchipy_cnn.lattice import CELL_AGREEMENT, consensus_cell

    rng = np.random.default_rng(3)
    fcc = direct_basis(2.49, 2.49, 2.49, 60, 60, 60)
    hexa = direct_basis(3.21, 3.21, 5.21, 90, 90, 120)

    def noisy(c, s=0.004):
        return c * np.exp(rng.normal(0, s, (3, 1)))

    cells = np.array([noisy(fcc) for _ in range(4)] + [noisy(hexa) for _ in range(3)] + [np.full((3, 3), np.nan)])
    i, support = consensus_cell(cells)
    assert i < 4 and support == pytest.approx(4 / 7)
    # weights: the three hexagonal cells are three grains, the fcc cells one grain of four
    i, support = consensus_cell(cells, np.array([0.25] * 4 + [1.0] * 3 + [1.0]))
    assert 4 <= i < 7 and support == pytest.approx(3 / 4)
    assert consensus_cell(np.full((2, 3, 3), np.nan)) == (-1, 0.0)
    with pytest.raises(ValueError, match="weights"):
        consensus_cell(cells, -np.ones(len(cells)))
    # a cell 2 x the tolerance away in shape does not agree
    stretched = fcc * np.array([[1.0], [1.0], [np.exp(2 * CELL_AGREEMENT)]])
    assert consensus_cell(np.array([fcc, stretched]))[1] == pytest.approx(0.5)


def test_lattice_matrix_is_the_inverse_of_cell_parameters():
    p = np.array([4.2, 5.1, 6.3, 80.0, 104.0, 95.0])
    np.testing.assert_allclose(cell_parameters(lattice_matrix(*p)), p, atol=1e-9)
    a = lattice_matrix(*p)
    np.testing.assert_allclose(a, direct_basis(*p), atol=1e-12)  # the tests' own formula
    assert a[0, 1:].tolist() == [0, 0] and a[1, 2] == 0  # a along x, b in the xy plane
    assert np.linalg.det(a) > 0


@pytest.mark.parametrize("name", ["cF", "hP", "mP"])
def test_length_scale_takes_a_cell_from_directions_to_angstrom(name):
    from kikuchipy_cnn.lattice import MIN_SCALE_BANDS, lattice_vector_lengths, length_scale

    rng = np.random.default_rng(1)
    n, w, d = band_set(name, rng, n_bands=22)
    fit = reconstruct_lattice(n, w, d, LAMBDA, use_widths=False)  # arbitrary scale
    a = direct_basis(*CASES[name][0])
    if name == "cF":  # the primitive cell of the face-centred lattice
        a = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) @ a
    true = lattice_vector_lengths(niggli_cell(a), 1)[0, 0]
    # exact Bragg angles: the cell in Å, whatever scale the directions gave it
    s = length_scale(fit, w, LAMBDA)
    assert lattice_vector_lengths(fit.direct * s, 1)[0, 0] == pytest.approx(true, rel=1e-3)
    # a few bands 10 % off and a quarter at twice their width (second order) do not move the median much
    w2 = w.copy()
    w2[::4] *= 2.0
    w2[1::5] *= 1.1
    s2 = length_scale(fit, w2, LAMBDA)
    assert abs(np.log(s2 / s)) < 0.1
    # too few widths: no scale
    few = np.full(len(w), np.nan)
    few[: MIN_SCALE_BANDS - 1] = w[: MIN_SCALE_BANDS - 1]
    assert np.isnan(length_scale(fit, few, LAMBDA))
    with pytest.raises(ValueError, match="one per band"):
        length_scale(fit, w[:3], LAMBDA)
    with pytest.raises(ValueError, match="wavelength"):
        length_scale(fit, w, 0.0)


def test_conventional_cell_of_a_reduced_cell_for_a_named_lattice():
    from kikuchipy_cnn.lattice import conventional_cell

    fcc = niggli_cell(np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * 3.52)
    tol, cell = conventional_cell(fcc, "cF")
    assert tol == 0.005
    np.testing.assert_allclose(cell_parameters(cell), [3.52, 3.52, 3.52, 90, 90, 90], atol=1e-6)
    # a cubic metric is reported as cubic: tP (a subgroup) is not offered, nor is a lattice it never reaches
    assert conventional_cell(fcc, "tP") is None
    # a slightly distorted hexagonal cell reaches hP at a looser tolerance, idealised (a = b, 120 deg)
    hexa = direct_basis(3.21, 3.23, 5.21, 90.3, 89.8, 120.4)
    tol, cell = conventional_cell(hexa, "hP")
    p = cell_parameters(cell)
    assert tol > 0.005 and p[0] == pytest.approx(p[1]) and p[5] == pytest.approx(120)
    assert p[2] == pytest.approx(5.21, rel=0.01)
    with pytest.raises(ValueError, match="bravais"):
        conventional_cell(fcc, "xx")
    with pytest.raises(ValueError, match="non-degenerate"):
        conventional_cell(np.zeros((3, 3)), "cF")


def test_band_features_size_the_cell_from_calibrated_widths():
    # bands measured WIDTH_TO_BRAGG too narrow (as on the training renders): the
    # calibrated widths give fcc's cell in Å through band_features, as classify does
    from kikuchipy_cnn.bands import WIDTH_TO_BRAGG, BandSet
    from kikuchipy_cnn.features import band_features

    rng = np.random.default_rng(1)
    n, w, d = band_set("cF", rng, n_bands=22)
    k = len(w)
    bs = BandSet(n[None], d[None], (w / WIDTH_TO_BRAGG)[None], np.ones((1, k)), np.ones((1, k), bool))
    cells, scales = np.full((1, 3, 3), np.nan), np.full(1, np.nan)
    band_features(bs, LAMBDA, np.radians(0.1), cells=cells, cell_scales=scales)
    assert np.linalg.norm(cells[0, 0]) * scales[0] == pytest.approx(3.52 / 2**0.5, rel=1e-3)
    # at another beam energy the same widths mean other spacings: the size follows the wavelength
    band_features(bs, 2 * LAMBDA, np.radians(0.1), cells=cells, cell_scales=scales)
    assert np.linalg.norm(cells[0, 0]) * scales[0] == pytest.approx(2 * 3.52 / 2**0.5, rel=2e-3)
    with pytest.raises(ValueError, match="cell_scales"):
        band_features(bs, LAMBDA, np.radians(0.1), cell_scales=np.zeros(2))
