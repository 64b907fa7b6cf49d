import kikuchipy as kp
import numpy as np
import pytest

from kikuchipy_cnn.preprocessing import Preprocessing, circular_mask, preprocess, resize


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(60, 60), (30, 40), (120, 90), (480, 640), (13, 13)])
def test_shapes_and_dtypes(dtype, shape):
    rng = np.random.default_rng(1)
    p = (rng.random((3,) + shape) * 200).astype(dtype)
    before = p.copy()
    x, valid = preprocess(p)
    assert x.shape == (3, 1, 64, 64) and x.dtype == np.float32
    assert valid.all()
    np.testing.assert_array_equal(p, before)  # input untouched
    m = circular_mask(64)
    np.testing.assert_allclose(x[:, 0][:, m].mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(x[:, 0][:, m].std(axis=1), 1, rtol=1e-3)
    assert (x[:, 0][:, ~m] == 0).all()


def test_bad_patterns_flagged():
    rng = np.random.default_rng(2)
    p = rng.random((5, 60, 60)).astype(np.float32)
    p[1, 3, 3] = np.nan
    p[2, 0, 0] = np.inf
    p[3] = 7.0
    x, valid = preprocess(p)
    assert valid.tolist() == [True, False, False, False, True]
    assert (x[~valid] == 0).all() and np.isfinite(x).all()


def test_invariant_to_affine_intensity_and_single_pattern():
    rng = np.random.default_rng(3)
    p = rng.random((60, 60))
    x1, _ = preprocess(p)
    x2, _ = preprocess(p * 1000 + 50)
    np.testing.assert_allclose(x1, x2, atol=1e-4)


def test_static_background_division():
    s = kp.data.nickel_ebsd_small()
    p = s.data.reshape(-1, 60, 60)
    x_bg, _ = preprocess(p, static_background=s.static_background)
    x, _ = preprocess(p)
    assert not np.allclose(x, x_bg)
    with pytest.raises(ValueError, match="does not match"):
        preprocess(p, static_background=np.ones((10, 10)))


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.zeros((2, 2, 60, 60)))
    with pytest.raises(TypeError, match="dtype"):
        preprocess(np.zeros((2, 60, 60), dtype=complex))
    with pytest.raises(ValueError, match="unknown|Unknown"):
        Preprocessing.from_dict({"size": 64, "blur": 3})


def test_resize_preserves_mean_and_recipe_roundtrip():
    rng = np.random.default_rng(4)
    a = rng.random((2, 240, 240)).astype(np.float32)
    np.testing.assert_allclose(resize(a, 64).mean(axis=(1, 2)), a.mean(axis=(1, 2)), rtol=1e-4)
    r = Preprocessing(size=96, high_pass_sigma=0)
    assert Preprocessing.from_dict(r.to_dict()) == r
    x, _ = preprocess(a, r)
    assert x.shape == (2, 1, 96, 96)
