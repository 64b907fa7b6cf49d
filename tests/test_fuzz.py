"""Property-based tests: the preprocessing and classify_structure accept any
pattern shape, dtype, value range and navigation shape, and fail only with
the documented errors."""

import kikuchipy as kp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kikuchipy_cnn.preprocessing import preprocess

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64])


@st.composite
def pattern_arrays(draw, max_nav=4):
    dtype = draw(DTYPES)
    rows = draw(st.integers(2, 130))
    cols = draw(st.integers(2, 130))
    n = draw(st.integers(1, max_nav))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    else:
        elements = st.floats(allow_nan=True, allow_infinity=True, width=32)
    kind = draw(st.sampled_from(["random", "constant", "extreme"]))
    if kind == "random":
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        scale = draw(st.sampled_from([1e-30, 1.0, 255.0, 1e30]))
        a = rng.random((n, rows, cols)) * scale
        if np.issubdtype(dtype, np.integer):
            a = np.clip(a, np.iinfo(dtype).min, np.iinfo(dtype).max)
        a = a.astype(dtype)
    elif kind == "constant":
        a = np.full((n, rows, cols), draw(elements), dtype=dtype)
    else:
        a = draw(hnp.arrays(dtype, (n, rows, cols), elements=elements))
    return a


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern_arrays())
def test_preprocess_any_input(a):
    before = a.copy()
    x, valid = preprocess(a)
    assert x.shape == (a.shape[0], 1, 64, 64) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert (x[~valid] == 0).all()
    np.testing.assert_array_equal(a, before)
    finite = np.isfinite(a.astype(np.float64)).all(axis=(1, 2))
    assert not valid[~finite].any()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([(), (1,), (3,), (2, 2), (1, 3)]),
    st.integers(2, 90),
    st.integers(2, 90),
    DTYPES,
    st.booleans(),
)
def test_classify_any_signal(tiny_model, nav, rows, cols, dtype, lazy):
    rng = np.random.default_rng(rows * cols)
    data = (rng.random(nav + (rows, cols)) * 200).astype(dtype)
    s = kp.signals.EBSD(data)
    if lazy:
        s = s.as_lazy()
    xmap = s.classify_structure(model=tiny_model, min_score=0, verbose=0, show_progressbar=False)
    assert xmap.size == int(np.prod(nav))
    assert (xmap.phase_id >= -1).all()
