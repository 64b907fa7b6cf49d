"""Pooled crystal maps (classify_structure(pool="phases")) built from given
probabilities and discovered phases: what the user sees never contradicts
itself."""

import numpy as np
import pytest

import kikuchipy_cnn
from kikuchipy_cnn.crystal_map import build_pooled_crystal_map, decision
from kikuchipy_cnn.phases import PhaseDiscovery
from kikuchipy_cnn.symmetry import JOINT_CLASSES, LEVELS

CF, HP = JOINT_CLASSES.index("cF m-3m"), JOINT_CLASSES.index("hP 6/mmm")


@pytest.fixture
def card(tiny_model):
    from kikuchipy_cnn.classify import resolve_model

    return resolve_model(tiny_model)


def _one_phase_one_dissenter():
    """Six patterns of one discovered phase (two grains), pooled class cF;
    the last pattern's own most probable class is hP."""
    probs = np.full((6, 23), 0.01)
    probs[:, CF] = 0.5
    probs[5, HP] = 0.9
    probs /= probs.sum(1, keepdims=True)
    disc = PhaseDiscovery(grain=np.array([0, 0, 0, 1, 1, 1]), phase=np.zeros(6, int),
                          n_grains=2, n_phases=1, split_r2=[])
    return probs, disc


def _pooled(probs, disc, card, min_score=0.0, phase_list=None):
    n = len(probs)
    return build_pooled_crystal_map(probs, np.ones(n, bool), disc, card, (2, n // 2), (1.0, 1.0),
                                    "um", min_score, None, phase_list, tempering=0.75)


def test_scores_are_those_of_the_assigned_class_and_never_above_a_levels(card):
    probs, disc = _one_phase_one_dissenter()
    xmap = _pooled(probs, disc, card)
    assert (xmap.phase_id == 0).all() and xmap.phases[0].name == "cF m-3m"
    # the score of the class each pattern is assigned, the margin from it
    np.testing.assert_allclose(xmap.scores, probs[:, CF], rtol=1e-6)
    others = np.delete(probs, CF, axis=1).max(1)
    np.testing.assert_allclose(xmap.prop["margin"], probs[:, CF] - others, rtol=1e-5, atol=1e-7)
    assert xmap.prop["margin"][5] < 0  # the pattern itself prefers hP
    # the pattern's own top probability is kept apart
    np.testing.assert_allclose(xmap.prop["pattern_score"], probs.max(1), rtol=1e-6)
    dec = decision(xmap)
    np.testing.assert_allclose(dec.scores["joint"], xmap.scores, rtol=1e-6)
    for level in LEVELS:
        assert (xmap.prop[f"{level}_score"] >= xmap.scores - 1e-6).all()
        np.testing.assert_allclose(xmap.prop[f"{level}_score"], dec.scores[level], rtol=1e-6)
    joint = kikuchipy_cnn.summary(xmap)["cF m-3m"]["mean_score"]
    for level in LEVELS:
        (entry,) = kikuchipy_cnn.summary(xmap, level).values()
        assert entry["mean_score"] >= joint - 1e-6
