"""Band-set training data: format, frames, reflector bands, both sources and
the error-model fit (kikuchipy_cnn.training.band_sets)."""

from __future__ import annotations

import numpy as np
import pytest

from kikuchipy_cnn.training import band_sets as bs

CU = {
    "id": "test-cu", "lattice": [3.615, 3.615, 3.615, 90, 90, 90], "space_group": 225,
    "joint_class": "cF m-3m", "split": "val",
    "atoms": [["Cu", [0, 0, 0]], ["Cu", [0.5, 0.5, 0]], ["Cu", [0.5, 0, 0.5]], ["Cu", [0, 0.5, 0.5]]],
}  # fmt: skip
SN = {
    "id": "test-tp", "lattice": [3.2, 3.2, 4.9, 90, 90, 90], "space_group": 123,
    "joint_class": "tP 4/mmm", "split": "val",
    "atoms": [["Sn", [0, 0, 0]], ["Cu", [0.5, 0.5, 0.5]]],
}  # fmt: skip


def _model(error_deg=0.0, spurious=0.0, found=1.0, ratio=1.0):
    q = len(bs.QUANTILES)
    group = {
        "found": found, "spurious": spurious, "error_deg": [error_deg] * q,
        "width_measured": 1.0, "width_ratio": [ratio] * q, "spurious_width_measured": 0.0,
        "spurious_width_rad": None, "strength_rel": list(np.linspace(0.3, 1, q)), "contrast": [0.5] * q,
    }  # fmt: skip
    bins = [{"strength_max": [1.0] * q, "groups": [dict(group) for _ in bs.RANK_GROUPS[:-1]]}
            for _ in bs.SIZE_BINS[:-1]]  # fmt: skip
    return {"bins": bins, "selection": {"beta": 1.0, "sigma": 0.5}}


def test_save_load_round_trip_atomic_and_no_overwrite(tmp_path):
    a = bs.empty_arrays(3)
    a["normals"][:] = [0, 0, 1]
    a["valid"][:, :5] = True
    a["structure_id"][:] = "s1-00001"
    a["source"][:] = "reflectors"
    a["label"][:] = [0, 5, 22]
    path = bs.save_band_sets(tmp_path / "reflectors_val.npz", a, {"seed": 3})
    b, meta = bs.load_band_sets(path)
    assert meta["seed"] == 3 and meta["k"] == bs.K == 24 and meta["n"] == 3
    for k in bs.FIELDS:
        np.testing.assert_array_equal(a[k], b[k])
    assert b["normals"].dtype == np.float32 and b["valid"].dtype == bool
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reflectors_val.json", "reflectors_val.npz"]
    with pytest.raises(FileExistsError, match="overwrite"):
        bs.save_band_sets(path, a, {})
    bs.save_band_sets(path, a, {"seed": 4}, overwrite=True)
    assert bs.load_band_sets(path)[1]["seed"] == 4
    a["width"] = a["width"][:, :10]
    with pytest.raises(ValueError, match="width"):
        bs.save_band_sets(tmp_path / "x.npz", a, {})


def test_crystal_to_detector_is_the_inverse_of_the_band_tests_convention():
    # tests/test_bands.py: rot * to_sample_frame(n_detector, det) is in the crystal frame
    import kikuchipy as kp
    from orix.quaternion import Rotation
    from orix.vector import Vector3d

    from kikuchipy_cnn.bands import to_sample_frame
    from kikuchipy_cnn.training.projection import random_quaternions

    rng = np.random.default_rng(0)
    q = random_quaternions(1, rng)[0]
    det = kp.detectors.EBSDDetector(shape=(60, 60), pc=(0.5, 0.4, 0.6), sample_tilt=68.0, tilt=7.0)
    n_c = rng.normal(size=(5, 3))
    n_c /= np.linalg.norm(n_c, axis=1, keepdims=True)
    n_d = n_c @ bs.crystal_to_detector(q, 68.0, 7.0)
    back = (Rotation(q) * Vector3d(to_sample_frame(n_d, det))).data
    np.testing.assert_allclose(back, n_c, atol=1e-9)


def test_gnomonic_matrix_and_pc_change_keep_the_screen_line():
    from kikuchipy_cnn.bands import pixel_directions

    shape, pc_a, pc_b = (30, 40), (0.45, 0.3, 0.6), (0.52, 0.27, 0.66)
    r = pixel_directions(shape, pc_a)
    uv = np.array([(7.5 / 40, 3.5 / 30, 1.0)])
    g = uv @ bs._gnomonic_matrix(shape, pc_a).T
    np.testing.assert_allclose(g / np.linalg.norm(g), r[3:4, 7], atol=1e-12)
    # a band through two screen points, seen with two pattern centres
    pts = np.array([[0.1, 0.2, 1], [0.8, 0.9, 1]])
    ga, gb = pts @ bs._gnomonic_matrix(shape, pc_a).T, pts @ bs._gnomonic_matrix(shape, pc_b).T
    na, nb = np.cross(ga[0], ga[1]), np.cross(gb[0], gb[1])
    moved = bs.change_pc(na / np.linalg.norm(na), shape, pc_a, pc_b)
    assert abs(abs(moved @ nb) / np.linalg.norm(nb) - 1) < 1e-12


def test_trace_visible():
    shape, pc = (60, 80), (0.5, 0.4, 0.6)
    # planes through the pattern centre's direction cross the screen; the plane z = 0 never does
    n = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 1], [0.01, 0, 1]], float)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    np.testing.assert_array_equal(bs.trace_visible(n, shape, pc), [True, True, True, False, False])


def test_band_reflectors_of_fcc_are_one_per_plane_with_the_lowest_strong_order():
    refl = bs.band_reflectors(CU, dmin=0.6)
    n = refl["normals"]
    assert np.all(np.diff(refl["f2"]) <= 0) and refl["f2"][0] == 1.0
    cos = np.abs(n @ n.T)
    assert (cos[np.triu_indices(len(n), 1)] < 1 - 1e-9).all()  # one band per direction
    h = np.abs(refl["hkl"])
    d111 = refl["d"][(h == 1).all(1)]
    d200 = refl["d"][(np.sort(h, 1) == [0, 0, 1]).all(1)]
    assert len(d111) == 4 and len(d200) == 3
    np.testing.assert_allclose(d111, 3.615 / np.sqrt(3), rtol=1e-6)
    np.testing.assert_allclose(d200, 3.615 / 2, rtol=1e-6)  # 100 is extinct: 200 is the band


def test_reflector_band_sets_exact_model_and_its_fit():
    rng = np.random.default_rng(1)
    settings = bs.default_settings("reflectors")
    a = bs.reflector_band_sets([CU, SN], 6, _model(), rng, settings)
    assert a["normals"].shape == (12, 24, 3) and a["valid"].all()
    assert set(a["label"]) == {bs.JOINT_CLASSES.index("cF m-3m"), bs.JOINT_CLASSES.index("tP 4/mmm")}
    np.testing.assert_allclose(np.linalg.norm(a["normals"], axis=-1), 1, atol=1e-6)
    assert np.nanmax(a["match_angle"]) < 1e-3  # no noise: the bands are reflector bands
    for i in range(12):
        assert bs.trace_visible(a["normals"][i], tuple(a["shape"][i]), a["pc"][i]).all()
    tt = bs._two_theta(a["wavelength"][:, None], a["match_d"])
    px = 1 / (a["true_pc"][:, 2:3] * a["shape"][:, :1])
    ok = tt >= bs.MIN_WIDTH_PX * px
    np.testing.assert_allclose(a["width"][ok], tt[ok], rtol=1e-5)
    assert np.isnan(a["width"][~ok]).all()
    assert (np.diff(a["strength"], axis=1) <= 0).all() and 10 <= a["energy"].min() <= a["energy"].max() <= 30
    fit = bs.fit_error_model(a)
    g = [g for b in fit["bins"] for g in b["groups"] if g["n_bands"]]
    assert all(x["spurious"] == 0 and x["found"] == 1 and x["error_deg"][10] < 1e-3 for x in g)
    assert all(abs(x["width_ratio"][10] - 1) < 1e-3 for x in g if x["width_ratio"])


def test_reflector_band_sets_noise_spurious_and_pc_error():
    settings = {**bs.default_settings("reflectors"), "pc_fraction": 1.0, "sigma_pc": 0.02}
    a = bs.reflector_band_sets([CU], 20, _model(error_deg=0.3, spurious=0.3, found=0.5, ratio=0.9),
                               np.random.default_rng(2), settings)  # fmt: skip
    assert 0.4 < a["valid"].mean() < 0.6
    assert (np.abs(a["pc"] - a["true_pc"]) > 0).any(1).all()
    ang = np.degrees(a["match_angle"][a["valid"]])
    assert np.isnan(a["match_angle"][~a["valid"]]).all()
    # fcc bands are sparse: spurious bands are mostly > 2 deg from every band
    assert 0.1 < (ang > 2).mean() < 0.4
    # with the true PC the noise is the model's; the PC error adds to it
    assert np.median(ang[ang < 2]) > 0.3


def test_rendered_strong_bands_land_on_strong_reflectors(tmp_path):
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet

    masters = MasterSet(DEFAULT_CACHE, "val", limit=1)
    structures = bs.structure_index()
    rng = np.random.default_rng(3)
    settings = {**bs.default_settings("rendered"), "clean_fraction": 1.0}
    items = bs._rendered_items(masters, 3, rng, settings)
    for it in items:
        it["shape"] = (120, 120)
    a = bs.render_band_sets(masters, structures, items, rng)
    assert a["structure_id"][0] == masters.meta[0]["id"] and a["source"][0] == "rendered"
    assert a["energy"][0] == pytest.approx(masters.meta[0]["energy_kev"])
    ang = np.degrees(a["match_angle"][:, :4])
    assert np.median(ang) < 0.4 and (ang < 1).mean() >= 0.8
    assert np.mean(a["match_f2"][:, :4] > 0.05) >= 0.8
    # the wrong way round (crystal -> sample) matches nothing
    wrong = []
    for i, it in enumerate(items):
        q = np.array(it["quaternion"]) * [1, -1, -1, -1]
        refl = bs.band_reflectors(structures[masters.meta[0]["id"]], float(a["dmin"][i]))
        nd, vis = bs._visible_reflectors(refl, bs.crystal_to_detector(q, *it["tilts"]), (120, 120), it["true_pc"])
        wrong.append(bs.match_bands(a["normals"][i, :4].astype(float), a["valid"][i, :4], nd[vis])[0])
    assert np.median(np.degrees(wrong)) > 3 * np.median(ang)


def test_generate_writes_once_and_resumes(tmp_path):
    kw = {"limit": 3, "error_model": _model(), "shard_size": 2}
    path = bs.generate("reflectors", "test", 2, tmp_path, seed=5, log=None, **kw)
    a, meta = bs.load_band_sets(path)
    assert len(a["label"]) == 6 and meta["source"] == "reflectors" and meta["seed"] == 5
    assert meta["error_model"]["selection"]["beta"] == 1.0 and "git_commit" in meta["code_version"]
    assert not (tmp_path / ".parts").exists()
    with pytest.raises(FileExistsError):
        bs.generate("reflectors", "test", 2, tmp_path, seed=5, log=None, **kw)
    again = bs.generate("reflectors", "test", 2, tmp_path, seed=5, overwrite=True, log=None, **kw)
    b, _ = bs.load_band_sets(again)
    np.testing.assert_array_equal(a["normals"], b["normals"])  # seeded


def test_rendered_band_sets_from_kinematical_masters_on_the_command_line(tmp_path):
    """``--masters-dir`` renders any master folder (here a kinematical master,
    whose dmin is stored in Å, not nm as de-ebsd's)."""
    from kikuchipy_cnn.training.kinematical import structure_master
    from kikuchipy_cnn.training.master_patterns import TRAINING_DATA, master_path, save_master
    from kikuchipy_cnn.training.structures import load_structures

    s = next(x for x in load_structures(TRAINING_DATA / "structures_seed1.json", "test")
             if x["joint_class"] == "cF m-3m" and x["n_atoms"] <= 8)  # fmt: skip
    data, meta = structure_master(s, npx=48)
    save_master(master_path(tmp_path / "masters", s), data, meta)
    out = tmp_path / "sets"
    bs.main(["--source", "rendered", "--split", "test", "--n", "2", "--seed", "1",
             "--masters-dir", str(tmp_path / "masters"), "--out", str(out)])  # fmt: skip
    a, settings = bs.load_band_sets(out / "rendered_test.npz")
    assert settings["masters_dir"] == str(tmp_path / "masters") and settings["n_masters"] == 1
    assert list(a["structure_id"]) == [s["id"]] * 2
    np.testing.assert_allclose(a["dmin"], meta["dmin_A"], rtol=1e-6)
    ang = np.degrees(a["match_angle"][:, :4])
    assert np.median(ang) < 1.0
    # the stored sets' patterns can be rendered again from their settings (same
    # draws, same shards): their bands come out the same
    from kikuchipy_cnn.bands import detect_bands
    from kikuchipy_cnn.training.projection import MasterSet

    masters = MasterSet(tmp_path / "masters", "test")
    items, shards = bs.rendered_plan(masters, 2, bs.split_rng(1, "rendered", "test"), settings)
    order = [j for shard in shards for j in shard]
    np.testing.assert_allclose([items[j]["quaternion"] for j in order], a["quaternion"])
    normals = []
    for si, shard in enumerate(shards):  # one shape per shard
        pats = bs.render_patterns(masters, [items[j] for j in shard], bs.split_rng(1, "rendered", "test", si))
        normals.append(detect_bands(pats, np.array([items[j]["pc"] for j in shard]), n_bands=bs.K).normals)
    np.testing.assert_allclose(np.concatenate(normals)[a["valid"]], a["normals"][a["valid"]], atol=1e-6)
