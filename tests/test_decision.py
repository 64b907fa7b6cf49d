"""One decision per pattern: the joint class, crystal system, Bravais lattice
and Laue class reported for a pattern are always those of one joint class."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from orix.crystal_map import Phase, PhaseList

import kikuchipy_cnn
from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS, build_crystal_map, labels
from kikuchipy_cnn.plotting import level_map, summary
from kikuchipy_cnn.symmetry import JOINT_CLASSES, LEVELS, joint_class_info, marginalise

CARD = SimpleNamespace(classes=JOINT_CLASSES, colours=[DEFAULT_COLOURS[c] for c in JOINT_CLASSES])

# Probabilities with exact ties and zeros as well as arbitrary values
_element = st.one_of(st.sampled_from([0.0, 0.05, 0.1, 0.5]), st.floats(0, 1))


@st.composite
def probability_rows(draw, max_rows=12):
    n = draw(st.integers(1, max_rows))
    raw = draw(hnp.arrays(np.float64, (n, len(JOINT_CLASSES)), elements=_element))
    raw[raw.sum(axis=1) == 0, 0] = 1.0
    return raw / raw.sum(axis=1, keepdims=True)


def _nickel_like() -> np.ndarray:
    """Joint argmax mC 2/m, but own argmaxes cubic (crystal system) and hP
    (Bravais lattice): the contradiction seen on a Ni pattern."""
    p = np.zeros(len(JOINT_CLASSES))
    p[JOINT_CLASSES.index("mC 2/m")] = 0.16
    for c in ("cP m-3", "cI m-3", "cF m-3", "cP m-3m", "cI m-3m", "cF m-3m"):
        p[JOINT_CLASSES.index(c)] = 0.09
    for c in ("hP -3", "hP -3m", "hP 6/m", "hP 6/mmm"):
        p[JOINT_CLASSES.index(c)] = 0.05
    p[JOINT_CLASSES.index("oP mmm")] = 0.10
    return p


def _map(probs, min_score=0.0, phase_list=None):
    n = len(probs)
    return build_crystal_map(
        probs.astype(np.float32), np.ones(n, bool), CARD, (n,), (1.0,), "um", min_score,
        None, phase_list,
    )


def _assert_one_class(lab):
    """Every pattern's levels are those of its joint class."""
    for i, joint in enumerate(lab["joint"]):
        if joint == "not classified":
            assert all(lab[level][i] == "not classified" for level in LEVELS)
            continue
        info = joint_class_info(str(joint))
        for level in LEVELS:
            assert lab[level][i] == info[level], (i, joint, level, lab[level][i])


def test_nickel_like_pattern_is_one_class():
    p = _nickel_like()
    own = {lv: marginalise(p, JOINT_CLASSES, lv).argmax() for lv in LEVELS}
    assert own["crystal_system"] == 6 and own["bravais_lattice"] == 10  # cubic, hP
    lab = labels(_map(p[None]))
    assert {k: str(v[0]) for k, v in lab.items()} == {
        "joint": "mC 2/m", "crystal_system": "monoclinic", "bravais_lattice": "mC",
        "laue_class": "2/m",
    }


@settings(max_examples=300, deadline=None)
@given(probability_rows())
def test_decide_is_one_class(p):
    d = kikuchipy_cnn.symmetry.decide(p, JOINT_CLASSES)
    np.testing.assert_array_equal(d.index, p.argmax(axis=1))
    assert list(d.labels["joint"]) == [JOINT_CLASSES[i] for i in d.index]
    _assert_one_class(d.labels)
    np.testing.assert_allclose(d.scores["joint"], p.max(axis=1))
    for level in LEVELS:
        # A level's score is the probability of the level's label: the sum over
        # the joint classes that share it
        same = np.array([[joint_class_info(c)[level] == lab for c in JOINT_CLASSES]
                         for lab in d.labels[level]])
        np.testing.assert_allclose(d.scores[level], (p * same).sum(axis=1), atol=1e-12)
        assert (d.scores[level] >= d.scores["joint"] - 1e-12).all()
        assert (d.scores[level] <= 1 + 1e-12).all()


@settings(max_examples=150, deadline=None)
@given(probability_rows(), st.lists(st.booleans(), min_size=23, max_size=23))
def test_decide_with_allowed_classes(p, allowed):
    allowed = np.array(allowed)
    if not allowed.any():
        with pytest.raises(ValueError, match="every class"):
            kikuchipy_cnn.symmetry.decide(p, JOINT_CLASSES, allowed)
        return
    d = kikuchipy_cnn.symmetry.decide(p, JOINT_CLASSES, allowed)
    assert allowed[d.index].all()
    _assert_one_class(d.labels)
    for i, row in enumerate(p):
        assert row[d.index[i]] == row[allowed].max()
    assert (d.scores["crystal_system"] <= 1 + 1e-9).all()


def test_decide_not_classified_rows():
    p = np.full((2, 23), 1 / 23)
    p[1, 3] = np.nan
    d = kikuchipy_cnn.symmetry.decide(p, JOINT_CLASSES)
    assert d.index[1] == -1 and d.index[0] == 0
    assert all(d.labels[k][1] == "not classified" for k in d.labels)
    assert all(np.isnan(d.scores[k][1]) for k in d.scores)
    with pytest.raises(ValueError, match="shape"):
        kikuchipy_cnn.symmetry.decide(p[:, :5], JOINT_CLASSES)


@settings(max_examples=100, deadline=None)
@given(probability_rows(), st.sampled_from([0.0, 0.2, 0.5]))
def test_map_labels_summary_and_level_maps_are_one_class(p, min_score):
    xmap = _map(p, min_score)
    lab = labels(xmap)
    _assert_one_class(lab)
    # The joint label is the phase wherever there is one
    has_phase = xmap.phase_id >= 0
    names = np.array([xmap.phases[int(i)].name for i in xmap.phase_id[has_phase]])
    np.testing.assert_array_equal(lab["joint"][has_phase], names)
    probs, _ = kikuchipy_cnn.probabilities(xmap)
    for level in LEVELS:
        # The stored level score is the probability of the level label
        m, names_l = kikuchipy_cnn.probabilities(xmap, level)
        expected = m[np.arange(len(m)), [names_l.index(v) for v in lab[level]]]
        np.testing.assert_allclose(xmap.prop[f"{level}_score"], expected, rtol=1e-5, atol=1e-6)
        # Level summaries count the same labels
        table = summary(xmap, level)
        assert {k: v["n"] for k, v in table.items()} == {
            str(k): int((lab[level] == k).sum()) for k in np.unique(lab[level])
        }
    # Level maps (plot_maps' panels) show the same labels
    for level in ("crystal_system", "bravais_lattice"):
        m = level_map(xmap, level)
        assert [m.phases[int(i)].name for i in m.phase_id] == list(lab[level])


@settings(max_examples=50, deadline=None)
@given(probability_rows())
def test_candidate_map_labels_are_the_candidates(p):
    p = (p + 1e-3) / (1 + 23e-3)  # a softmax is never exactly 0
    pl = PhaseList(names=["fe", "ni", "ti"], space_groups=[229, 225, 194])
    xmap = _map(p, min_score=0.3, phase_list=pl)
    lab = labels(xmap)
    _assert_one_class(lab)
    assert set(lab["joint"]) <= {"cI m-3m", "cF m-3m", "hP 6/mmm"}
    for pid, cls in ((0, "cI m-3m"), (1, "cF m-3m"), (2, "hP 6/mmm")):
        assert (lab["joint"][xmap.phase_id == pid] == cls).all()
    # Scores are over the candidates, renormalised: cubic + hexagonal = 1
    sys_score = xmap.prop["crystal_system_score"]
    cubic = lab["crystal_system"] == "cubic"
    cols = [JOINT_CLASSES.index(c) for c in ("cI m-3m", "cF m-3m")]
    expected = p[:, cols].sum(axis=1) / p[:, cols + [JOINT_CLASSES.index("hP 6/mmm")]].sum(axis=1)
    np.testing.assert_allclose(sys_score[cubic], expected[cubic], rtol=1e-4, atol=1e-6)
    assert pl[0].color == "tab:blue"  # the user's list is untouched


def test_cli_format_map_uses_the_decision():
    from kikuchipy_cnn.cli import format_map

    p = np.stack([_nickel_like()] * 4)
    xmap = build_crystal_map(p.astype(np.float32), np.ones(4, bool), CARD, (2, 2), (1.0, 1.0),
                             "um", 0.0, None)
    text = format_map(xmap, (2, 2))
    systems = text.split("Crystal systems:")[1]
    assert "monoclinic" in systems and "cubic" not in systems
    assert "mC 2/m" in text
