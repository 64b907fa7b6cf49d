"""The real validation patterns of ../shared/data (cases.tsv) load from the raw
files and classify through classify_structure()."""

import numpy as np

import kikuchipy_cnn
from conftest import shared_data_dir


def test_every_shared_case_classifies():
    from kikuchipy_cnn.training.real_data import load_cases

    cases = load_cases(shared_data_dir())
    assert len(cases) >= 100
    kinds = {c.kind for c in cases}
    assert kinds == {"exp", "sim"}
    for case in cases:
        before = np.array(case.signal.data, copy=True)
        xmap = case.signal.classify_structure(min_score=0, verbose=0, show_progressbar=False)
        probs, names = kikuchipy_cnn.probabilities(xmap)
        assert np.isfinite(probs).all(), case.path
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
        lab = kikuchipy_cnn.labels(xmap)
        assert set(lab["crystal_system"]) <= {"triclinic", "monoclinic", "orthorhombic",
                                              "tetragonal", "trigonal", "hexagonal", "cubic"}
        np.testing.assert_array_equal(case.signal.data, before)
