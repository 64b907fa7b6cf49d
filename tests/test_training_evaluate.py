"""The evaluation report: every level's accuracy, ECE, confusion matrix and
accuracy vs coverage."""

import json

import numpy as np

from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training.evaluate import LEVELS, _title, metrics, write_report


def _one_hot(names, conf=1.0):
    p = np.full((len(names), len(JOINT_CLASSES)), (1 - conf) / (len(JOINT_CLASSES) - 1))
    for i, n in enumerate(names):
        p[i, JOINT_CLASSES.index(n)] = conf
    return p


def test_metrics_per_level_marginalise_the_joint_class():
    # Three cF m-3m right, one cI m-3m called cF m-3m: wrong lattice, right
    # crystal system and Laue class
    probs = _one_hot(["cF m-3m"] * 4)
    m = metrics(probs, ["cF m-3m"] * 3 + ["cI m-3m"])
    assert m["n"] == 4
    assert m["joint"]["accuracy"] == m["bravais_lattice"]["accuracy"] == 0.75
    assert m["crystal_system"]["accuracy"] == m["laue_class"]["accuracy"] == 1.0
    np.testing.assert_allclose(m["joint"]["ece"], 0.25, atol=1e-6)
    np.testing.assert_allclose(m["crystal_system"]["ece"], 0.0, atol=1e-6)
    cm = np.array(m["bravais_lattice"]["confusion"])
    names = m["bravais_lattice"]["names"]
    assert cm.sum() == 4 and cm[names.index("cI"), names.index("cF")] == 1
    # Coverage: at min_score 0.9 every pattern is kept (confidence 1)
    assert [c["coverage"] for c in m["joint"]["coverage"]] == [1.0] * 5


def test_coverage_drops_uncertain_patterns():
    probs = np.vstack([_one_hot(["tP 4/mmm"], 0.95), _one_hot(["tP 4/mmm"], 0.4)])
    m = metrics(probs, ["tP 4/mmm", "cP m-3m"])
    cov = {c["min_score"]: c for c in m["joint"]["coverage"]}
    assert cov[0.0]["coverage"] == 1.0 and cov[0.0]["accuracy"] == 0.5
    assert cov[0.5]["coverage"] == 0.5 and cov[0.5]["accuracy"] == 1.0


def test_report_has_every_level(tmp_path):
    probs = _one_hot(["cF m-3m", "hP 6/mmm"], 0.6)
    results = {"x. toy": metrics(probs, ["cF m-3m", "hP -3m"])}
    out = tmp_path / "ev.md"
    write_report(results, {"x. toy": [("p1", "sim", "cF m-3m", "cF m-3m", 0.6, True, True)]},
                 out, "toy", 1.0)
    text = out.read_text()
    for level in LEVELS:
        assert f"Confusion matrix ({_title(level)})" in text
    assert "Confusion matrix (Laue class)" in text
    assert "## Expected calibration error per level" in text
    assert "Accuracy vs coverage per level" in text
    assert "| p1 | sim | cF m-3m | cF m-3m | 0.600 | True | True |" in text
    back = json.loads(out.with_suffix(".json").read_text())
    assert back["x. toy"]["laue_class"]["accuracy"] == 0.5
