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


def test_below_min_score_a_pattern_is_its_own_decision_at_every_level(card):
    from kikuchipy_cnn.symmetry import decide

    probs, disc = _one_phase_one_dissenter()
    # two phases: phase 0 (cF, the dissenter among them) above min_score,
    # phase 1 (patterns 6-9, cF by a little, two of them hP on their own) below
    weak = np.full((4, 23), 0.02)
    weak[:, CF] = 0.3
    weak[2:, HP] = 0.32
    weak /= weak.sum(1, keepdims=True)
    probs = np.concatenate([probs, weak])
    disc = PhaseDiscovery(grain=np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3]),
                          phase=np.array([0] * 6 + [1] * 4), n_grains=4, n_phases=2,
                          split_r2=[])
    xmap = _pooled(probs, disc, card, min_score=0.7)
    pp = xmap.pooled_phases
    assert pp.scores[0] >= 0.7 > pp.scores[1] and pp.names == ["cF m-3m (1)", "cF m-3m (2)"]
    assert xmap.phase_id.tolist() == [0] * 6 + [-1] * 4
    own = decide(probs, JOINT_CLASSES)
    want = ["cF m-3m"] * 6 + [JOINT_CLASSES[i] for i in own.index[6:]]
    assert want[8:] == ["hP 6/mmm"] * 2
    dec = decision(xmap)
    assert dec.labels["joint"].tolist() == want
    assert kikuchipy_cnn.labels(xmap)["crystal_system"].tolist() == (
        ["cubic"] * 8 + ["hexagonal"] * 2)
    # the map's scores are those of the same classes
    np.testing.assert_allclose(xmap.scores, dec.scores["joint"], rtol=1e-6)
    np.testing.assert_allclose(xmap.scores[6:], probs[6:].max(1), rtol=1e-6)
    for level in LEVELS:
        np.testing.assert_allclose(xmap.prop[f"{level}_score"], dec.scores[level], rtol=1e-6)
    # every phase below min_score: every pattern its own decision
    xmap = _pooled(probs, disc, card, min_score=1.0)
    assert (xmap.phase_id == -1).all()
    dec = decision(xmap)
    assert dec.labels["joint"].tolist() == [JOINT_CLASSES[i] for i in own.index]
    assert dec.labels["joint"][5] == "hP 6/mmm"
    for level in LEVELS:
        np.testing.assert_allclose(xmap.prop[f"{level}_score"], dec.scores[level], rtol=1e-6)
    np.testing.assert_allclose(xmap.scores, probs.max(1), rtol=1e-6)


def test_a_map_whose_only_phase_is_below_min_score_saves_and_reads_back(card, tmp_path):
    from orix import io

    from kikuchipy_cnn.io import save_crystal_map

    probs, disc = _one_phase_one_dissenter()
    xmap = _pooled(probs, disc, card, min_score=1.0)
    assert (xmap.phase_id == -1).all()
    assert xmap.pooled_phases.phase_ids.tolist() == [-1]
    # the discovered phase stays in the phase list, as build_crystal_map keeps every class
    assert xmap.phases.ids == [-1, 0] and xmap.phases[0].name == "cF m-3m"
    for name in ("only.ang", "only.h5"):
        written = save_crystal_map(xmap, tmp_path / name)
        assert written
        for path in written:
            back = io.load(path)  # orix drops the phases no point has
            assert back.size == 6 and (back.phase_id == -1).all()
    assert "MaterialName    cF m-3m" in (tmp_path / "only.ang").read_text()
    back = io.load(tmp_path / "only.h5")
    np.testing.assert_array_equal(back.prop["phase_index"], 0)
    np.testing.assert_allclose(back.scores, xmap.scores)


@pytest.mark.parametrize("pooled", [False, True])
def test_candidates_named_like_classes_stay_candidates(card, pooled):
    from orix.crystal_map import Phase, PhaseList

    from kikuchipy_cnn.crystal_map import build_crystal_map

    ci = JOINT_CLASSES.index("cI m-3m")
    probs = np.full((4, 23), 0.01)
    probs[:, HP] = 0.8  # most probable: hP, no candidate's class
    probs[:2, CF] = 0.1
    probs[2:, ci] = 0.1
    probs /= probs.sum(1, keepdims=True)
    disc = PhaseDiscovery(grain=np.arange(4), phase=np.arange(4), n_grains=4, n_phases=4,
                          split_r2=[])
    results = []
    for names in (("Ni", "Fe"), ("cF m-3m", "cI m-3m")):
        pl = PhaseList([Phase(name=names[0], space_group=225), Phase(name=names[1], space_group=229)])
        if pooled:
            xmap = _pooled(probs, disc, card, min_score=0.99, phase_list=pl)
        else:
            xmap = build_crystal_map(probs, np.ones(4, bool), card, (4,), (1.0,), "um", 0.99,
                                     None, pl)
        assert (xmap.phase_id == -1).all()
        dec = decision(xmap)
        assert dec.labels["joint"].tolist() == ["cF m-3m"] * 2 + ["cI m-3m"] * 2
        np.testing.assert_allclose(dec.scores["joint"], xmap.scores, rtol=1e-6)
        results.append(kikuchipy_cnn.labels(xmap)["joint"].tolist())
    assert results[0] == results[1]


def test_phases_are_numbered_only_among_the_listed_phases_sharing_a_class(card, tmp_path):
    from orix import io

    from kikuchipy_cnn.io import save_crystal_map

    # four discovered phases: cF (strong), cF (weak), hP (strong), cI (weak)
    ci = JOINT_CLASSES.index("cI m-3m")
    probs = np.full((8, 23), 0.01)
    probs[0:2, CF] = 0.9
    probs[2:4, CF] = 0.2
    probs[4:6, HP] = 0.9
    probs[6:8, ci] = 0.2
    probs /= probs.sum(1, keepdims=True)
    phase = np.repeat(np.arange(4), 2)
    disc = PhaseDiscovery(grain=phase.copy(), phase=phase, n_grains=4, n_phases=4, split_r2=[])
    xmap = _pooled(probs, disc, card, min_score=0.8)
    strong = xmap.pooled_phases.scores >= 0.8
    assert strong.tolist() == [True, False, True, False]
    # every discovered phase is listed, the weak ones too: the two cF phases are
    # told apart in the list, the others are not numbered
    assert xmap.phases.names == ["not_indexed", "cF m-3m (1)", "cF m-3m (2)", "hP 6/mmm", "cI m-3m"]
    assert xmap.pooled_phases.names == xmap.phases.names[1:]
    assert xmap.phase_id.tolist() == [0, 0, -1, -1, 2, 2, -1, -1]
    save_crystal_map(xmap, tmp_path / "m.ang")
    back = io.load(tmp_path / "m.ang.h5")
    assert [back.phases[i].name for i in (0, 2)] == ["cF m-3m (1)", "hP 6/mmm"]


def test_a_phase_pools_its_grains_not_its_patterns(card):
    """A large grain that disagrees with many small ones does not outvote them:
    each grain is one orientation, one piece of evidence."""
    probs = np.full((12, 23), 0.01)
    probs[:8, HP] = 0.6  # one grain of 8 patterns says hP
    probs[8:, CF] = 0.8  # four grains of 1 pattern say cF
    probs /= probs.sum(1, keepdims=True)
    grain = np.array([0] * 8 + [1, 2, 3, 4])
    disc = PhaseDiscovery(grain=grain, phase=np.zeros(12, int), n_grains=5, n_phases=1, split_r2=[])
    xmap = _pooled(probs, disc, card)
    assert xmap.phases[0].name == "cF m-3m"
    pp = xmap.pooled_phases
    assert pp.n_grains.tolist() == [5] and pp.n_patterns.tolist() == [12]
