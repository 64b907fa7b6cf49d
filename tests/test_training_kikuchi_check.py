"""Training of the learned pattern check: data, augmentation, splits."""

import numpy as np
import pytest

pytest.importorskip("torch")


def test_natural_image_splits_are_disjoint_and_labelled():
    from kikuchipy_cnn.training.non_kikuchi import HELD_OUT_PHOTOS, TRAIN_PHOTOS, non_kikuchi

    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)
    kinds = {k for k, _ in non_kikuchi(seed=3, per_kind=4, photos="train")}
    assert "natural image" in kinds and not any("held out" in k for k in kinds)
    kinds = {k for k, _ in non_kikuchi(seed=3, per_kind=6, photos="all")}
    assert {"natural image (held out)", "natural image (seen in training)"} <= kinds


def test_augmentation_turns_and_mirrors_only():
    from kikuchipy_cnn.pattern_check import check_input
    from kikuchipy_cnn.training.kikuchi_check import _augment

    rng = np.random.default_rng(0)
    x = check_input(rng.random((4, 60, 60)))
    for seed in range(6):
        y = _augment(x, np.random.default_rng(seed))
        assert y.shape == x.shape and y.dtype == np.float32
        np.testing.assert_allclose(np.sort(y, axis=None), np.sort(x, axis=None))
        turned = [np.rot90(x, k, axes=(2, 3)) for k in range(4)]
        assert any(np.array_equal(y, t) or np.array_equal(y, t[..., ::-1]) for t in turned)


def test_model_output_is_a_probability_per_image():
    import torch

    from kikuchipy_cnn.training.kikuchi_check import build_model

    m = build_model().eval()
    with torch.no_grad():
        p = m(torch.zeros(3, 1, 64, 64)).numpy()
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
