import warnings

import dask.array as da
import hyperspy.api as hs
import kikuchipy as kp
import numpy as np
import pytest
from orix import io

import kikuchipy_cnn
from kikuchipy_cnn import labels, probabilities


@pytest.fixture
def ni():
    return kp.data.nickel_ebsd_small()


def _classify(s, model, **kw):
    kw.setdefault("verbose", 0)
    kw.setdefault("show_progressbar", False)
    # these tests are of the per-pattern map; pool="phases" is in test_phases.py
    kw.setdefault("pool", "none")
    return s.classify_structure(model=model, **kw)


def test_map_geometry_and_props(ni, tiny_model):
    before = ni.data.copy()
    xmap = _classify(ni, tiny_model, min_score=0)
    np.testing.assert_array_equal(ni.data, before)
    assert xmap.shape == (3, 3)
    assert xmap.scan_unit == "um"
    np.testing.assert_allclose(np.unique(xmap.x), [0, 1.5, 3])
    assert xmap.phases.ids[-1] == 22 and len(xmap.phases.ids) == 23
    assert xmap.phases[21].name == "cF m-3m" and xmap.phases[21].point_group.name == "m-3m"
    np.testing.assert_allclose(xmap.rotations.data, [[1, 0, 0, 0]] * 9)
    probs, names = probabilities(xmap)
    assert names == kikuchipy_cnn.JOINT_CLASSES
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(xmap.scores, probs.max(axis=1), rtol=1e-6)
    srt = np.sort(probs, axis=1)
    np.testing.assert_allclose(xmap.margin, srt[:, -1] - srt[:, -2], atol=1e-6)
    for level in ("crystal_system", "bravais_lattice", "laue_class"):
        # A level's score is the probability of the level's label (that of the
        # joint class), not the level's own maximum
        m, level_classes = probabilities(xmap, level)
        col = [level_classes.index(v) for v in labels(xmap)[level]]
        np.testing.assert_allclose(xmap.prop[f"{level}_score"], m[np.arange(9), col], rtol=1e-6)
        assert (xmap.prop[f"{level}_score"] >= xmap.scores - 1e-6).all()
    lab = labels(xmap)
    assert set(lab) == {"joint", "crystal_system", "bravais_lattice", "laue_class"}
    assert (lab["joint"] == np.array([xmap.phases[i].name for i in xmap.phase_id])).all()


def test_a_model_given_by_its_card_file(ni, tiny_card_path, tiny_model, tmp_path):
    from kikuchipy_cnn.card import ModelCardError

    by_path = ni.classify_structure(model=str(tiny_card_path), pool="none", verbose=0, show_progressbar=False)
    by_pathlib = ni.classify_structure(model=tiny_card_path, pool="none", verbose=0, show_progressbar=False)
    np.testing.assert_array_equal(probabilities(by_pathlib)[0], probabilities(by_path)[0])
    by_name = ni.classify_structure(model=tiny_model, pool="none", verbose=0, show_progressbar=False)
    np.testing.assert_array_equal(probabilities(by_path)[0], probabilities(by_name)[0])
    with pytest.raises(ModelCardError, match="does not exist"):
        ni.classify_structure(model=str(tmp_path / "card.yaml"), verbose=0)


def test_lazy_equals_eager(ni, tiny_model):
    x1 = _classify(ni, tiny_model)
    x2 = _classify(ni.as_lazy(), tiny_model)
    np.testing.assert_array_equal(x1.phase_id, x2.phase_id)
    np.testing.assert_allclose(x1.scores, x2.scores, rtol=1e-5)


def test_navigation_mask_and_min_score(ni, tiny_model):
    mask = np.zeros((3, 3), bool)
    mask[0, 1] = True
    xmap = _classify(ni, tiny_model, navigation_mask=mask, min_score=0)
    assert xmap.size == 8
    assert not xmap.is_in_data[1]
    xmap_all = _classify(ni, tiny_model, min_score=0)
    np.testing.assert_allclose(xmap.scores, np.delete(xmap_all.scores, 1), rtol=1e-6)
    high = _classify(ni, tiny_model, min_score=1.0)
    assert (high.phase_id == -1).all()
    assert "not_indexed" in high.phases.names


@pytest.mark.parametrize("nav", [(), (5,), (2, 3)])
def test_navigation_dimensions(tiny_model, nav):
    rng = np.random.default_rng(0)
    s = kp.signals.EBSD(rng.random(nav + (40, 30)).astype(np.float32))
    xmap = _classify(s, tiny_model, min_score=0)
    assert xmap.size == int(np.prod(nav))


def test_single_480_float_pattern(ni, tiny_model):
    from scipy.ndimage import zoom

    pattern = zoom(ni.data[1, 1].astype(np.float64), 8, order=1)  # one 480 x 480 float
    s = kp.signals.EBSD(pattern + np.random.default_rng(1).random(pattern.shape))
    xmap = _classify(s, tiny_model)
    assert xmap.size == 1 and np.isfinite(xmap.scores).all()
    assert xmap.prop["kikuchi_check"][0] == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64])
def test_dtypes(ni, tiny_model, dtype):
    s = kp.signals.EBSD(ni.data.astype(dtype))
    xmap = _classify(s, tiny_model, static_background=None)
    assert xmap.size == 9


def test_bad_patterns_not_classified(ni, tiny_model):
    data = ni.data.astype(np.float32)
    data[0, 0] = np.nan
    data[1, 1, 5, 5] = np.inf
    data[2, 2] = 3
    s = kp.signals.EBSD(data)
    with pytest.warns(RuntimeWarning, match="3 pattern"):
        # check=False: the unusable-pattern path itself (the pattern check would
        # also reject the 6 raw patterns, which have no static background here)
        xmap = _classify(s, tiny_model, min_score=0, check=False)
    pid = xmap.phase_id.reshape(3, 3)
    assert pid[0, 0] == pid[1, 1] == pid[2, 2] == -1
    assert (np.delete(xmap.phase_id, [0, 4, 8]) >= 0).all()
    assert labels(xmap)["joint"][0] == "not classified"
    assert np.isnan(s.data[0, 0]).all()  # untouched


def test_save_h5_and_ang(ni, tiny_model, tmp_path):
    xmap = _classify(ni, tiny_model)
    io.save(tmp_path / "m.h5", xmap)
    io.save(tmp_path / "m.ang", xmap)
    back = io.load(tmp_path / "m.h5")
    np.testing.assert_allclose(back.scores, xmap.scores)
    assert io.load(tmp_path / "m.ang").size == 9


def test_bad_inputs(ni, tiny_model):
    with pytest.raises(TypeError, match="EBSD or LazyEBSD"):
        kikuchipy_cnn.classify_structure(hs.signals.Signal2D(np.zeros((2, 60, 60))))
    with pytest.raises(TypeError, match="EBSD or LazyEBSD"):
        kikuchipy_cnn.classify_structure(np.zeros((60, 60)))
    s1d = kp.signals.EBSD(np.zeros((3, 60, 60))).as_signal1D(0)
    with pytest.raises(ValueError, match="signal dimension"):
        kikuchipy_cnn.classify_structure(s1d, model=tiny_model)
    with pytest.raises(ValueError, match="navigation mask shape"):
        _classify(ni, tiny_model, navigation_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="excludes every pattern"):
        _classify(ni, tiny_model, navigation_mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="boolean"):
        _classify(ni, tiny_model, navigation_mask=np.zeros((3, 3)))
    with pytest.raises(kikuchipy_cnn.UnknownModelError, match="Registered models"):
        _classify(ni, "nope")
    with pytest.raises(ValueError, match="min_score"):
        _classify(ni, tiny_model, min_score=2)
    with pytest.raises(ValueError, match="Static background shape"):
        _classify(ni, tiny_model, static_background=np.ones((5, 5)))
    s3 = kp.signals.EBSD(np.zeros((2, 2, 2, 10, 10)))
    with pytest.raises(ValueError, match="navigation dimensions"):
        _classify(s3, tiny_model)


def test_method_is_attached_and_not_overwriting(monkeypatch):
    from kikuchipy.signals import EBSD, LazyEBSD

    from kikuchipy_cnn import _attach

    assert hasattr(EBSD, "classify_structure") and hasattr(LazyEBSD, "classify_structure")
    assert EBSD.classify_structure.__doc__ == kikuchipy_cnn.classify_structure.__doc__
    sentinel = lambda self: "theirs"  # noqa: E731
    monkeypatch.setattr(EBSD, "classify_structure", sentinel)
    with pytest.warns(UserWarning, match="does not overwrite"):
        _attach.attach_methods()
    assert EBSD.classify_structure is sentinel


def test_warnings_of_the_signal_methods_point_at_the_callers_line(ni, tiny_model):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ni.classify_structure(model=tiny_model, verbose=0, show_progressbar=False)  # pooling defaults: warns
    assert caught and {w.filename for w in caught} == {__file__}
    assert any("no pooling settings" in str(w.message) for w in caught)
    # the user's filters still apply
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=".*no pooling settings")
        ni.classify_structure(model=tiny_model, verbose=0, show_progressbar=False)
    assert not [w for w in caught if "no pooling settings" in str(w.message)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="no pooling settings"):
            ni.classify_structure(model=tiny_model, verbose=0, show_progressbar=False)


def test_lazy_chunks_stream(tiny_model):
    """A lazy scan larger than one chunk is classified chunk by chunk."""
    data = da.random.random((40, 50, 60, 60), chunks=(10, 50, 60, 60)).astype(np.float32)
    s = kp.signals.LazyEBSD(data)
    xmap = _classify(s, tiny_model, batch_size=64)
    assert xmap.size == 2000


def test_distributed_matches_in_process(ni, tiny_card_path):
    distributed = pytest.importorskip("distributed")
    card = kikuchipy_cnn.ModelCard.from_file(tiny_card_path)
    x_local = _classify(ni, card)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        x_dist = _classify(ni.as_lazy(), card)
        x_again = _classify(ni.as_lazy(), card)
        pooled_dist = _classify(ni.as_lazy(), card, pool="phases", min_score=0)

        def n_sessions():
            from kikuchipy_cnn import engine

            return len(engine._sessions)

        per_worker = client.run(n_sessions)
    # one inference session per worker that ran tasks, reused by later tasks and runs
    assert set(per_worker.values()) <= {0, 1} and sum(per_worker.values()) >= 1
    np.testing.assert_array_equal(x_local.phase_id, x_again.phase_id)
    np.testing.assert_array_equal(x_local.phase_id, x_dist.phase_id)
    np.testing.assert_allclose(x_local.scores, x_dist.scores, rtol=1e-6)
    pooled = _classify(ni, card, pool="phases", min_score=0)
    np.testing.assert_array_equal(pooled.phase_id, pooled_dist.phase_id)
    np.testing.assert_array_equal(pooled.prop["grain_index"], pooled_dist.prop["grain_index"])
    np.testing.assert_allclose(pooled.pooled_phases.probabilities,
                               pooled_dist.pooled_phases.probabilities, rtol=1e-5)


def test_candidate_phases(ni, tiny_model):
    from orix.crystal_map import Phase, PhaseList

    pl = PhaseList(
        phases=[Phase(name="ni", space_group=225, color="lime"),
                Phase(name="fe", space_group=229, color="red")],
        ids=[3, 7],
    )
    xmap = _classify(ni, tiny_model, phase_list=pl, min_score=0)
    assert set(xmap.phase_id) <= {3, 7}
    assert xmap.phases[3].name == "ni" and xmap.phases[3].color == "lime"
    assert xmap.phases[7].space_group.number == 229
    probs, names = probabilities(xmap)
    p = probs[:, [names.index("cF m-3m"), names.index("cI m-3m")]]
    p = p / p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(xmap.scores, p.max(axis=1), rtol=1e-5)
    expect = np.where(p[:, 0] >= p[:, 1], 3, 7)
    np.testing.assert_array_equal(xmap.phase_id, expect)


def test_candidate_phases_in_one_class_and_bad(ni, tiny_model):
    from orix.crystal_map import Phase, PhaseList

    pl = PhaseList(phases=[Phase(name="al", space_group=225), Phase(name="cu", space_group=225),
                           Phase(name="fe", space_group=229)])
    with pytest.warns(UserWarning, match="cannot tell them apart"):
        xmap = _classify(ni, tiny_model, phase_list=pl, min_score=0)
    assert 1 not in xmap.phase_id
    with pytest.raises(ValueError, match="no space group"):
        _classify(ni, tiny_model, phase_list=PhaseList(Phase(name="x", point_group="m-3m")))


@pytest.mark.parametrize("provider, expected", [("CPUExecutionProvider", 256),
                                                ("CUDAExecutionProvider", 4096)])
def test_default_batch_size_follows_the_device(ni, tiny_model, monkeypatch, provider, expected):
    from kikuchipy_cnn import engine

    seen = []
    real_run = engine.InferenceSession.run

    def spy(self, x, outputs=("probabilities",), batch_size=256):
        seen.append(batch_size)
        return real_run(self, x, outputs, batch_size)

    monkeypatch.setattr(engine.InferenceSession, "run", spy)
    monkeypatch.setattr(engine.InferenceSession, "provider", property(lambda self: provider))
    _classify(ni, tiny_model)
    assert seen and set(seen) == {expected}
    seen.clear()
    _classify(ni, tiny_model, batch_size=3)  # an explicit size wins
    assert set(seen) == {3}


def _mean_per_pattern(patterns, excluded, calls):
    calls.append(len(patterns))
    out = patterns.reshape(len(patterns), -1).mean(axis=1).astype(np.float32)
    out[excluded] = np.nan
    return out[:, None]


def test_lazy_blocks_kept_and_worked_through_in_steps(monkeypatch):
    """A lazy scan's stored blocks are mapped one task each (no splitting
    into many small tasks that dask would read far ahead), and each block is
    worked through in steps."""
    import dask.array as da

    from kikuchipy_cnn import _chunks

    rng = np.random.default_rng(0)
    data = rng.random((6, 50, 8, 8)).astype(np.float32)
    mask = np.zeros((6, 50), bool)
    mask[2, 7] = True
    lazy = da.from_array(data, chunks=(2, 50, 8, 8))  # blocks of 100 patterns
    monkeypatch.setattr(_chunks, "_chunk_patterns", lambda n_pixels, batch: 30)
    calls = []
    out = _chunks.map_patterns(lazy, (6, 50), _mean_per_pattern, (1,), mask, 30, calls=calls)
    assert out.numblocks[0] == 3
    got = _chunks.compute(out, False)[:, 0]
    expect = data.reshape(300, -1).mean(axis=1)
    expect[2 * 50 + 7] = np.nan
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    assert sorted(calls) == sorted([30, 30, 30, 10] * 3)
    # blocks above the limit are split
    monkeypatch.setattr(_chunks, "MAX_BLOCK_BYTES", 100 * 8 * 8 * 4 - 1)
    out = _chunks.map_patterns(lazy, (6, 50), _mean_per_pattern, (1,), mask, 30, calls=[])
    assert out.numblocks[0] > 3
    np.testing.assert_allclose(_chunks.compute(out, False)[:, 0], expect, rtol=1e-6)
