"""Fast tests of the training data engine."""

import json

import numpy as np
import pytest

from kikuchipy_cnn.symmetry import JOINT_CLASSES, space_group_class

pyxtal = pytest.importorskip("pyxtal")
spglib = pytest.importorskip("spglib")

from kikuchipy_cnn.training import structures as st  # noqa: E402


def _spglib_number(s):
    return spglib.get_symmetry_dataset(st.spglib_cell(s), symprec=1e-3).number


@pytest.fixture(scope="module")
def small_set():
    return st.generate_structures(
        per_class=3, seed=5, classes=("mC 2/m", "hR -3m", "cI m-3m", "tP 4/m")
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_all_classes_present_in_structure_list(seed):
    from kikuchipy_cnn.training.master_patterns import TRAINING_DATA

    structures = st.load_structures(TRAINING_DATA / f"structures_seed{seed}.json")  # committed
    counts = st.class_counts(structures)
    for jc in JOINT_CLASSES:
        assert all(counts[jc][sp] > 0 for sp in st.SPLITS), jc
    ids = [s["id"] for s in structures]
    assert len(set(ids)) == len(ids)
    if seed == 1:  # the round-robin generator covers every space group
        groups = st.space_group_counts(structures)
        assert all(groups[n] > 0 for n in range(1, 231))
        assert all(counts[jc] == {"train": 200, "val": 25, "test": 25} for jc in JOINT_CLASSES)


@pytest.mark.parametrize("sg", [196, 203, 209, 222, 228])
def test_general_position_groups_keep_their_symmetry(sg):
    """Groups whose random structures rise in symmetry unless one species sits
    on the general position."""
    for i in range(12):
        s = st.random_structure(sg, np.random.default_rng([2, i]))
        if s is not None and s["space_group"] == sg:
            assert _spglib_number(s) == sg
            return
    pytest.fail(f"no structure of space group {sg} in 12 tries")


def test_disjoint_splits(small_set):
    counts = st.class_counts(small_set)
    for jc in ("mC 2/m", "hR -3m", "cI m-3m", "tP 4/m"):
        assert counts[jc] == {"train": 1, "val": 1, "test": 1}, jc
    ids = {sp: {s["id"] for s in small_set if s["split"] == sp} for sp in st.SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    keys = [str((s["lattice"], s["atoms"])) for s in small_set]
    assert len(set(keys)) == len(keys)  # no structure in two splits


def test_generation_same_in_parallel_and_resumes(small_set, tmp_path):
    classes = ("mC 2/m", "hR -3m", "cI m-3m", "tP 4/m")
    par = st.generate_structures(per_class=3, seed=5, classes=classes, processes=2,
                                 checkpoint_dir=tmp_path)
    assert par == small_set
    parts = sorted(tmp_path.glob("*.json"))
    assert len(parts) == 4
    # a resumed run reads finished classes instead of generating them again
    data = json.loads(parts[0].read_text())
    data["structures"][0]["n_atoms"] = -1  # a marker only a reread can return
    parts[0].write_text(json.dumps(data))
    again = st.generate_structures(per_class=3, seed=5, classes=classes, checkpoint_dir=tmp_path)
    assert sum(s["n_atoms"] == -1 for s in again) == 1


def test_labels_match_spglib_and_limits(small_set):
    for s in small_set:
        assert _spglib_number(s) == s["space_group"]
        assert space_group_class(s["space_group"]).joint_class == s["joint_class"]
        assert s["n_atoms"] == len(s["atoms"]) <= 64
        assert all(e not in st.EXCLUDED_ELEMENTS for e, _ in s["atoms"])
        assert 2.5 <= min(s["lattice"][:3]) and max(s["lattice"][:3]) <= 15


def test_deterministic_by_seed():
    a = [st.random_structure(sg, np.random.default_rng(3)) for sg in (14, 166, 225)]
    b = [st.random_structure(sg, np.random.default_rng(3)) for sg in (14, 166, 225)]
    assert a == b


def _structure_factor(s, hkl):
    f = 0j
    for _, xyz in s["atoms"]:
        f += np.exp(2j * np.pi * np.dot(hkl, xyz))
    return abs(f)


@pytest.mark.parametrize("sg", [12, 63, 139, 166, 194, 229])
def test_systematic_absences(sg):
    """Centring absences hold in the stored P1 cell (one element type is
    enough to see them: centring translations hold for every atom)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = st.random_structure(sg, rng)
        if s is not None and s["space_group"] == sg:
            break
    else:
        pytest.skip("no structure generated")
    c = space_group_class(sg).centring
    absent = {
        "C": [(1, 0, 0), (0, 1, 0), (1, 0, 1)],
        "I": [(1, 0, 0), (1, 1, 1), (0, 0, 1)],
        "R": [(1, 0, 0), (0, 0, 1), (1, 1, 1)],  # -h + k + l != 3n
        "P": [],
    }[c]
    for hkl in absent:
        assert _structure_factor(s, hkl) < 1e-3, (sg, hkl)
    if sg == 194:
        assert _structure_factor(s, (0, 0, 1)) < 1e-3  # 6_3 screw


def test_atom_count_hcp_and_fold():
    from kikuchipy_cnn.training.master_patterns import fold_space_group

    hcp = {
        "lattice": [2.66, 2.66, 4.95, 90, 90, 120],
        "atoms": [["Zn", [1 / 3, 2 / 3, 0.25]], ["Zn", [2 / 3, 1 / 3, 0.75]]],
        "space_group": 194,
    }
    pytest.importorskip("de_ebsd")
    from kikuchipy_cnn.training.master_patterns import crystal_from_structure

    cr = crystal_from_structure(hcp)
    assert sum(len(p) for p in cr.positions) == 2
    assert fold_space_group(hcp) == 191
    mono = {
        "lattice": [5.0, 6.0, 7.0, 90, 110, 90],
        "atoms": [["Cu", [0.1, 0.2, 0.3]], ["Cu", [-0.1, 0.2, 0.5 - 0.3]],
                  ["Cu", [-0.1, -0.2, -0.3]], ["Cu", [0.1, -0.2, 0.3 + 0.5]]],
        "space_group": 14,
    }  # fmt: skip
    # 2/m with the unique axis permuted to z, so orix's 2/m (sg 10) folds
    assert fold_space_group(mono) == 10


@pytest.fixture(scope="module")
def master_set():
    from kikuchipy_cnn.training.projection import MasterSet

    rng = np.random.default_rng(0)
    masters = [1 + 0.1 * rng.random((2, 41, 41)) for _ in range(3)]
    return MasterSet.from_arrays(masters, [0, 5, 22])


def test_make_batch_shapes_labels_deterministic(master_set):
    pytest.importorskip("kikuchipy")
    from kikuchipy_cnn.training.realism import make_batch

    x, y, meta = make_batch(master_set, 40, np.random.default_rng(1), per_detector=16)
    assert x.shape == (40, 1, 64, 64) and x.dtype == np.float32
    assert y.dtype == np.int64 and set(y) <= {0, 5, 22}
    assert np.array_equal(y, master_set.labels[meta["master"]])
    assert meta["valid"].all() and np.isfinite(x).all()
    x2, y2, _ = make_batch(master_set, 40, np.random.default_rng(1), per_detector=16)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_make_batch_uses_preprocess(master_set, monkeypatch):
    pytest.importorskip("kikuchipy")
    import kikuchipy_cnn.preprocessing as pp
    from kikuchipy_cnn.training.realism import make_batch

    calls = []
    original = pp.preprocess

    def spy(patterns, recipe=None, **kw):
        calls.append(patterns.shape)
        return original(patterns, recipe, **kw)

    monkeypatch.setattr(pp, "preprocess", spy)
    make_batch(master_set, 8, np.random.default_rng(0))
    assert calls


def test_project_many_matches_kikuchipy(master_set):
    pytest.importorskip("kikuchipy")
    from kikuchipy_cnn.training.projection import (
        detector_directions,
        project,
        project_many,
        random_geometry,
        random_quaternions,
    )

    rng = np.random.default_rng(3)
    geom = random_geometry(rng)
    shape = (37, 50)
    dc = detector_directions(geom, shape)
    q = random_quaternions(6, rng)
    stack, pos = master_set.stacks()[master_set.masters[0].shape]
    idx = np.array([0, 1, 2, 2, 1, 0])
    new = project_many(stack, pos[idx], q, dc, shape)
    ref = np.stack([project(master_set.masters[i], q[k : k + 1], dc, shape)[0] for k, i in enumerate(idx)])
    np.testing.assert_allclose(new, ref, rtol=0, atol=1e-6)


def _degrade_reference(patterns, params, binning):
    """The original NumPy/SciPy degradation without the random parts."""
    from scipy.ndimage import gaussian_filter

    n, rows, cols = patterns.shape
    col = lambda key: np.array([p[key] for p in params], np.float32)[:, None, None]  # noqa: E731
    p = np.clip(patterns, 0, None)
    p /= np.maximum(p.mean(axis=(1, 2), keepdims=True), 1e-12)
    p **= col("gamma")
    for i, prm in enumerate(params):
        if prm["blur"] / binning > 0.2:
            p[i] = gaussian_filter(p[i], prm["blur"] / binning, mode="nearest", truncate=3.0)
    p /= np.maximum(p.mean(axis=(1, 2), keepdims=True), 1e-12)
    y = ((np.arange(rows) - (rows - 1) / 2) / max(rows, cols)).astype(np.float32)
    x = ((np.arange(cols) - (cols - 1) / 2) / max(rows, cols)).astype(np.float32)
    yy, xx = y[None, :, None], x[None, None, :]
    c = lambda key, j: np.array([q[key][j] for q in params], np.float32)[:, None, None]  # noqa: E731
    s = col("bg_sigma")
    bg = col("bg_floor") + np.exp(-((xx - c("bg_center", 0)) ** 2 + (yy - c("bg_center", 1)) ** 2) / (2 * s**2))
    bg *= np.clip(1 + c("bg_gradient", 0) * xx + c("bg_gradient", 1) * yy, 0.1, None)
    r2 = xx**2 + yy**2
    bg *= 1 - col("vignetting") * r2 / 0.5
    np.clip(bg, 1e-3, None, out=bg)
    bg /= bg.max(axis=(1, 2), keepdims=True)
    img = np.clip(bg * (1 + col("contrast") * (p - 1)), 0, None)
    for i, prm in enumerate(params):
        if prm["circular_mask"]:
            rmax = prm["mask_radius"] * min(rows, cols) / max(rows, cols)
            img[i][(r2 > rmax**2)[0]] = 0
    return img


@pytest.mark.parametrize("shape, binning", [((48, 64), 1.5), ((40, 40), 1.0), ((50, 36), 2.0)])
def test_degrade_noise_free_matches_reference(shape, binning):
    from scipy.ndimage import gaussian_filter

    from kikuchipy_cnn.training.realism import degrade, random_realism_batch

    rng = np.random.default_rng(7)
    clean = gaussian_filter(rng.random((24, *shape)) * 2 - 0.1, (0, 2, 2)).astype(np.float32)
    params = random_realism_batch(24, rng)
    for q in params:
        q["hot_pixels"] = q["dead_pixels"] = 0
    params[0]["circular_mask"] = True
    params[1]["blur"] = 1.2
    ref = _degrade_reference(clean.copy(), params, binning)
    new = degrade(clean, params, rng, binning, noise=False)
    np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)


def test_degrade_noise_statistics():
    """Poisson counts and read noise: mean and variance as the model says,
    only inside ``region``, deterministic given the generator."""
    from kikuchipy_cnn.training.realism import degrade, random_realism

    rng = np.random.default_rng(0)
    prm = random_realism(rng)
    prm.update(gamma=1.0, blur=0.0, contrast=0.0, counts=400.0, read_noise=0.01, bg_sigma=100.0,
               bg_gradient=(0.0, 0.0), bg_floor=0.0, vignetting=0.0, circular_mask=False,
               hot_pixels=0, dead_pixels=0)  # fmt: skip
    clean = np.ones((8, 64, 96), np.float32)
    out = degrade(clean, [prm] * 8, np.random.default_rng(1), 1.0, region=(0, 64, 16, 80))
    inside, outside = out[:, :, 16:80], np.concatenate([out[:, :, :16], out[:, :, 80:]])
    flat = np.ones_like(inside)  # background ~1 everywhere (very wide Gaussian)
    np.testing.assert_allclose(outside, 1, atol=1e-3)  # noise-free there
    assert abs((inside - flat).mean()) < 3e-3
    assert abs(inside.var() / (1 / 400 + 0.01**2) - 1) < 0.05
    again = degrade(clean, [prm] * 8, np.random.default_rng(1), 1.0, region=(0, 64, 16, 80))
    assert np.array_equal(out, again)


@pytest.mark.parametrize("lam", [0.3, 4.0, 15.0, 80.0, 700.0, 9000.0])
def test_poisson_sampler_matches_distribution(lam):
    from scipy import stats

    from kikuchipy_cnn.training.realism import _sample_poisson

    x = _sample_poisson(np.full(200_000, lam), 11)
    ks = np.arange(int(max(0, lam - 6 * lam**0.5 - 2)), int(lam + 6 * lam**0.5 + 3))
    h = np.array([(x == k).sum() for k in ks])
    e = stats.poisson.pmf(ks, lam) * x.size
    m = e > 5
    chi2 = (((h[m] - e[m]) ** 2) / e[m]).sum()
    assert stats.chi2.sf(chi2, m.sum() - 1) > 1e-4


def test_normal_sampler_matches_distribution():
    from scipy import stats

    from kikuchipy_cnn.training.realism import _sample_normal

    z = _sample_normal(1_000_000, 5)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    edges = np.linspace(-4.5, 4.5, 181)
    h, _ = np.histogram(z, bins=edges)
    e = np.diff(stats.norm.cdf(edges)) * z.size
    m = e > 5
    chi2 = (((h[m] - e[m]) ** 2) / e[m]).sum()
    assert stats.chi2.sf(chi2, m.sum() - 1) > 1e-4
    tail = (np.abs(z) > 3.5).mean()
    assert abs(tail / (2 * stats.norm.sf(3.5)) - 1) < 0.1


def test_make_batch_masters_of_several_sizes():
    pytest.importorskip("kikuchipy")
    from kikuchipy_cnn.training.projection import MasterSet
    from kikuchipy_cnn.training.realism import make_batch

    rng = np.random.default_rng(4)
    masters = [1 + 0.1 * rng.random((2, n, n)) for n in (41, 33, 41, 25)]
    ms = MasterSet.from_arrays(masters, [0, 5, 22, 7])
    x, y, meta = make_batch(ms, 24, np.random.default_rng(2), per_detector=12, return_raw=True)
    assert x.shape == (24, 1, 64, 64) and meta["valid"].all() and np.isfinite(x).all()
    assert len(meta["raw"]) == 24
    x2, _, _ = make_batch(ms, 24, np.random.default_rng(2), per_detector=12, return_raw=True)
    assert np.array_equal(x, x2)
    for m, orig in zip(ms.masters, masters):  # stacking keeps the masters
        np.testing.assert_array_equal(m, orig)


def test_write_dataset_resumes_and_reports_coverage(master_set, tmp_path):
    pytest.importorskip("kikuchipy")
    h5py = pytest.importorskip("h5py")
    from kikuchipy_cnn.training import dataset

    meta = [{"id": f"m{i}", "space_group": sg} for i, sg in enumerate((2, 14, 225))]
    ms = type(master_set).from_arrays(master_set.masters, master_set.labels, meta)
    full, part = tmp_path / "full.h5", tmp_path / "part.h5"
    cov = dataset.write_dataset(full, "train", 300, None, seed=3, masters=ms, log=lambda m: None)
    assert cov == {"n": 300, "space_groups": 3, "joint_classes": 3}
    # an interrupted file (first chunk only) is completed identically
    dataset.write_dataset(part, "train", 300, None, seed=3, masters=ms, log=lambda m: None)
    with h5py.File(part, "a") as f:
        f.attrs["n_done"] = dataset.CHUNK
        f["x"][dataset.CHUNK :] = 0
    dataset.write_dataset(part, "train", 300, None, seed=3, masters=ms, log=lambda m: None)
    with h5py.File(full) as a, h5py.File(part) as b:
        np.testing.assert_array_equal(a["x"][:], b["x"][:])
        np.testing.assert_array_equal(a["y"][:], ms.labels[[int(i[1:]) for i in b["structure_id"].asstr()[:]]])
        assert set(a["space_group"][:]) == {2, 14, 225}
    with pytest.raises(ValueError, match="other settings"):
        dataset.write_dataset(full, "train", 300, None, seed=4, masters=ms)
