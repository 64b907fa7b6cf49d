"""Pooling the per-pattern evidence of one phase (kikuchipy_cnn.phases)."""

import numpy as np
import pytest

from kikuchipy_cnn.phases import POOL_CLIP, pool_probabilities


def _random_probs(rng, n, k):
    p = rng.dirichlet(np.ones(k) * 0.5, size=n)
    return p


def test_pooled_is_the_normalised_product_of_clipped_probabilities():
    rng = np.random.default_rng(0)
    p = _random_probs(rng, 12, 23)
    p[3, 5] = 0.0  # one pattern rules class 5 out: clipped, not a veto
    g = rng.integers(0, 3, 12)
    labels, pooled, counts = pool_probabilities(p, g)
    assert labels.tolist() == sorted(set(g.tolist())) and counts.sum() == 12
    for lab, row in zip(labels, pooled):
        prod = np.prod(np.clip(p[g == lab], POOL_CLIP, 1), axis=0)
        np.testing.assert_allclose(row, prod / prod.sum(), rtol=1e-9)
    np.testing.assert_allclose(pooled.sum(axis=1), 1)


def test_tempering_keeps_the_argmax_and_lowers_confidence():
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = _random_probs(rng, 20, 23)
        g = np.zeros(20, int)
        _, plain, _ = pool_probabilities(p, g)
        _, half, _ = pool_probabilities(p, g, tempering=0.5)
        _, geo, _ = pool_probabilities(p, g, tempering=1.0)
        assert plain.argmax() == half.argmax() == geo.argmax()
        assert plain.max() >= half.max() >= geo.max()
    # one pattern: tempering does nothing
    _, one, _ = pool_probabilities(p[:1], np.zeros(1, int), tempering=0.7)
    q = np.clip(p[0], POOL_CLIP, 1)
    np.testing.assert_allclose(one[0], q / q.sum())


def test_views_count_once_however_many_patterns_they_hold():
    rng = np.random.default_rng(4)
    p = _random_probs(rng, 6, 23)
    g = np.array([0, 0, 0, 1, 1, 1])
    views = np.arange(6)
    for beta in (0.0, 0.6, 1.0):
        _, ref, _ = pool_probabilities(p, g, tempering=beta, views=views)
        np.testing.assert_allclose(ref, pool_probabilities(p, g, tempering=beta)[1], rtol=1e-9)
        # pattern 0's grain grows to 50 patterns (the same verdict each): one view still
        big = np.concatenate([p, np.repeat(p[:1], 49, axis=0)])
        _, pooled, counts = pool_probabilities(big, np.concatenate([g, np.zeros(49, int)]), tempering=beta,
                                               views=np.concatenate([views, np.zeros(49, int)]))
        np.testing.assert_allclose(pooled, ref, rtol=1e-9)
        assert counts.tolist() == [52, 3]  # patterns, not views
        # without views the big grain dominates its group
        _, plain, _ = pool_probabilities(big, np.concatenate([g, np.zeros(49, int)]), tempering=beta)
        assert not np.allclose(plain[0], ref[0])
    # a view's patterns are averaged in log space; view labels are per group
    q = np.array([[0.8, 0.2], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    _, pooled, _ = pool_probabilities(q, np.array([0, 0, 0, 1]), views=np.array([7, 7, 3, 7]))
    np.testing.assert_allclose(pooled, [[0.5, 0.5], [0.9, 0.1]])
    with pytest.raises(ValueError, match="views"):
        pool_probabilities(q, np.zeros(4, int), views=np.zeros(3, int))


def test_unusable_and_unclassified_patterns_are_left_out():
    p = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8], [0.5, 0.5]])
    labels, pooled, counts = pool_probabilities(p, np.array([0, 0, -1, 1]))
    assert labels.tolist() == [0, 1] and counts.tolist() == [1, 1]
    np.testing.assert_allclose(pooled[0], [0.9, 0.1])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="groups"):
        pool_probabilities(np.ones((3, 2)) / 2, np.zeros(2, int))
    with pytest.raises(ValueError, match="clip"):
        pool_probabilities(np.ones((3, 2)) / 2, np.zeros(3, int), clip=0)
    for bad in (np.nan, -0.5):
        with pytest.raises(ValueError, match="tempering"):
            pool_probabilities(np.ones((3, 2)) / 2, np.zeros(3, int), tempering=bad)


# ---------------------------------------------------------------- discovery

import kikuchipy as kp  # noqa: E402

import kikuchipy_cnn  # noqa: E402
from kikuchipy_cnn.phases import (  # noqa: E402
    discover_phases,
    grains_from_sketches,
    pattern_sketches,
    pattern_spectra,
)


def test_sketches_compare_patterns_and_spectra_ignore_in_plane_turns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 64, 64)).astype(np.float32)
    x[1] = x[0] + 0.01 * rng.normal(size=(64, 64))
    x[2] = np.rot90(x[0])
    sk = pattern_sketches(x, valid=np.array([True, True, True]))
    np.testing.assert_allclose(np.linalg.norm(sk, axis=1), 1, rtol=1e-5)
    assert sk[0] @ sk[1] > 0.99 and abs(sk[0] @ sk[2]) < 0.5
    sp = pattern_spectra(x)
    np.testing.assert_allclose(sp[2], sp[0], atol=1e-4)  # a 90 degree turn: the same radial profile
    assert sp.shape == (3, 16) and np.allclose(sp.mean(axis=1), 0, atol=1e-5)
    assert not pattern_sketches(x, valid=np.array([True, False, True]))[1].any()
    assert not pattern_spectra(x, valid=np.array([False, True, True]))[0].any()


def _grain_sketches(grain, rng, noise=0.05, m=50):
    base = rng.normal(size=(grain.max() + 1, m))
    sk = base[grain.ravel()] + noise * rng.normal(size=(grain.size, m))
    sk -= sk.mean(axis=1, keepdims=True)
    return (sk / np.linalg.norm(sk, axis=1, keepdims=True)).astype(np.float32)


def test_grains_are_connected_regions_of_similar_neighbours_cut_by_unusable_patterns():
    rng = np.random.default_rng(1)
    truth = np.zeros((6, 8), int)
    truth[:, 4:] = 1
    truth[4:, :4] = 2
    sk = _grain_sketches(truth, rng)
    usable = np.ones(48, bool)
    grain = grains_from_sketches(sk, (6, 8), usable)
    assert len(np.unique(grain)) == 3
    for t in range(3):  # one grain per true grain
        assert len(np.unique(grain[truth.ravel() == t])) == 1
    # an unusable column cuts grain 1 in two and is -1
    usable = np.ones((6, 8), bool)
    usable[:, 6] = False
    grain = grains_from_sketches(sk, (6, 8), usable.ravel())
    assert (grain[~usable.ravel()] == -1).all() and len(np.unique(grain[usable.ravel()])) == 4
    # the same grid as one line and one pattern
    assert len(np.unique(grains_from_sketches(sk[:8], (8,), np.ones(8, bool)))) == 2
    assert grains_from_sketches(sk[:1], (), np.ones(1, bool)).tolist() == [0]


def _grains_by_hand(sk, nav_shape, usable, threshold):
    """Reference: every pair of grid neighbours compared in float64, the
    sketches less the usable patterns' mean, then union-find."""
    rows, cols = (nav_shape if len(nav_shape) == 2 else (1, int(np.prod(nav_shape))))
    x = sk.astype(np.float64) - sk[usable].astype(np.float64).mean(axis=0)
    x /= np.where(np.linalg.norm(x, axis=1, keepdims=True) > 0,
                  np.linalg.norm(x, axis=1, keepdims=True), 1)
    parent = list(range(len(sk)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for j in ([i + 1] if c + 1 < cols else []) + ([i + cols] if r + 1 < rows else []):
                if usable[i] and usable[j] and x[i] @ x[j] >= threshold:
                    parent[root(j)] = root(i)
    out, names = np.full(len(sk), -1), {}
    for i in np.flatnonzero(usable):
        out[i] = names.setdefault(root(i), len(names))
    return out


@pytest.mark.parametrize("nav_shape", [(7, 9), (9, 1), (1, 9), (13,), ()])
def test_grains_match_a_pairwise_reference_in_every_block_size(nav_shape, monkeypatch):
    from kikuchipy_cnn import phases

    rng = np.random.default_rng(3)
    n = int(np.prod(nav_shape)) if nav_shape else 1
    truth = rng.integers(0, 3, n)
    sk = _grain_sketches(truth, rng, noise=0.6)
    sk[rng.random(n) < 0.1] = 0  # blank sketches
    usable = rng.random(n) > 0.15
    want = _grains_by_hand(sk, nav_shape, usable, 0.4)
    for block in (1, 2, 5, 4096):
        monkeypatch.setattr(phases, "GRAIN_BLOCK", block)
        np.testing.assert_array_equal(grains_from_sketches(sk, nav_shape, usable, 0.4), want)


def test_grains_of_a_large_scan_need_little_memory_beyond_the_sketches():
    import tracemalloc

    rng = np.random.default_rng(0)
    side, m = 160, 208
    base = rng.normal(size=(64, m)).astype(np.float32)
    r, c = np.divmod(np.arange(side * side), side)
    sk = base[(r // 20) * 8 + c // 20] + 0.3 * rng.normal(size=(side * side, m)).astype(np.float32)
    sk /= np.linalg.norm(sk, axis=1, keepdims=True)
    tracemalloc.start()
    try:
        grain = grains_from_sketches(sk, (side, side), np.ones(side * side, bool))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grain.max() + 1 == 64
    # no float64 copy or per-pair gather of the sketches (those were ~10x them)
    assert peak < 0.5 * sk.nbytes, (peak, sk.nbytes)


def test_unpacked_sketches_are_the_packed_ones_without_a_copy_of_the_packed_block(tiny_model):
    import tracemalloc

    from kikuchipy_cnn.classify import _pack_sketches, resolve_model, sketch_columns, unpack_sketches
    from kikuchipy_cnn.phases import SPECTRUM_BINS, pattern_sketches

    card = resolve_model(tiny_model)
    ncol = sketch_columns(card)
    size = card.preprocessing.size
    m = pattern_sketches(np.zeros((1, size, size), np.float32)).shape[1]
    rng = np.random.default_rng(0)
    sk = rng.normal(size=(20000, m)).astype(np.float16).astype(np.float32)
    spectra = rng.normal(size=(20000, SPECTRUM_BINS)).astype(np.float32)
    out = np.zeros((20000, 30 + ncol + 2), np.float32)  # like the chunk results
    out[:, 30 : 30 + SPECTRUM_BINS] = spectra
    out[:, 30 + SPECTRUM_BINS : 30 + ncol] = _pack_sketches(sk, ncol - SPECTRUM_BINS)
    tracemalloc.start()
    try:
        got_spectra, got_d, got = unpack_sketches(out[:, 30:-2], card)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, sk)
    np.testing.assert_array_equal(got_spectra, spectra)
    assert got_d is None  # a pixel model's card names no d-spacing signature
    assert got.dtype == np.float32 and peak < 1.2 * (got.nbytes + got_spectra.nbytes)


def _synthetic_scan(rng, phase_means, rows=20, cols=20, n_grains=20, spread=1.0, noise=0.5):
    """Per-pattern probabilities, sketches and spectra of a scan of Voronoi
    grains: every grain a phase (its mean log-probabilities and spectrum),
    shifted by an orientation effect per grain and noise per pattern."""
    seeds = rng.uniform(0, [rows, cols], (n_grains, 2))
    r, c = np.mgrid[:rows, :cols]
    grain = ((r.ravel()[:, None] - seeds[:, 0]) ** 2 + (c.ravel()[:, None] - seeds[:, 1]) ** 2).argmin(1)
    _, grain = np.unique(grain, return_inverse=True)
    ng = grain.max() + 1
    gphase = rng.permutation(np.arange(ng) % len(phase_means))
    means = np.asarray(phase_means, float)
    k = means.shape[1]
    logit = (means[gphase] + spread * rng.normal(size=(ng, k)))[grain] + noise * rng.normal(size=(grain.size, k))
    probs = np.exp(logit - logit.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    spectra = (means[gphase, :16] + spread * rng.normal(size=(ng, 16)))[grain]
    spectra = spectra + noise * rng.normal(size=spectra.shape)
    return probs, _grain_sketches(grain.reshape(rows, cols), rng), spectra, gphase[grain], grain


def test_discovery_keeps_one_phase_and_finds_two():
    rng = np.random.default_rng(2)
    one = rng.normal(0, 2, (1, 23))
    splits = 0
    for _ in range(10):
        probs, sk, sp, true, _ = _synthetic_scan(rng, one)
        d = discover_phases(probs, sk, (20, 20), spectra=sp)
        splits += d.n_phases > 1
        assert d.n_grains >= 15
    assert splits <= 1
    two = rng.normal(0, 2, (2, 23))
    for _ in range(5):
        probs, sk, sp, true, _ = _synthetic_scan(rng, two)
        d = discover_phases(probs, sk, (20, 20), spectra=sp)
        assert d.n_phases == 2
        agree = max(np.mean(d.phase == true), np.mean(d.phase == 1 - true))
        assert agree >= 0.95
        # phase 0 has the most patterns
        assert np.sum(d.phase == 0) >= np.sum(d.phase == 1)


def test_discovery_leaves_out_unusable_patterns():
    rng = np.random.default_rng(3)
    probs, sk, sp, true, _ = _synthetic_scan(rng, rng.normal(0, 2, (2, 23)))
    probs[5] = np.nan
    usable = np.ones(400, bool)
    usable[7] = False
    d = discover_phases(probs, sk, (20, 20), usable, spectra=sp)
    assert d.phase[5] == d.phase[7] == d.grain[5] == d.grain[7] == -1
    assert (d.phase[usable & np.isfinite(probs).all(1)] >= 0).all()


def test_d_spacing_histogram_reads_d_from_width_and_beam_energy():
    from kikuchipy_cnn.bands import electron_wavelength
    from kikuchipy_cnn.phases import DSPACING_BINS, DSPACING_RANGE, d_spacing_histogram

    lam = electron_wavelength(20.0)
    edges = np.geomspace(*DSPACING_RANGE, DSPACING_BINS + 1)
    d = np.array([2.03, 2.03, 1.245, 0.3, 9.0])  # the last two outside the range: end bins
    w = 2 * np.arcsin(lam / (2 * d))
    widths = np.vstack([w, w, np.full(5, np.nan)])
    valid = np.ones((3, 5), bool)
    valid[1, :2] = False  # bands not found are not counted
    h = d_spacing_histogram(widths, valid, lam)
    want = np.zeros(DSPACING_BINS)
    for x in d:
        want[np.clip(np.searchsorted(edges, x) - 1, 0, DSPACING_BINS - 1)] += 0.2
    np.testing.assert_allclose(h[0], want)
    assert h[0, 0] == pytest.approx(0.2) and h[0, -1] == pytest.approx(0.2)
    np.testing.assert_allclose(h[1].sum(), 1.0)
    assert h[1][np.searchsorted(edges, 2.03) - 1] == 0  # both 2.03 Å bands were not found
    assert np.isnan(h[2]).all()  # no width measured: says nothing
    # another beam energy moves the same widths to other d-spacings
    assert not np.allclose(d_spacing_histogram(widths[:1], valid[:1], electron_wavelength(10.0)), h[:1])


def test_discovery_by_d_spacings_alone_ignores_patterns_without_widths():
    rng = np.random.default_rng(4)
    # one verdict for both phases, different d-spacings: only the d-spacings tell them apart
    means = np.hstack([np.tile(rng.normal(0, 2, (1, 23)), (2, 1)), rng.normal(0, 2, (2, 16))])
    found = {sig: 0 for sig in (("probabilities",), ("d_spacings",), ("probabilities", "d_spacings"))}
    for _ in range(5):
        probs, sk, _, true, _ = _synthetic_scan(rng, means[:, :23], noise=0.3)
        dsp = means[true, 23:] + 0.5 * rng.normal(size=(400, 16))
        dsp[rng.random(400) < 0.3] = np.nan  # patterns whose widths could not be measured
        for sig in found:
            d = discover_phases(probs, sk, (20, 20), d_spacings=dsp, signatures=sig)
            if d.n_phases == 2:
                found[sig] += 1
                assert max(np.mean(d.phase == true), np.mean(d.phase == 1 - true)) >= 0.95
    assert found[("probabilities",)] <= 1 and found[("d_spacings",)] == 5
    assert found[("probabilities", "d_spacings")] >= 4
    # no widths anywhere (60 px patterns): the block says nothing, no split, no error
    d = discover_phases(probs, sk, (20, 20), d_spacings=np.full((400, 16), np.nan),
                        signatures=("probabilities", "d_spacings"))
    assert d.n_phases == 1 and d.n_grains >= 15
    with pytest.raises(ValueError, match="not given"):
        discover_phases(probs, sk, (20, 20), signatures=("d_spacings",))
    with pytest.raises(ValueError, match="signatures must name"):
        discover_phases(probs, sk, (20, 20), signatures=("widths",))


# ------------------------------------------------ classify_structure(pool=...)

def _classify(s, **kw):
    kw.setdefault("verbose", 0)
    kw.setdefault("show_progressbar", False)
    return s.classify_structure(**kw)


@pytest.fixture(scope="module")
def render():
    """Render patterns of held-out (test-split) masters with the data engine's
    projection and degradation: one 60 x 60 detector, one moderate
    degradation."""
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import (
        DetectorGeometry,
        MasterSet,
        detector_directions,
        project_many,
        random_quaternions,
    )
    from kikuchipy_cnn.training.realism import degrade

    masters = MasterSet(DEFAULT_CACHE, "test")
    ids = [m["id"] for m in masters.meta]
    stacks = masters.stacks()
    dc = detector_directions(DetectorGeometry((60, 60), 0.5, 0.35, 0.6, 70.0, 0.0))
    realism = dict(contrast=0.5, gamma=1.0, blur=0.5, counts=2000.0, read_noise=0.002,
                   bg_sigma=0.5, bg_center=(0.0, 0.0), bg_gradient=(0.0, 0.0), bg_floor=0.2,
                   vignetting=0.0, circular_mask=False, mask_radius=0.5, hot_pixels=0,
                   dead_pixels=0)

    def scan(structures, seed, rows=12, cols=12, n_grains=12):
        """EBSD signal of Voronoi grains, each one of ``structures`` (master
        ids) at a random orientation, every structure in some grain; and the
        true structure index of every pattern."""
        rng = np.random.default_rng(seed)
        seeds = rng.uniform(0, [rows, cols], (n_grains, 2))
        r, c = np.mgrid[:rows, :cols]
        grain = ((r.ravel()[:, None] + 0.5 - seeds[:, 0]) ** 2
                 + (c.ravel()[:, None] + 0.5 - seeds[:, 1]) ** 2).argmin(1)
        _, grain = np.unique(grain, return_inverse=True)
        ng = grain.max() + 1
        gphase = rng.permutation(np.arange(ng) % len(structures))
        which = np.array([ids.index(i) for i in structures])[gphase][grain]
        quats = random_quaternions(ng, rng)[grain]
        clean = np.empty((grain.size, 60, 60), np.float32)
        for stack, pos in stacks.values():
            sel = np.flatnonzero(pos[which] >= 0)
            if sel.size:
                clean[sel] = project_many(stack, pos[which[sel]], quats[sel], dc, (60, 60))
        raw = degrade(clean, [realism] * grain.size, rng)
        return kp.signals.EBSD(raw.reshape(rows, cols, 60, 60)), gphase[grain]

    return scan


#: a body-centred cubic structure with a 3.07 Å cell and a face-centred cubic
#: one with a 10.1 Å cell (held-out structures): clearly different patterns
BCC_SMALL, FCC_LARGE = "s0-00884", "s1-05275"


def _agreement(found, true):
    ok = found >= 0
    return max(np.mean(found[ok] == true[ok]), np.mean(found[ok] == 1 - true[ok]))


def test_two_phase_scan_gives_two_pooled_phases_and_lazy_equals_eager(render):
    s, true = render([BCC_SMALL, FCC_LARGE], seed=0)
    before = s.data.copy()
    xmap = _classify(s, min_score=0)
    np.testing.assert_array_equal(s.data, before)
    pp = xmap.pooled_phases
    assert len(pp.names) == 2 and xmap.phases.ids == [0, 1]
    assert pp.n_patterns.sum() == 144 and pp.n_patterns[0] >= pp.n_patterns[1]
    found = xmap.prop["phase_index"]
    assert _agreement(found, true) >= 0.95
    np.testing.assert_array_equal(xmap.phase_id, found)
    # one class per phase, pooled from all its grains with the card's beta
    probs, classes = kikuchipy_cnn.probabilities(xmap)
    grain = xmap.prop["grain_index"]
    assert pp.n_grains.sum() == len(np.unique(grain)) < 144
    for i in range(2):
        sel = found == i
        _, pooled, _ = pool_probabilities(probs[sel], np.zeros(int(sel.sum()), int), tempering=0.75,
                                          views=grain[sel])
        np.testing.assert_allclose(pp.probabilities[i], pooled[0], rtol=1e-5)
        assert xmap.phases[i].name == classes[int(pooled.argmax())]
        np.testing.assert_allclose(xmap.prop["pooled_score"][found == i], pooled.max(), rtol=1e-5)
    assert xmap.phases[0].color != xmap.phases[1].color
    # every level from the phase's class
    lab = kikuchipy_cnn.labels(xmap)["joint"]
    assert (lab == np.array([xmap.phases[int(i)].name for i in xmap.phase_id])).all()
    # per-pattern probabilities kept as with pool="none"
    none = _classify(s, min_score=0, pool="none")
    np.testing.assert_allclose(probs, kikuchipy_cnn.probabilities(none)[0], rtol=1e-6)
    np.testing.assert_allclose(xmap.prop["pattern_score"], none.scores, rtol=1e-6)
    # the score of each pattern is its probability of its phase's class
    assigned = np.array([classes.index(xmap.phases[int(i)].name) for i in xmap.phase_id])
    np.testing.assert_allclose(xmap.scores, probs[np.arange(144), assigned], rtol=1e-6)
    # lazy, in several blocks, gives the same
    lazy = s.as_lazy()
    lazy.data = lazy.data.rechunk((5, 7, -1, -1))
    xl = _classify(lazy, min_score=0)
    np.testing.assert_array_equal(xl.phase_id, xmap.phase_id)
    np.testing.assert_array_equal(xl.prop["grain_index"], xmap.prop["grain_index"])
    np.testing.assert_allclose(xl.pooled_phases.probabilities, pp.probabilities, rtol=1e-5)


def test_single_phase_scan_is_one_phase(render):
    for seed in (0, 1):
        s, _ = render([FCC_LARGE], seed=seed)
        xmap = _classify(s, min_score=0)
        assert len(xmap.pooled_phases.names) == 1
        assert (xmap.phase_id == 0).all() and xmap.pooled_phases.n_grains[0] >= 5


def test_masked_and_rejected_patterns_are_never_pooled(render):
    s, true = render([BCC_SMALL, FCC_LARGE], seed=0)
    s.data[0, 0] = 0  # blank: rejected by the pattern check
    mask = np.zeros((12, 12), bool)
    mask[:, 5] = True
    xmap = _classify(s, min_score=0, navigation_mask=mask)
    assert xmap.size == 144 - 12
    assert xmap.phase_id[0] == -1 and xmap.prop["phase_index"][0] == -1
    assert xmap.prop["grain_index"][0] == -1 and np.isnan(xmap.prop["pooled_score"][0])
    assert xmap.pooled_phases.n_patterns.sum() == 144 - 12 - 1
    found = xmap.prop["phase_index"]
    assert _agreement(found[1:], true[~mask.ravel()][1:]) >= 0.95


def test_min_score_applies_to_the_pooled_probability(render):
    s, _ = render([FCC_LARGE], seed=0)
    xmap = _classify(s, min_score=0)
    pooled = float(xmap.pooled_phases.scores[0])
    own = float(xmap.prop["pattern_score"].max())
    assert pooled > own  # more confident than any one pattern
    between = (pooled + own) / 2
    assert (_classify(s, min_score=between, pool="none").phase_id == -1).all()
    assert (_classify(s, min_score=between).phase_id == 0).all()
    high = _classify(s, min_score=min(1.0, pooled + 1e-3))
    assert (high.phase_id == -1).all() and (high.prop["phase_index"] == 0).all()
    assert high.pooled_phases.phase_ids.tolist() == [-1] and high.phases.ids == [-1, 0]


def test_candidate_phases_pool_over_their_classes(render):
    from orix.crystal_map import Phase, PhaseList

    s, true = render([BCC_SMALL, FCC_LARGE], seed=0)
    pl = PhaseList([Phase(name="ni", space_group=225), Phase(name="fe", space_group=229),
                    Phase(name="ti", space_group=194)], ids=[3, 5, 7])
    xmap = _classify(s, min_score=0, phase_list=pl)
    assert set(xmap.phases.ids) <= {3, 5, 7}
    pp = xmap.pooled_phases
    assert pp.classes == ("cF m-3m", "cI m-3m", "hP 6/mmm") and pp.probabilities.shape == (2, 3)
    for i in range(2):
        want = [3, 5, 7][int(pp.probabilities[i].argmax())]
        assert (xmap.phase_id[xmap.prop["phase_index"] == i] == want).all()
        assert pp.names[i] == xmap.phases[want].name


def test_one_pattern_and_pool_none_are_todays_map(render):
    import onnxruntime as ort

    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.preprocessing import preprocess

    s, _ = render([FCC_LARGE], seed=0)
    # the expectation: the model run by hand on the preprocessed patterns,
    # one phase per class, each pattern its argmax
    card = resolve_model(None)
    x, valid = preprocess(s.data.reshape(144, 60, 60), card.preprocessing, None)
    assert valid.all()
    sess = ort.InferenceSession(str(card.weights_path), providers=["CPUExecutionProvider"])
    p = sess.run(["probabilities"], {card.input_name: x})[0]
    classes = list(card.classes)
    for pool in ("phases", "none"):  # one pattern: nothing to pool
        one = _classify(s.inav[3, 2], min_score=0, pool=pool)
        assert one.phases.names == classes and one.phases.ids == list(range(23))
        assert one.phase_id.tolist() == [int(p[2 * 12 + 3].argmax())]
        np.testing.assert_allclose(one.scores, p[2 * 12 + 3].max(), rtol=1e-4)
        assert not hasattr(one, "pooled_phases") and "phase_index" not in one.prop
        assert "pattern_score" not in one.prop
    none = _classify(s, min_score=0, pool="none")
    assert none.phases.names == classes and none.phases.ids == list(range(23))
    np.testing.assert_array_equal(none.phase_id, p.argmax(1))
    np.testing.assert_allclose(none.scores, p.max(1), rtol=1e-4)
    assert "phase_index" not in none.prop and not hasattr(none, "pooled_phases")


def test_bad_pool_is_refused_first(render):
    s, _ = render([FCC_LARGE], seed=0)
    for bad in ("grains", None, 1, "Phases"):
        with pytest.raises(ValueError, match="pool must be one of 'phases', 'none'"):
            _classify(s, pool=bad, model="no-such-model")


def test_phases_sharing_a_class_are_numbered_with_their_own_colours(tiny_model, tmp_path):
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.crystal_map import build_pooled_crystal_map
    from kikuchipy_cnn.phases import PhaseDiscovery
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    card = resolve_model(tiny_model)
    k = JOINT_CLASSES.index("cF m-3m")
    probs = np.full((6, 23), 0.01)
    probs[:, k] = 0.5
    probs[4:, JOINT_CLASSES.index("hP 6/mmm")] = 0.6
    probs /= probs.sum(1, keepdims=True)
    phase = np.array([0, 0, 1, 1, 2, 2])
    disc = PhaseDiscovery(grain=phase.copy(), phase=phase, n_grains=3, n_phases=3, split_r2=[])
    xmap = build_pooled_crystal_map(probs, np.ones(6, bool), disc, card, (2, 3), (1.0, 1.0), "um",
                                    0.0, None, tempering=0.75)
    assert xmap.phases.names == ["cF m-3m (1)", "cF m-3m (2)", "hP 6/mmm"]
    assert len({xmap.phases[i].color for i in range(3)}) == 3
    assert xmap.phases[0].point_group.name == "m-3m"
    lab = kikuchipy_cnn.labels(xmap)
    assert lab["joint"].tolist() == ["cF m-3m"] * 4 + ["hP 6/mmm"] * 2
    assert lab["crystal_system"].tolist() == ["cubic"] * 4 + ["hexagonal"] * 2
    summary = kikuchipy_cnn.summary(xmap)
    assert set(summary) == {"cF m-3m (1)", "cF m-3m (2)", "hP 6/mmm"}
    # saved and read back with the numbered names and the integer properties
    from orix import io

    from kikuchipy_cnn.io import save_crystal_map

    save_crystal_map(xmap, tmp_path / "pooled.ang")
    for path in (tmp_path / "pooled.ang", tmp_path / "pooled.ang.h5"):
        back = io.load(path)
        assert [back.phases[i].name for i in range(3)] == xmap.phases.names
    np.testing.assert_array_equal(back.prop["phase_index"], phase)


def test_card_pooling_settings_are_optional_read_and_validated(tmp_path, tiny_card_path, render):
    import shutil

    import yaml

    from kikuchipy_cnn.card import ModelCard, ModelCardError
    from kikuchipy_cnn.phases import POOL_TEMPERING, SPLIT_R2

    plain = ModelCard.from_file(tiny_card_path)  # a card without them stays valid
    assert plain.pool_tempering == POOL_TEMPERING and plain.pool_split_r2 == SPLIT_R2
    d = tmp_path / "copy"
    shutil.copytree(tiny_card_path.parent, d)
    path = d / "card.yaml"
    data = yaml.safe_load(path.read_text())

    def card_with(pooling):
        path.write_text(yaml.safe_dump({**data, "pooling": pooling}))
        return ModelCard.from_file(path)

    for bad in ({"tempering": -1}, {"tempering": "x"}, {"split_r2": [0.4]}, {"beta": 1}, [0.5], {},
                {"signatures": []}, {"signatures": "spectra"}, {"signatures": ["spectra", "spectra"]},
                {"signatures": ["widths"]}):
        with pytest.raises(ModelCardError, match="pooling must be a mapping"):
            card_with(bad)
    with pytest.raises(ModelCardError, match="d_spacings.*not 'bands'"):
        card_with({"signatures": ["d_spacings"], "split_r2": [0.4, 1.9]})  # a pixel model has no bands
    with pytest.raises(ModelCardError, match="signatures but no split_r2"):
        card_with({"signatures": ["spectra"]})
    assert card_with({"signatures": ["spectra"], "split_r2": [0.4, 1.9]}).pool_signatures == ("spectra",)
    assert plain.pool_signatures == ("probabilities", "spectra")
    s, _ = render([FCC_LARGE], seed=0)
    default = _classify(s, model=plain, min_score=0)
    card = card_with({"tempering": 0.0, "split_r2": [0.0, 0.0]})
    assert card.pool_tempering == 0.0 and card.pool_split_r2 == (0.0, 0.0)
    xmap = _classify(s, model=card, min_score=0)
    assert xmap.pooled_phases.tempering == 0.0 and default.pooled_phases.tempering == POOL_TEMPERING
    # no bar: the single phase is cut up
    assert len(xmap.pooled_phases.names) > len(default.pooled_phases.names)


def test_band_cards_d_spacing_signature_reaches_discovery_lazily_and_masked(tiny_band_card_path, tmp_path,
                                                                          monkeypatch):
    import shutil

    import yaml
    from scipy.ndimage import zoom

    from kikuchipy_cnn import phases
    from kikuchipy_cnn.card import ModelCard
    from kikuchipy_cnn.classify import _band_input, detector_geometry

    ni = kp.data.nickel_ebsd_small()
    # 180 x 180 px: bands wide enough for their widths to be measured
    from kikuchipy.detectors import EBSDDetector

    big = kp.signals.EBSD(np.stack([zoom(p.astype(np.float32), 3, order=1)
                                    for p in ni.data.reshape(9, 60, 60)]).reshape(3, 3, 180, 180))
    det = ni.detector
    big.detector = EBSDDetector(shape=(180, 180), pc=det.pc_average, convention="bruker",
                                sample_tilt=det.sample_tilt, tilt=det.tilt)
    big.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    d = tmp_path / "bands"
    shutil.copytree(tiny_band_card_path.parent, d)
    data = yaml.safe_load((d / "card.yaml").read_text())
    (d / "card.yaml").write_text(yaml.safe_dump(
        {**data, "pooling": {"tempering": 0.5, "split_r2": [0.4, 1.7], "signatures": ["d_spacings", "spectra"]}}))
    card = ModelCard.from_file(d / "card.yaml")
    seen = []
    real = phases.discover_phases

    def spy(*args, **kw):
        seen.append({**kw, "sketches": args[1]})
        return real(*args, **kw)

    monkeypatch.setattr(phases, "discover_phases", spy)
    pcs, lam = detector_geometry(big, (3, 3))
    want = _band_input(big.data.reshape(9, 180, 180), pcs.reshape(9, 3), lam, card, None)[3]
    assert np.isfinite(want).all(axis=1).sum() >= 6  # widths measured in most patterns
    mask = np.zeros((3, 3), bool)
    mask[0, 1] = True
    for s in (big, big.as_lazy()):
        xmap = _classify(s, model=card, min_score=0, navigation_mask=mask)
        kw = seen.pop()
        assert kw["signatures"] == ("d_spacings", "spectra")
        keep = ~mask.ravel()
        np.testing.assert_allclose(kw["d_spacings"][keep], want[keep], rtol=1e-6)
        assert (xmap.prop["phase_index"] >= 0).sum() == 8
    # the d-spacing columns shift nothing else: the spectra and sketches of a card without them
    _classify(big, model=tiny_band_card_path, min_score=0, navigation_mask=mask)
    plain = seen.pop()
    assert plain["d_spacings"] is None and plain["signatures"] == ("probabilities", "spectra")
    np.testing.assert_array_equal(plain["spectra"], kw["spectra"])
    np.testing.assert_array_equal(plain["sketches"], kw["sketches"])


def test_band_model_pools_phases_and_warns_once_without_pooling_settings(tiny_band_card_path,
                                                                         tmp_path):
    import shutil
    import warnings

    import yaml

    from kikuchipy_cnn.card import ModelCard

    ni = kp.data.nickel_ebsd_small()
    card = ModelCard.from_file(tiny_band_card_path)
    assert not card.has_pooling
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xmap = _classify(ni, model=card, min_score=0)
    pooling = [w for w in caught if "no pooling settings" in str(w.message)]
    assert len(pooling) == 1 and pooling[0].category is UserWarning
    assert "pass pool='none' or add pooling: to the card" in str(pooling[0].message)
    assert "tiny-bands" in str(pooling[0].message)
    # a pooled map, consistent at every level
    pp = xmap.pooled_phases
    assert pp.n_patterns.sum() == 9 and (xmap.prop["phase_index"] >= 0).all()
    assert (xmap.phase_id >= 0).all() and len(pp.names) == len(xmap.phases.ids)
    lab = kikuchipy_cnn.labels(xmap)
    assert lab["joint"].tolist() == [
        xmap.phases[int(i)].name.split(" (")[0] for i in xmap.phase_id]
    from kikuchipy_cnn.symmetry import joint_class_info
    for level in ("crystal_system", "bravais_lattice", "laue_class"):
        assert lab[level].tolist() == [joint_class_info(j)[level] for j in lab["joint"]]
    probs, classes = kikuchipy_cnn.probabilities(xmap)
    np.testing.assert_allclose(
        xmap.scores, probs[np.arange(9), [classes.index(j) for j in lab["joint"]]], rtol=1e-6)
    # no warning with pool="none", or with a card that has pooling settings
    d = tmp_path / "bands"
    shutil.copytree(tiny_band_card_path.parent, d)
    data = yaml.safe_load((d / "card.yaml").read_text())
    (d / "card.yaml").write_text(yaml.safe_dump({**data, "pooling": {"tempering": 0.5, "split_r2": [0.4, 1.7]}}))
    with_pooling = ModelCard.from_file(d / "card.yaml")
    # tempering alone: the warning names only the default split bar
    d2 = tmp_path / "bands-tempering"
    shutil.copytree(tiny_band_card_path.parent, d2)
    (d2 / "card.yaml").write_text(yaml.safe_dump({**data, "pooling": {"tempering": 0.5}}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _classify(ni, model=ModelCard.from_file(d2 / "card.yaml"), min_score=0)
    msg = [str(w.message) for w in caught if "no pooling settings" in str(w.message)]
    assert len(msg) == 1 and "split bar" in msg[0] and "tempering" not in msg[0]
    for kw in ({"model": card, "pool": "none"}, {"model": with_pooling}):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            warnings.filterwarnings("ignore", "(?!.*no pooling settings)", UserWarning)
            _classify(ni, min_score=0, **kw)


def test_sketch_length_without_sketching_and_the_preprocessing_mask(monkeypatch, tiny_model):
    from kikuchipy_cnn import phases
    from kikuchipy_cnn.classify import resolve_model, sketch_columns, unpack_sketches
    from kikuchipy_cnn.preprocessing import circular_mask

    rng = np.random.default_rng(0)
    assert phases.sketch_length(1) == phases.pattern_sketches(np.ones((1, 1, 1))).shape[1] == 1
    for side in (5, 16, 17, 31, 60, 64, 96, 128):
        x = rng.normal(size=(2, side, side)).astype(np.float32)
        sk = phases.pattern_sketches(x)
        assert sk.shape == (2, phases.sketch_length(side))
        # the pixels of the preprocessing's inscribed circle, centred, unit length
        b = max(1, side // phases.SKETCH_SIZE)
        k = side // b
        want = x[:, : k * b, : k * b].reshape(2, k, b, k, b).mean(axis=(2, 4))[:, circular_mask(k)]
        want -= want.mean(axis=1, keepdims=True)
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(sk, want, atol=1e-5)
    # the card's columns and the unpacking know the length without sketching
    card = resolve_model(tiny_model)

    def no_sketching(*args, **kwargs):
        raise AssertionError("pattern_sketches called to find the sketch length")

    monkeypatch.setattr(phases, "pattern_sketches", no_sketching)
    m = phases.sketch_length(card.preprocessing.size)
    assert sketch_columns(card) == phases.SPECTRUM_BINS + (m + 1) // 2
    assert unpack_sketches(np.zeros((3, sketch_columns(card)), np.float32), card)[2].shape == (3, m)


def test_pool_evidence_runs_the_pooled_model_on_each_groups_pooled_features(tiny_pooled_band_card_path):
    import onnxruntime as ort

    from kikuchipy_cnn.card import ModelCard
    from kikuchipy_cnn.features import feature_names, pooled_features
    from kikuchipy_cnn.phases import pool_evidence

    card = ModelCard.from_file(tiny_pooled_band_card_path)
    assert card.pooled_model.name == "pooled.onnx" and card.has_pooling
    rng = np.random.default_rng(0)
    f = rng.random((9, len(feature_names()))).astype(np.float32)
    f[4] = np.nan  # unusable: left out
    groups = np.array([0, 0, 0, 1, 1, 1, -1, 1, 0])
    views = np.array([0, 0, 1, 2, 3, 3, 4, 5, 1])
    labels, pooled, counts = pool_evidence(f, groups, views, card.pooled_model, card.pooled_sha256)
    assert labels.tolist() == [0, 1] and counts.tolist() == [4, 3]
    sess = ort.InferenceSession(str(card.pooled_model), providers=["CPUExecutionProvider"])
    for g, rows in ((0, [0, 1, 2, 8]), (1, [3, 5, 7])):
        x = pooled_features(f[rows], views[rows])[None]
        # the model's output, each probability at least POOL_CLIP
        np.testing.assert_allclose(pooled[g], sess.run(None, {"pooled_features": x})[0][0], rtol=1e-5, atol=2e-5)
    assert pooled.min() >= POOL_CLIP / 1.001
    np.testing.assert_allclose(pooled.sum(1), 1, rtol=1e-6)
    with pytest.raises(ValueError, match="features must be"):
        pool_evidence(f[0], groups, views, card.pooled_model, card.pooled_sha256)
    from kikuchipy_cnn.card import ModelCardError

    with pytest.raises(ModelCardError, match="damaged or was replaced"):
        pool_evidence(f, groups, views, card.pooled_model, "0" * 64)


def test_pooled_model_entries_of_a_card_are_validated(tmp_path, tiny_pooled_band_card_path, tiny_card_path):
    import shutil

    import yaml

    from kikuchipy_cnn.card import ModelCard, ModelCardError

    d = tmp_path / "copy"
    shutil.copytree(tiny_pooled_band_card_path.parent, d)
    path = d / "card.yaml"
    data = yaml.safe_load(path.read_text())
    good = data["pooling"]

    def card_with(pooling):
        path.write_text(yaml.safe_dump({**data, "pooling": pooling}))
        return ModelCard.from_file(path)

    for bad in ({"model": "pooled.onnx"}, {**good, "sha256": "ab"}, {k: good[k] for k in ("model", "version")}):
        with pytest.raises(ModelCardError, match="pooling must be a mapping"):
            card_with(bad)
    with pytest.raises(ModelCardError, match=r"trained on pooled features 'bands-0-views-0'.*retrain"):
        card_with({**good, "version": "bands-0-views-0"})
    assert card_with({**good, "tempering": 0.5}).pooled_model == d / "pooled.onnx"
    # what pool="phases" takes from the defaults: a pooled model makes tempering unused
    assert card_with(good).unfitted_pooling == ("split_r2",)
    assert card_with({**good, "split_r2": [0.4, 1.7]}).pooling_fitted
    assert card_with({"tempering": 0.5}).unfitted_pooling == ("split_r2",)
    assert ModelCard.from_file(tiny_card_path).unfitted_pooling == ("tempering", "split_r2")
    assert ModelCard.from_file(tiny_card_path).pooled_model is None
    pixel = tmp_path / "pixel"
    shutil.copytree(tiny_card_path.parent, pixel)
    pdata = yaml.safe_load((pixel / "card.yaml").read_text())
    (pixel / "card.yaml").write_text(yaml.safe_dump({**pdata, "pooling": good}))
    with pytest.raises(ModelCardError, match="input kind is 'pixels', not 'bands'"):
        ModelCard.from_file(pixel / "card.yaml")


def test_band_model_with_a_pooled_model_pools_the_evidence_of_each_phase(tiny_pooled_band_card_path):
    import warnings

    import onnxruntime as ort

    from kikuchipy_cnn.card import ModelCard
    from kikuchipy_cnn.classify import _band_input, detector_geometry, static_background_of
    from kikuchipy_cnn.features import pooled_features

    ni = kp.data.nickel_ebsd_small()
    card = ModelCard.from_file(tiny_pooled_band_card_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xmap = _classify(ni, model=card, min_score=0)
    # a pooled model but no fitted split bar: the warning names only the split bar
    unfitted = [str(w.message) for w in caught if "no pooling settings" in str(w.message)]
    assert len(unfitted) == 1 and "split bar" in unfitted[0] and "tempering" not in unfitted[0]
    pp = xmap.pooled_phases
    assert pp.method == "evidence" and np.isnan(pp.tempering)
    assert "band evidence" in repr(pp)
    # the phases' probabilities: the pooled model on the pooled features,
    # computed here independently from the patterns
    pcs, lam = detector_geometry(ni, (3, 3))
    feats, valid, *_ = _band_input(ni.data.reshape(9, 60, 60), pcs.reshape(9, 3), lam, card,
                               static_background_of(ni, "auto"))
    assert valid.all()
    phase = xmap.prop["phase_index"]
    grain = xmap.prop["grain_index"]
    sess = ort.InferenceSession(str(card.pooled_model), providers=["CPUExecutionProvider"])
    for g in range(len(pp.names)):
        rows = phase == g
        x = pooled_features(feats[rows], grain[rows])[None]
        np.testing.assert_allclose(pp.probabilities[g], sess.run(None, {"pooled_features": x})[0][0], rtol=1e-4,
                                   atol=2e-5)
    assert pp.n_patterns.sum() == 9
    lazy = _classify(ni.as_lazy(), model=card, min_score=0)
    np.testing.assert_allclose(lazy.pooled_phases.probabilities, pp.probabilities, rtol=1e-5)


def test_a_bad_pooled_model_is_found_before_the_scan_is_classified(tmp_path, tiny_pooled_band_card_path,
                                                                   monkeypatch):
    import shutil

    import yaml

    import kikuchipy_cnn.classify as classify
    from kikuchipy_cnn.card import ModelCard, WeightsError, sha256_of
    from conftest import _linear_softmax_onnx
    from kikuchipy_cnn.features import pooled_feature_names

    def write_pooled_onnx(path, n_out):
        _linear_softmax_onnx(path, "pooled_features", len(pooled_feature_names()), n_out, np.random.default_rng(5))

    def no_work(*args, **kwargs):
        raise AssertionError("the scan was classified before the pooled model was checked")

    ni = kp.data.nickel_ebsd_small()
    d = tmp_path / "copy"
    shutil.copytree(tiny_pooled_band_card_path.parent, d)
    data = yaml.safe_load((d / "card.yaml").read_text())
    monkeypatch.setattr(classify, "map_model", no_work)
    (d / "pooled.onnx").unlink()
    with pytest.raises(WeightsError, match=r"Pooled model .* is missing.*pool='none'"):
        _classify(ni, model=ModelCard.from_file(d / "card.yaml"))
    # one output too few for the card's 23 classes
    write_pooled_onnx(d / "pooled.onnx", n_out=22)
    pooling = {**data["pooling"], "sha256": sha256_of(d / "pooled.onnx")}
    (d / "card.yaml").write_text(yaml.safe_dump({**data, "pooling": pooling}))
    with pytest.raises(WeightsError, match="gives 22 outputs per phase, but the card has 23 classes"):
        _classify(ni, model=ModelCard.from_file(d / "card.yaml"))
    write_pooled_onnx(d / "pooled.onnx", n_out=23)
    with pytest.raises(WeightsError, match="corrupted or was replaced"):
        _classify(ni, model=ModelCard.from_file(d / "card.yaml"))
    # an upper-case checksum is the same checksum; pool="none" never looks at the pooled model
    pooling = {**data["pooling"], "sha256": sha256_of(d / "pooled.onnx").upper()}
    (d / "card.yaml").write_text(yaml.safe_dump({**data, "pooling": pooling}))
    ModelCard.from_file(d / "card.yaml").verify_pooled_model()
    (d / "pooled.onnx").unlink()
    monkeypatch.undo()
    assert _classify(ni, model=ModelCard.from_file(d / "card.yaml"), pool="none").size == 9


def test_pooled_evidence_with_candidates_masks_and_no_usable_pattern(tiny_pooled_band_card_path):
    from orix.crystal_map import Phase, PhaseList

    from kikuchipy_cnn.card import ModelCard
    from kikuchipy_cnn.features import feature_names
    from kikuchipy_cnn.phases import pool_evidence
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    ni = kp.data.nickel_ebsd_small()
    card = ModelCard.from_file(tiny_pooled_band_card_path)
    full = _classify(ni, model=card, min_score=0)
    # candidates: the phases' evidence restricted to their classes and renormalised
    cands = PhaseList(phases=[Phase("ni", space_group=225), Phase("fe", space_group=229)], ids=[3, 5])
    xmap = _classify(ni, model=card, min_score=0, phase_list=cands)
    cols = [JOINT_CLASSES.index("cF m-3m"), JOINT_CLASSES.index("cI m-3m")]
    expect = full.pooled_phases.probabilities[:, cols]
    np.testing.assert_allclose(xmap.pooled_phases.probabilities, expect / expect.sum(1, keepdims=True), rtol=1e-5)
    assert set(xmap.phase_id.tolist()) <= {3, 5} and xmap.pooled_phases.method == "evidence"
    # masked patterns are never pooled
    mask = np.zeros((3, 3), bool)
    mask[0] = True
    masked = _classify(ni, model=card, min_score=0, navigation_mask=mask)
    assert masked.size == 6 and masked.pooled_phases.n_patterns.sum() == 6
    assert (masked.prop["phase_index"] >= 0).all()
    # no usable pattern: no phase, and the width of the model's output
    f = np.zeros((3, len(feature_names())), np.float32)
    labels, pooled, counts = pool_evidence(f, np.full(3, -1), np.arange(3), card.pooled_model, card.pooled_sha256)
    assert labels.size == 0 and pooled.shape == (0, 23) and counts.size == 0


def test_phase_cells_weigh_each_grain_once():
    from kikuchipy_cnn.phases import phase_cells

    fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * 3.52
    hexa = np.array([[3.21, 0, 0], [-1.605, 2.78, 0], [0, 0, 5.21]])
    nan = np.full((3, 3), np.nan)
    # phase 0: one big grain of hexagonal cells, two small grains of fcc; phase 1: no cell; -1 left out
    cells = np.array([hexa] * 5 + [fcc, fcc * 1.3] + [nan, nan] + [hexa])
    groups = np.array([0] * 7 + [1, 1] + [-1])
    views = np.array([0] * 5 + [1, 2] + [3, 3] + [4])
    labels, shape, support, size = phase_cells(cells, groups, views)
    assert labels.tolist() == [0, 1]
    np.testing.assert_allclose(shape[0], [1, 1, 1, 60, 60, 60], atol=1e-6)  # 2 grains of 3 beat 1
    assert support[0] == pytest.approx(2 / 3)
    assert np.isnan(shape[1]).all() and support[1] == 0
    assert np.isnan(size).all()  # no scales: no size
    with pytest.raises(ValueError, match="cells"):
        phase_cells(cells[:3], groups, views)
    with pytest.raises(ValueError, match="scales"):
        phase_cells(cells, groups, views, np.ones(3))


def test_phase_cells_size_is_the_median_of_the_agreeing_grains_in_angstrom():
    from kikuchipy_cnn.phases import phase_cells

    # Niggli cells at arbitrary scales, each with the factor that takes it to Å
    fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])  # a = 1: its Niggli a is 0.707
    hexa = np.array([[1.0, 0, 0], [-0.5, 0.866, 0], [0, 0, 1.62]])
    cells = np.array([fcc * 2.0, fcc * 0.5, fcc, fcc * 3, hexa, hexa] + [fcc] * 5)
    scales = np.array([3.52 / 2.0, 3.60 / 0.5, 3.40, np.nan, 100.0, 100.0] + [4.0] * 5)
    groups = np.zeros(11, int)
    views = np.array([0, 1, 2, 3, 4, 4] + [5] * 5)  # the hexagonal grain is outvoted (1 of 6)
    _, shape, support, size = phase_cells(cells, groups, views, scales)
    np.testing.assert_allclose(shape[0], [1, 1, 1, 60, 60, 60], atol=1e-6)
    # the fcc grains with a scale: a = 3.52, 3.60, 3.40 and one grain of five
    # patterns at 4.0 that counts once -> median 3.56 (by pattern it would be 4.0);
    # the hexagonal grain (another shape) and the pattern without a scale do not count
    assert size[0] == pytest.approx(3.56 / 2**0.5)
    # no agreeing pattern with a scale: NaN
    _, _, _, none = phase_cells(cells, groups, views, np.where(np.arange(11) < 4, np.nan, 1.0) * (views < 5))
    assert np.isnan(none[0])


def test_phase_cells_text_names_lengths_only_when_measured():
    from kikuchipy_cnn.phases import format_cell, format_conventional

    shape = [1, 1.62, 1.62, 90, 90, 120]
    assert format_cell(shape, 0.5, 2.0) == "2.00 3.24 3.24 Å, 90.0 90.0 120.0 (50%)"
    assert format_cell(shape, 0.5) == "1:1.62:1.62, 90.0 90.0 120.0 (50%)"
    assert format_cell([np.nan] * 6, 0) == format_conventional([np.nan] * 6) == "none"
    assert format_conventional([1.414, 1.414, 1.414, 90, 90, 90], 2.49) == "a 3.521 Å"
    assert format_conventional([1, 1, 1.6, 90, 90, 120], 2.95) == "a 2.950, c 4.720 Å"
    assert format_conventional([1, 1, 1.6, 90, 90, 90]) == "a 1.000, c 1.600 (a = 1)"
    assert format_conventional([1, 1.2, 1.6, 90, 90, 90], 2.0) == "a 2.000, b 2.400, c 3.200 Å"
    assert format_conventional([1, 1.2, 1.6, 90, 104, 90], 2.0) == "a 2.000, b 2.400, c 3.200 Å, beta 104.0"
    assert format_conventional([1, 1.2, 1.6, 80, 104, 95], 2.0).endswith("Å, 80.0 104.0 95.0")


def test_phase_cells_of_a_large_scan_work_grain_by_grain():
    # 40,000 patterns in 400 grains of one phase: one cell per grain first, so
    # the consensus compares 400 cells, not 40,000 x 40,000 pairs
    from kikuchipy_cnn.lattice import cell_shape
    from kikuchipy_cnn.phases import phase_cells

    rng = np.random.default_rng(0)
    fcc = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * 3.52
    cells = fcc * np.exp(rng.normal(0, 0.003, (40_000, 3, 1)))
    cells[::5] = np.diag([2.0, 3.0, 5.0])  # a fifth of the patterns: an unrelated cell
    grain = np.repeat(np.arange(400), 100)
    labels, shape, support, size = phase_cells(cells, np.zeros(40_000, int), grain, np.full(40_000, 2.0))
    np.testing.assert_allclose(shape[0], cell_shape(fcc), atol=1.5)
    assert support[0] == 1.0  # each grain's own cell is the fcc one
    assert size[0] == pytest.approx(2 * 3.52 / 2**0.5, rel=0.01)  # the fcc patterns' shortest vector
