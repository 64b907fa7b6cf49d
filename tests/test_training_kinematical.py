import numpy as np
import pytest

pytest.importorskip("diffsims")

from kikuchipy_cnn.training.kinematical import (  # noqa: E402
    kinematical_master_pattern,
    lambert_directions,
    reflectors,
)

HCP = {"lattice": [3.21, 3.21, 5.21, 90, 90, 120],
       "atoms": [["Zn", [1 / 3, 2 / 3, 0.25]], ["Zn", [2 / 3, 1 / 3, 0.75]]]}
FCC = {"lattice": [3.6] * 3 + [90] * 3,
       "atoms": [["Cu", [0, 0, 0]], ["Cu", [0.5, 0.5, 0]], ["Cu", [0.5, 0, 0.5]], ["Cu", [0, 0.5, 0.5]]]}
BCC = {"lattice": [2.87] * 3 + [90] * 3, "atoms": [["Cr", [0, 0, 0]], ["Cr", [0.5, 0.5, 0.5]]]}


def _f(structure):
    hkl, _, (d, F) = reflectors(structure, dmin=0.5, min_intensity=0)
    return {tuple(int(i) for i in h): abs(f) for h, f in zip(hkl, F)}


def test_systematic_absences():
    f = _f(HCP)
    assert f[(0, 0, 1)] < 1e-8 and f[(0, 0, 2)] > 1
    f = _f(FCC)
    assert f[(1, 0, 0)] < 1e-8 and f[(1, 1, 0)] < 1e-8 and f[(1, 1, 1)] > 1 and f[(2, 0, 0)] > 1
    f = _f(BCC)
    assert f[(1, 0, 0)] < 1e-8 and f[(1, 1, 1)] < 1e-8 and f[(1, 1, 0)] > 1


def test_lowercase_element_names_are_not_zero():
    lower = {"lattice": BCC["lattice"], "atoms": [["cr", [0, 0, 0]], ["cr", [0.5, 0.5, 0.5]]]}
    assert _f(lower)[(1, 1, 0)] == pytest.approx(_f(BCC)[(1, 1, 0)])


def test_layout_matches_kikuchipy_projection():
    """A master holding each direction's x, y or z projects (identity
    orientation) onto the detector's direction cosines of the same axis."""
    from kikuchipy.detectors import EBSDDetector
    from kikuchipy.signals.util._master_pattern import _get_direction_cosines_from_detector

    from kikuchipy_cnn.training.projection import project

    det = EBSDDetector(shape=(30, 30), pc=(0.5, 0.45, 0.6), sample_tilt=70)
    dc = np.ascontiguousarray(_get_direction_cosines_from_detector(det)).reshape(-1, 3)
    grid = lambert_directions(32)
    for comp in range(3):
        p = project(np.ascontiguousarray(grid[..., comp] + 2), np.array([[1.0, 0, 0, 0]]), dc, (30, 30))
        assert np.corrcoef(p.ravel(), dc[:, comp])[0, 1] > 0.999


def test_master_symmetry_and_determinism():
    m = kinematical_master_pattern(FCC, 20, 32, 0.6)
    assert m.shape == (2, 65, 65) and np.isfinite(m).all() and m.max() > 0
    # m-3m: mirror x <-> y (transpose of the Lambert square) and z -> -z
    np.testing.assert_allclose(m[0], m[0].T, rtol=1e-5, atol=1e-4 * m.max())
    np.testing.assert_allclose(m[0], m[1], rtol=1e-5, atol=1e-4 * m.max())
    np.testing.assert_array_equal(m, kinematical_master_pattern(FCC, 20, 32, 0.6))
    h = kinematical_master_pattern(HCP, 20, 32, 0.6)
    # hexagonal cell: 6-fold about z is not a symmetry of the square grid, but
    # the mirror z -> -z is (6/mmm)
    np.testing.assert_allclose(h[0], h[1], rtol=1e-5, atol=1e-4 * h.max())


def test_band_features_match_dense_binning():
    from kikuchipy_cnn.training.band_profile import EDGES, EXPONENTS, band_features
    from kikuchipy_cnn.training.kinematical import wavelength

    X = band_features(BCC, 16, 20.0)
    _, normals, (d, F) = reflectors(BCC, dmin=0.5)
    x = np.abs(lambert_directions(16).reshape(-1, 3) @ normals.T) / (wavelength(20.0) / (2 * d))
    b = np.digitize(x, EDGES) - 1
    for e, p in enumerate(EXPONENTS):
        dense = np.stack([((b == k) * np.abs(F) ** p).sum(1) for k in range(len(EDGES) - 1)], 1)
        np.testing.assert_allclose(X[e], dense, rtol=1e-10, atol=1e-8)


def test_profile_table_and_fitted_master():
    from kikuchipy_cnn.training.band_profile import EDGES, profile_table

    profile = {"edges": EDGES.tolist(), "profile": [1.0] * 4 + [-1.0] * 8, "exponent": 2.0}
    t = profile_table(profile)
    assert t[0] == 1 and t[-1] == 0 and t[int(0.5 * 128)] == 1 and t[int(1.8 * 128)] == -1
    m = kinematical_master_pattern(FCC, 20, 32, 0.6, band_profile=profile, relative_contrast=0.2)
    assert m.shape == (2, 65, 65) and (m == 0).mean() < 0.01  # hardly any clipping
    assert abs(m.mean() - 1) < 0.02 and abs(m.std() - 0.2) < 0.02
    # the band profile keeps the crystal's symmetry (m-3m) and is deterministic
    np.testing.assert_allclose(m[0], m[0].T, atol=1e-5)
    np.testing.assert_allclose(m[0], m[1], atol=1e-5)
    np.testing.assert_array_equal(m, kinematical_master_pattern(
        FCC, 20, 32, 0.6, band_profile=profile, relative_contrast=0.2))


def test_stored_band_profile_is_closer_to_dynamical_masters():
    """The committed profile has dark flanks outside the band edges, and on
    validation structures (never used by the fit) its kinematical masters
    correlate better with the dynamical masters than kinematical steps do."""
    from kikuchipy_cnn.training.band_profile import _dynamical_pairs, _ncc, load_profile

    profile = load_profile()
    values = dict(zip(profile["edges"][1:], profile["profile"]))
    assert max(profile["profile"][:4]) > 0 and values[1.25] < 0 and values[1.5] < 0
    assert profile["comparison"]["fitted"]["median"] > profile["comparison"]["step"]["median"] + 0.1
    fit_ids = set(profile["structures"])
    gain = []
    for s, data, meta in _dynamical_pairs("val", 4):
        assert meta["id"] not in fit_ids
        kw = dict(energy_kev=meta["energy_kev"], npx=meta["npx"], dmin=0.5)
        step = kinematical_master_pattern(s, **kw)
        fitted = kinematical_master_pattern(s, band_profile=profile, **kw)
        gain.append(_ncc(fitted, data) - _ncc(step, data))
    # 53 of the 54 val/test structures of the stored comparison improved
    assert gain, "no committed dynamical val master patterns found"
    assert np.mean(gain) > 0.1 and sum(g > 0 for g in gain) >= 3


def test_run_writes_fitted_and_step_masters_and_resumes(tmp_path):
    import io
    import json

    from kikuchipy_cnn.training.band_profile import STRUCTURE_FILES
    from kikuchipy_cnn.training.kinematical import run
    from kikuchipy_cnn.training.master_patterns import load_master
    from kikuchipy_cnn.training.structures import load_structures

    small = [s for s in load_structures(STRUCTURE_FILES[1]) if s["n_atoms"] <= 4][:2]
    path = tmp_path / "structures.json"
    path.write_text(json.dumps({"version": 1, "structures": small}))
    for profile in ("fitted", "step"):
        out = tmp_path / profile
        run(path, out, npx=16, band_profile=profile, log=io.StringIO())
        files = sorted(out.glob("*/*.npz"))
        assert len(files) == 2
        data, meta = load_master(files[0])
        assert meta["band_profile"] == profile and data.shape == (2, 33, 33)
        if profile == "fitted":
            assert abs(data.mean() - 1) < 0.05
        log = io.StringIO()
        run(path, out, npx=16, band_profile=profile, log=log)  # resumes: nothing left to do
        assert log.getvalue() == ""
    with pytest.raises(ValueError, match="band_profile must be"):
        run(path, tmp_path / "x", band_profile="smooth")


def test_command_line_ids_simulate_only_the_listed_structures(tmp_path):
    import json

    from kikuchipy_cnn.training.band_profile import STRUCTURE_FILES
    from kikuchipy_cnn.training.kinematical import main
    from kikuchipy_cnn.training.structures import load_structures

    small = [s for s in load_structures(STRUCTURE_FILES[1]) if s["n_atoms"] <= 4][:3]
    path = tmp_path / "structures.json"
    path.write_text(json.dumps({"version": 1, "structures": small}))
    (tmp_path / "ids.txt").write_text(f"{small[0]['id']}\n{small[2]['id']}\n")
    main(["--structures", str(path), "--out", str(tmp_path / "out"), "--npx", "16",
          "--ids", str(tmp_path / "ids.txt")])  # fmt: skip
    assert sorted(f.stem for f in (tmp_path / "out").glob("*/*.npz")) == sorted([small[0]["id"], small[2]["id"]])
