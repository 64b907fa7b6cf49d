"""The model-independent pattern check: inputs that are not Kikuchi patterns
(noise, blank, tiny, saturated, a photograph) are not classified at the
default settings; real Kikuchi patterns pass the check."""

import warnings

import numpy as np
import pytest

import kikuchipy_cnn  # noqa: F401
from conftest import shared_data_dir
from kikuchipy_cnn.pattern_check import MIN_SIDE, check_patterns


def _non_kikuchi():
    rng = np.random.default_rng(42)
    from skimage.data import camera

    photo = camera()[100:340, 150:390].astype(np.uint8)
    yield "noise 3x3", rng.random((3, 3)).astype(np.float32)
    yield "noise 3x3 uint8", rng.integers(0, 256, (3, 3), dtype=np.uint8)
    yield "noise 20x20", rng.random((20, 20)).astype(np.float32)
    yield "white noise 60x60", rng.normal(100, 10, (60, 60)).astype(np.float32)
    yield "Poisson noise 120x120", rng.poisson(20, (120, 120)).astype(np.uint16)
    yield "blank", np.full((60, 60), 128, dtype=np.uint8)
    yield "saturated", np.minimum(rng.integers(0, 256, (60, 60)), 100).astype(np.uint8)
    yield "photo", photo


@pytest.mark.parametrize("name,image", list(_non_kikuchi()), ids=[n for n, _ in _non_kikuchi()])
def test_non_kikuchi_inputs_are_not_classified(name, image):
    import kikuchipy as kp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xmap = kp.signals.EBSD(image).classify_structure(verbose=0, show_progressbar=False)
    assert (xmap.phase_id == -1).all(), name
    expected = {"blank": 2, "saturated": 3}.get(name, 1 if min(image.shape) < MIN_SIDE else None)
    if expected is not None:  # rejected by the check itself, not only by min_score
        assert xmap.prop["kikuchi_check"][0] == expected
        assert np.isnan(xmap.prop["scores"][0])


def test_check_codes():
    rng = np.random.default_rng(0)
    assert check_patterns(rng.random((5, 5)))[0].tolist() == [1]
    assert check_patterns(np.zeros((2, 60, 60)))[0].tolist() == [2, 2]
    nan = np.full((60, 60), np.nan)
    assert check_patterns(nan)[0].tolist() == [2]
    sat = np.minimum(rng.random((60, 60)), 0.5)
    assert check_patterns(sat)[0].tolist() == [3]
    code, prob = check_patterns(rng.random((20, 60, 60)))
    assert (code == 4).all()
    assert np.isfinite(prob).all() and (prob < 0.2).all()
    assert np.isnan(check_patterns(np.zeros((60, 60)))[1]).all()  # decided by a rule


def test_kikuchipy_nickel_patterns_pass():
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    code, score = check_patterns(s.data.reshape(9, 60, 60), s.static_background)
    assert code.tolist() == [0] * 9
    xmap = s.classify_structure(verbose=0, show_progressbar=False, min_score=0)
    assert (xmap.phase_id != -1).all()
    np.testing.assert_array_equal(xmap.prop["kikuchi_check"], 0)


def test_check_eager_lazy_and_masked_agree():
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    data = s.data.astype(np.float32).copy()
    data[0, 1] = np.minimum(data[0, 1], np.quantile(data[0, 1], 0.5))  # saturated
    s2 = kp.signals.EBSD(data)
    s2.static_background = s.static_background
    mask = np.zeros((3, 3), bool)
    mask[2, 2] = True
    kw = dict(verbose=0, show_progressbar=False, min_score=0, navigation_mask=mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = s2.classify_structure(**kw)
        lazy = s2.as_lazy().classify_structure(**kw)
        off = s2.classify_structure(**kw, check=False)
    for xmap in (eager, lazy):
        check = xmap.get_map_data("kikuchi_check")
        assert check[0, 1] == 3 and np.isnan(check[2, 2])
        assert xmap.get_map_data("phase_id")[0, 1] == -1
        assert (np.delete(check.ravel(), [1, 8]) == 0).all()
    np.testing.assert_array_equal(eager.phase_id, lazy.phase_id)
    assert off.get_map_data("phase_id")[0, 1] != -1
    assert np.isnan(off.prop["kikuchi_check"]).all()


def test_shared_data_patterns_pass():
    from kikuchipy_cnn.training.real_data import load_cases

    cases = load_cases(shared_data_dir())
    codes = []
    for case in cases:
        s = case.signal
        bg = getattr(s, "static_background", None)
        if bg is not None and np.asarray(bg).shape != s.data.shape[-2:]:
            bg = None
        code, _ = check_patterns(s.data.reshape((-1,) + s.data.shape[-2:]), bg)
        codes.append(code)
        if case.kind == "exp":
            assert (code == 0).all(), case.path
    codes = np.concatenate(codes)
    assert (codes == 0).mean() >= 0.95


def test_saliency_is_zero_for_non_kikuchi_inputs():
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    data = s.data.astype(np.float32).copy()
    data[0, 0] = 7.0  # blank
    data[0, 1] = np.minimum(data[0, 1], np.quantile(data[0, 1], 0.5))  # saturated
    s2 = kp.signals.EBSD(data)
    s2.static_background = s.static_background
    sal = kikuchipy_cnn.get_saliency(s2, show_progressbar=False)
    assert sal.data[0, 0].max() == 0 and sal.data[0, 1].max() == 0
    assert sal.data[1, 1].max() > 0


def test_raw_patterns_pass_with_or_without_their_static_background():
    import warnings

    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    raw = kp.signals.EBSD(s.data.copy())  # raw, its static background not carried along
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        bare = raw.classify_structure(verbose=0, min_score=0)
        with_bg = s.classify_structure(verbose=0, min_score=0)
    assert (bare.prop["kikuchi_check"] == 0).all()  # before the learned check: all 4
    assert (with_bg.prop["kikuchi_check"] == 0).all()
    # what is rejected without a static background gets the fix named
    noise = kp.signals.EBSD(np.random.default_rng(1).normal(100, 5, (2, 60, 60)))
    with pytest.warns(RuntimeWarning, match="if these are raw patterns"):
        xmap = noise.classify_structure(verbose=0, min_score=0)
    assert (xmap.prop["kikuchi_check"] == 4).all()


def _held_out_images():
    """Images of kinds the learned check was trained on, but other draws and
    natural images it never saw (its training used TRAIN_PHOTOS only)."""
    from kikuchipy_cnn.training.non_kikuchi import HELD_OUT_PHOTOS, non_kikuchi

    wanted = {"natural image", "random thin lines", "random straight bands", "grid",
              "stripes", "diffraction spots", "ring pattern"}
    out = []
    for kind, img in non_kikuchi(seed=12345, per_kind=3, photos="held-out"):
        if kind in wanted and min(img.shape) >= 32:
            out.append((kind, img))
    assert set(HELD_OUT_PHOTOS)
    return out


def test_learned_check_rejects_lines_photos_and_diffraction_images():
    items = _held_out_images()
    codes = [check_patterns(img)[0][0] for _, img in items]
    kinds = [k for k, _ in items]
    assert len(items) >= 18
    # before the learned check, 53 % of random thin lines, 32 % of grids and
    # 8 % of photos passed; at most one of these may pass now
    passed = [k for k, c in zip(kinds, codes) if c == 0]
    assert len(passed) <= 1, passed


def test_check_input_is_what_training_uses():
    import inspect

    from kikuchipy_cnn.training import kikuchi_check

    src = inspect.getsource(kikuchi_check)
    assert "check_input(" in src and "def check_input" not in src
    from kikuchipy_cnn.pattern_check import CHECK_INPUT_SIZE, check_input

    x = check_input(np.random.default_rng(0).random((3, 70, 90)))
    assert x.shape == (3, 1, CHECK_INPUT_SIZE, CHECK_INPUT_SIZE) and x.dtype == np.float32
    inside = x[0, 0] != 0
    np.testing.assert_allclose(np.sqrt((x[:, 0][:, inside] ** 2).mean(axis=1)), 1, rtol=1e-4)


def test_bundled_check_weights_are_verified(tmp_path, monkeypatch):
    from kikuchipy_cnn import engine
    from kikuchipy_cnn.card import ModelCardError
    from kikuchipy_cnn.pattern_check import _check_model

    path, sha, threshold = _check_model()
    assert 0 < threshold <= 0.5
    bad = tmp_path / "model.onnx"
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match="sha256"):
        engine.run_auxiliary(bad, sha, np.zeros((1, 1, 64, 64), np.float32))


def test_bad_static_background_is_refused_with_the_fix_named():
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    data = s.data.reshape(9, 60, 60)
    bg = s.static_background.astype(np.float32)
    with pytest.raises(ValueError, match="does not match the pattern shape"):
        check_patterns(data, bg[:1])  # would broadcast to one number
    with pytest.raises(ValueError, match="does not match the pattern shape"):
        check_patterns(data, bg[:50, :50])
    for bad in (np.zeros_like(bg), np.where(np.arange(bg.size).reshape(bg.shape) == 7, np.nan, bg)):
        with pytest.raises(ValueError, match="finite with a positive mean"):
            check_patterns(data, bad)
    assert check_patterns(np.zeros((0, 60, 60)))[0].shape == (0,)
