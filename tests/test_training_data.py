"""Fast tests of the training data engine."""

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


STRUCTURES = "/work/cache/kikuchipy_cnn/structures_seed0.json"


def test_all_classes_present_in_structure_list():
    import os

    if not os.path.exists(STRUCTURES):
        pytest.skip("no structure list generated")
    counts = st.class_counts(st.load_structures(STRUCTURES))
    for jc in JOINT_CLASSES:
        assert all(counts[jc][sp] > 0 for sp in st.SPLITS), jc


def test_disjoint_splits(small_set):
    counts = st.class_counts(small_set)
    for jc in ("mC 2/m", "hR -3m", "cI m-3m", "tP 4/m"):
        assert counts[jc] == {"train": 1, "val": 1, "test": 1}, jc
    ids = {sp: {s["id"] for s in small_set if s["split"] == sp} for sp in st.SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    keys = [str((s["lattice"], s["atoms"])) for s in small_set]
    assert len(set(keys)) == len(keys)  # no structure in two splits


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
