import numpy as np
import pytest

from kikuchipy_cnn.symmetry import (
    BRAVAIS_LATTICES,
    CRYSTAL_SYSTEMS,
    JOINT_CLASSES,
    LAUE_CLASSES,
    joint_class_info,
    marginalise,
    space_group_class,
)


def test_230_groups_against_spglib():
    spglib = pytest.importorskip("spglib")
    seen = {}
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        seen.setdefault(t.number, t)
    assert len(seen) == 230
    point_to_laue = {
        "1": "-1", "-1": "-1", "2": "2/m", "m": "2/m", "2/m": "2/m",
        "222": "mmm", "mm2": "mmm", "mmm": "mmm",
        "4": "4/m", "-4": "4/m", "4/m": "4/m",
        "422": "4/mmm", "4mm": "4/mmm", "-42m": "4/mmm", "4/mmm": "4/mmm",
        "3": "-3", "-3": "-3", "32": "-3m", "3m": "-3m", "-3m": "-3m",
        "6": "6/m", "-6": "6/m", "6/m": "6/m",
        "622": "6/mmm", "6mm": "6/mmm", "-62m": "6/mmm", "-6m2": "6/mmm", "6/mmm": "6/mmm",
        "23": "m-3", "m-3": "m-3", "432": "m-3m", "-43m": "m-3m", "m-3m": "m-3m",
    }  # fmt: skip
    for n, t in seen.items():
        c = space_group_class(n)
        assert c.centring == t.international_short[0], n
        assert c.laue_class == point_to_laue[t.pointgroup_international], n
        assert c.joint_class == f"{c.bravais_lattice} {c.laue_class}"
        assert c.crystal_system in CRYSTAL_SYSTEMS
        assert c.bravais_lattice in BRAVAIS_LATTICES


@pytest.mark.parametrize(
    "number, expected",
    [
        (1, ("triclinic", "aP", "-1", "aP -1")),
        (14, ("monoclinic", "mP", "2/m", "mP 2/m")),
        (15, ("monoclinic", "mC", "2/m", "mC 2/m")),
        (38, ("orthorhombic", "oC", "mmm", "oC mmm")),  # A-centred -> C
        (70, ("orthorhombic", "oF", "mmm", "oF mmm")),
        (139, ("tetragonal", "tI", "4/mmm", "tI 4/mmm")),
        (147, ("trigonal", "hP", "-3", "hP -3")),
        (166, ("trigonal", "hR", "-3m", "hR -3m")),
        (194, ("hexagonal", "hP", "6/mmm", "hP 6/mmm")),
        (204, ("cubic", "cI", "m-3", "cI m-3")),
        (225, ("cubic", "cF", "m-3m", "cF m-3m")),
        (227, ("cubic", "cF", "m-3m", "cF m-3m")),
        (229, ("cubic", "cI", "m-3m", "cI m-3m")),
    ],
)
def test_known_groups(number, expected):
    c = space_group_class(number)
    assert (c.crystal_system, c.bravais_lattice, c.laue_class, c.joint_class) == expected


def test_class_counts():
    assert len(JOINT_CLASSES) == 23
    assert len(BRAVAIS_LATTICES) == 14
    assert len(LAUE_CLASSES) == 11
    assert len(CRYSTAL_SYSTEMS) == 7
    assert {joint_class_info(c)["bravais_lattice"] for c in JOINT_CLASSES} == set(BRAVAIS_LATTICES)
    assert {joint_class_info(c)["laue_class"] for c in JOINT_CLASSES} == set(LAUE_CLASSES)
    for c in JOINT_CLASSES:
        info = joint_class_info(c)
        assert space_group_class(info["representative_space_group"]).joint_class == c


@pytest.mark.parametrize("bad", [0, 231, -1])
def test_bad_numbers(bad):
    with pytest.raises(ValueError, match="1-230"):
        space_group_class(bad)


@pytest.mark.parametrize("bad", [2.0, "225", True, None])
def test_bad_types(bad):
    with pytest.raises(TypeError, match="integer"):
        space_group_class(bad)


def test_unknown_joint_class():
    with pytest.raises(ValueError, match="known classes"):
        joint_class_info("cF 6/mmm")


def test_marginalise_sums_and_is_consistent():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(23), size=50)
    for level, n in (("crystal_system", 7), ("bravais_lattice", 14), ("laue_class", 11)):
        m = marginalise(p, JOINT_CLASSES, level)
        assert m.shape == (50, n)
        np.testing.assert_allclose(m.sum(axis=1), 1, rtol=1e-6)
    one = np.zeros((1, 23))
    one[0, JOINT_CLASSES.index("hR -3m")] = 1
    assert marginalise(one, JOINT_CLASSES, "crystal_system")[0, CRYSTAL_SYSTEMS.index("trigonal")] == 1
    assert marginalise(one, JOINT_CLASSES, "bravais_lattice")[0, BRAVAIS_LATTICES.index("hR")] == 1
    with pytest.raises(ValueError, match="entries"):
        marginalise(p[:, :5], JOINT_CLASSES, "laue_class")
    with pytest.raises(ValueError, match="Unknown level"):
        marginalise(p, JOINT_CLASSES, "point_group")
