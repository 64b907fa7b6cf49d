"""Crystal maps written by kikuchipy_cnn.io: safe paths, atomic writes, and
formats that orix reads back with the same names, ids and properties."""

import hashlib
import os

import kikuchipy as kp
import numpy as np
import pytest
from orix import io
from orix.crystal_map import Phase, PhaseList

from kikuchipy_cnn import io as kio
from kikuchipy_cnn.io import check_output, save_crystal_map, sidecar_path


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def phase_names(xmap) -> list[str]:
    """Phase name of every point in data."""
    return [xmap.phases[int(i)].name for i in xmap.phase_id]


def ang_rows(path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2)


def assert_same_map(xmap, loaded):
    """``loaded`` holds the same points, ids, names and properties."""
    assert loaded.size == xmap.size
    np.testing.assert_array_equal(loaded.is_in_data, xmap.is_in_data)
    np.testing.assert_array_equal(loaded.phase_id, xmap.phase_id)
    assert phase_names(loaded) == phase_names(xmap)
    for pid, phase in xmap.phases_in_data:
        assert loaded.phases[pid].name == phase.name
        for attr in ("space_group", "point_group"):
            a, b = getattr(loaded.phases[pid], attr), getattr(phase, attr)
            assert str(a) == str(b)
    assert set(xmap.prop) <= set(loaded.prop)
    for name in xmap.prop:
        np.testing.assert_array_equal(loaded.prop[name], xmap.prop[name], err_msg=name)


def assert_same_ang_map(xmap, loaded):
    """An .ang reloaded by orix: every grid point (masked ones not
    classified), the map's own phase ids and names, scores as CI."""
    in_data = xmap.is_in_data
    assert loaded.size == in_data.size
    ids = np.full(in_data.size, -1)
    ids[in_data] = xmap.phase_id
    np.testing.assert_array_equal(loaded.phase_id, ids)
    assert [n for n, keep in zip(phase_names(loaded), in_data) if keep] == phase_names(xmap)
    ci = np.full(in_data.size, -1.0)
    ci[in_data] = np.where(xmap.phase_id >= 0, xmap.prop["scores"], -1)
    np.testing.assert_allclose(loaded.prop["ci"], ci, atol=1e-5)


@pytest.fixture(scope="module")
def ni():
    return kp.data.nickel_ebsd_small()


def classify(signal, model, **kw):
    kw.setdefault("pool", "none")  # per-pattern scores: maps with classified and unclassified points
    return signal.classify_structure(model=model, verbose=0, show_progressbar=False, **kw)


def mixed_map(signal, model, **kw):
    """A map with classified, unclassified (below min_score) and masked
    points."""
    mask = np.zeros(signal.axes_manager.navigation_shape[::-1], dtype=bool)
    mask.flat[1] = True
    scores = classify(signal, model, min_score=0, navigation_mask=mask, **kw).prop["scores"]
    threshold = float(np.median(scores))
    xmap = classify(signal, model, min_score=threshold, navigation_mask=mask, **kw)
    assert (xmap.phase_id == -1).any() and (xmap.phase_id >= 0).any()
    return xmap


@pytest.mark.parametrize("min_score", [0, 1], ids=["classified", "not-classified"])
def test_one_pattern_round_trips_through_h5_and_ang(ni, tiny_model, tmp_path, min_score):
    xmap = classify(ni.inav[0, 0], tiny_model, min_score=min_score)
    assert xmap.size == 1 and (xmap.phase_id[0] == -1) == (min_score == 1)
    assert save_crystal_map(xmap, tmp_path / "one.h5") == [tmp_path / "one.h5"]
    assert_same_map(xmap, io.load(tmp_path / "one.h5"))

    paths = save_crystal_map(xmap, tmp_path / "one.ang")
    assert paths == [tmp_path / "one.ang", tmp_path / "one.ang.h5"]
    # orix's .ang reader cannot read a one-row file (np.loadtxt squeezes
    # it); the row is right, and the complete map is in the sidecar
    row = ang_rows(tmp_path / "one.ang")
    assert row.shape == (1, 10) and row[0, 7] == xmap.phase_id[0]
    header = (tmp_path / "one.ang").read_text()
    for pid, phase in xmap.phases:
        if pid >= 0:
            assert f"# Phase {pid}\n# MaterialName    {phase.name}\n" in header
    assert_same_map(xmap, io.load(sidecar_path(tmp_path / "one.ang")))


def test_map_with_unclassified_and_masked_points_round_trips(ni, tiny_model, tmp_path):
    xmap = mixed_map(ni, tiny_model)
    save_crystal_map(xmap, tmp_path / "map.h5")
    assert_same_map(xmap, io.load(tmp_path / "map.h5"))
    save_crystal_map(xmap, tmp_path / "map.ang")
    loaded = io.load(tmp_path / "map.ang")
    assert_same_ang_map(xmap, loaded)
    assert loaded.shape == (3, 3)
    assert_same_map(xmap, io.load(tmp_path / "map.ang.h5"))


def test_one_row_map_round_trips(ni, tiny_model, tmp_path):
    xmap = mixed_map(ni.inav[:, 0], tiny_model)  # navigation shape (3,)
    save_crystal_map(xmap, tmp_path / "row.h5")
    assert_same_map(xmap, io.load(tmp_path / "row.h5"))
    save_crystal_map(xmap, tmp_path / "row.ang")
    assert_same_ang_map(xmap, io.load(tmp_path / "row.ang"))


def test_user_phase_list_keeps_ids_and_names(ni, tiny_model, tmp_path):
    phases = PhaseList(
        phases={3: Phase("ni", space_group=225), 7: Phase("alpha Fe", space_group=229)}
    )
    xmap = mixed_map(ni, tiny_model, phase_list=phases)
    assert set(xmap.phase_id) - {-1} <= {3, 7}
    for ext in (".h5", ".ang"):
        save_crystal_map(xmap, tmp_path / f"pl{ext}")
    assert_same_map(xmap, io.load(tmp_path / "pl.h5"))
    assert_same_ang_map(xmap, io.load(tmp_path / "pl.ang"))
    assert_same_map(xmap, io.load(tmp_path / "pl.ang.h5"))


@pytest.fixture
def small_map(ni, tiny_model):
    return classify(ni, tiny_model, min_score=0)


def test_existing_output_is_kept_unless_overwrite(small_map, tmp_path):
    out = tmp_path / "map.h5"
    out.write_bytes(b"not a crystal map")
    before = md5(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_crystal_map(small_map, out)
    assert md5(out) == before
    save_crystal_map(small_map, out, overwrite=True)
    assert io.load(out).size == 9
    # .ang writes a sidecar: an existing sidecar is protected too
    sidecar = tmp_path / "map2.ang.h5"
    sidecar.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="map2.ang.h5"):
        save_crystal_map(small_map, tmp_path / "map2.ang")
    assert sidecar.read_bytes() == b"keep me" and not (tmp_path / "map2.ang").exists()


def test_inputs_are_never_written(small_map, ni, tmp_path):
    src = tmp_path / "patterns.h5"
    ni.save(src)
    before = md5(src)
    os.symlink(src, tmp_path / "link.h5")
    os.link(src, tmp_path / "hard.h5")
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "sub" / ".." / "patterns.h5", tmp_path / "link.h5",
                tmp_path / "hard.h5"):
        with pytest.raises(ValueError, match="is the input file"):
            save_crystal_map(small_map, out, overwrite=True, inputs=[src])
    # nor as the sidecar of an .ang
    with pytest.raises(ValueError, match="is the input file"):
        save_crystal_map(small_map, tmp_path / "x.ang", overwrite=True,
                         inputs=[tmp_path / "x.ang.h5"])
    assert md5(src) == before


def test_missing_folder_is_reported_before_writing(small_map, tmp_path):
    out = tmp_path / "nodir" / "sub" / "out.h5"
    with pytest.raises(FileNotFoundError, match="does not exist.*mkdir -p"):
        check_output(out)
    with pytest.raises(FileNotFoundError, match="nodir"):
        save_crystal_map(small_map, out)
    assert not (tmp_path / "nodir").exists()
    (tmp_path / "d.h5").mkdir()
    with pytest.raises(IsADirectoryError, match="give a file name"):
        save_crystal_map(small_map, tmp_path / "d.h5", overwrite=True)
    with pytest.raises(ValueError, match=r"\.h5 or \.ang"):
        check_output(tmp_path / "map.txt")


def test_unwritable_folder_is_reported(small_map, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with permission to write anywhere (root)")
        with pytest.raises(PermissionError, match="write permission"):
            save_crystal_map(small_map, folder / "map.h5")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("ext", [".h5", ".ang"])
def test_interrupted_write_leaves_no_partial_file(small_map, tmp_path, monkeypatch, ext):
    out = tmp_path / f"map{ext}"
    save_crystal_map(small_map, out)
    before = {p.name: md5(p) for p in tmp_path.iterdir()}

    def interrupted(xmap, filename, final=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(kio, "_write_h5", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_crystal_map(small_map, out, overwrite=True)
    # the previous files are untouched and no temporary file is left
    assert {p.name: md5(p) for p in tmp_path.iterdir()} == before
    assert io.load(out).size == 9
