"""classify_structure with a band model: the signal's detector and beam energy
reach the features; eager == lazy; masks; geometry warnings and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kikuchipy as kp

from kikuchipy_cnn.bands import detect_bands, electron_wavelength
from kikuchipy_cnn.card import ModelCard
from kikuchipy_cnn.features import band_features


@pytest.fixture(scope="module")
def ni():
    return kp.data.nickel_ebsd_small()


def test_band_model_card(tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    assert card.input_kind == "bands" and card.band_settings["n_bands"] == 16
    assert "band features" in card.summary()


def test_probabilities_are_those_of_the_features_with_the_signals_geometry(ni, tiny_band_card_path):
    import onnxruntime as ort

    card = ModelCard.from_file(tiny_band_card_path)
    xmap = ni.classify_structure(model=card, verbose=0, min_score=0, pool="none")
    assert xmap.size == 9
    # the same features by hand: static background divided out, per-pattern PCs, 20 kV
    x = ni.data.reshape(9, 60, 60).astype(np.float32)
    bg = ni.static_background.astype(np.float32)
    x = x / np.maximum(bg / bg.mean(), 0.01)
    pcs = ni.detector.pc.reshape(-1, 3)
    f = band_features(detect_bands(x, pcs, n_bands=16), electron_wavelength(20), 1 / (pcs[:, 2] * 60))
    sess = ort.InferenceSession(str(card.weights_path), providers=["CPUExecutionProvider"])
    p = sess.run(["probabilities"], {"features": f})[0]
    np.testing.assert_allclose(xmap.scores, p.max(1), atol=1e-5)
    assert [xmap.phases[int(i)].name for i in xmap.phase_id] == [card.classes[j] for j in p.argmax(1)]


def test_lazy_equals_eager_and_masks(ni, tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    kw = dict(model=card, verbose=0, min_score=0, pool="none")  # per pattern (pooled masks: test_phases)
    eager = ni.classify_structure(**kw)
    lazy = ni.as_lazy().classify_structure(**kw)
    np.testing.assert_allclose(eager.scores, lazy.scores, atol=1e-6)
    mask = np.zeros((3, 3), bool)
    mask[1, 2] = True
    masked = ni.classify_structure(navigation_mask=mask, **kw)
    keep = ~mask.ravel()
    assert masked.scores.size == 8  # the masked point is not in the data
    np.testing.assert_allclose(masked.scores, eager.scores[keep], atol=1e-6)


def test_default_geometry_and_missing_energy_warn(tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    s = kp.signals.EBSD(kp.data.nickel_ebsd_small().data.astype(np.float32))  # no detector, no energy
    with pytest.warns(UserWarning) as rec:
        s.classify_structure(model=card, verbose=0, min_score=0, static_background=None)
    text = " ".join(str(r.message) for r in rec)
    assert "default pattern centre" in text and "beam energy" in text


def test_saliency_of_a_band_model_is_refused_before_the_work(ni, tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    with pytest.raises(ValueError, match="gives no saliency maps"):
        ni.classify_structure(model=card, verbose=0, return_saliency=True)
    with pytest.raises(ValueError, match="does not support saliency"):
        ni.get_saliency(model=card, show_progressbar=False)


# pc= of classify_structure: an override, "estimate", "check"

PC_TRUTH = np.array([0.48, 0.27, 0.58])


def test_pc_override_equals_setting_the_detector_and_leaves_the_signal(ni, tiny_band_card_path):
    card = ModelCard.from_file(tiny_band_card_path)
    pc = (0.44, 0.23, 0.52)
    before = ni.detector.pc.copy()
    xmap = ni.classify_structure(model=card, verbose=0, min_score=0, pc=pc)
    assert np.array_equal(ni.detector.pc, before)
    s2 = ni.deepcopy()
    s2.detector.pc = pc
    ref = s2.classify_structure(model=card, verbose=0, min_score=0)
    np.testing.assert_array_equal(xmap.scores, ref.scores)
    assert not np.allclose(xmap.scores, ni.classify_structure(model=card, verbose=0, min_score=0).scores)
    per_pattern = np.broadcast_to(pc, (3, 3, 3))  # navigation shape + (3,)
    np.testing.assert_array_equal(
        ni.classify_structure(model=card, verbose=0, min_score=0, pc=per_pattern).scores, ref.scores)
    assert not hasattr(xmap, "pc_estimate") and "pcx" not in xmap.prop


@pytest.mark.parametrize("pc, match", [("estimated", "'estimate', 'check'"), ((0.5, 0.3), "shape"),
                                       ((0.5, 0.3, 0.0), "PCz > 0"), ((0.5, np.nan, 0.6), "finite")])
def test_bad_pc_is_refused_before_the_work(ni, tiny_band_card_path, pc, match):
    card = ModelCard.from_file(tiny_band_card_path)
    with pytest.raises(ValueError, match=match):
        ni.classify_structure(model=card, verbose=0, pc=pc)


def test_pc_is_ignored_with_a_warning_by_pixel_models(ni, tiny_card_path):
    card = ModelCard.from_file(tiny_card_path)
    ref = ni.classify_structure(model=card, verbose=0, min_score=0)
    with pytest.warns(UserWarning, match="pc is ignored"):
        xmap = ni.classify_structure(model=card, verbose=0, min_score=0, pc="estimate")
    np.testing.assert_array_equal(xmap.scores, ref.scores)
    assert not hasattr(xmap, "pc_estimate")


def test_refused_estimate_names_the_fix(tiny_band_card_path, capsys):
    card = ModelCard.from_file(tiny_band_card_path)
    rng = np.random.default_rng(4)
    s = kp.signals.EBSD(rng.poisson(100, size=(3, 80, 80)).astype(np.float32))
    s.detector = kp.detectors.EBSDDetector(shape=(80, 80), pc=(0.5, 0.3, 0.6), sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    with pytest.raises(ValueError, match=r"could not be estimated.*pc=\(PCx, PCy, PCz\)"):
        s.classify_structure(model=card, verbose=1, pc="estimate")
    assert "Classifying" not in capsys.readouterr().out  # nothing announced that was not done


@pytest.fixture(scope="module")
def dynamical_scan():
    """Six dynamical Ni patterns (2 x 3 scan, 120 px) seen with PC_TRUTH; the
    detector carries PC_TRUTH + (0.02, -0.015, 0.015) (0.029 off)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from pc_estimation import dynamical_ni

    pats = dynamical_ni(6, 120, PC_TRUTH, np.random.default_rng(5))
    s = kp.signals.EBSD(pats.reshape(2, 3, 120, 120))
    s.detector = kp.detectors.EBSDDetector(shape=(120, 120), pc=PC_TRUTH + [0.02, -0.015, 0.015],
                                           sample_tilt=70)
    s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
    return s


def test_estimated_pc_classifies_as_the_true_pc(dynamical_scan, capsys):
    s = dynamical_scan
    data, pc0 = s.data.copy(), s.detector.pc.copy()
    kw = dict(model="kcnn-bands-mlp", min_score=0, show_progressbar=False, check=False, pool="none")
    true = s.classify_structure(pc=tuple(PC_TRUTH), verbose=0, **kw)
    est = s.classify_structure(pc="estimate", verbose=1, **kw)
    assert np.array_equal(s.data, data) and np.array_equal(s.detector.pc, pc0)  # signal unchanged
    e = est.pc_estimate
    assert np.abs(e.pc - PC_TRUTH).max() <= 0.01 and e.lattice == "cF"
    assert "Pattern centre: (PCx, PCy, PCz) = (" in capsys.readouterr().out
    got = np.column_stack([est.prop["pcx"], est.prop["pcy"], est.prop["pcz"]])
    np.testing.assert_allclose(got, e.pc_per_pattern)
    # a PC within 0.01 of the truth changes the class of at most one of six patterns
    assert (est.phase_id == true.phase_id).sum() >= 5, (est.phase_id, true.phase_id)
    # the map is what the estimated PC given as an override gives
    again = s.classify_structure(pc=e.pc_per_pattern, verbose=0, **kw)
    np.testing.assert_array_equal(again.scores, est.scores)


def test_pc_check_warns_when_the_pc_cannot_be_checked(ni, tiny_band_card_path):
    # Ni blurred by 3 px: still Kikuchi patterns (the check passes them), but
    # too few sharp bands to index, so the detector's PC cannot be checked (at
    # 2 px three patterns were indexed, and a last-bit change in the band
    # lengths flipped the verdict to "disagrees")
    from scipy.ndimage import gaussian_filter

    blurred = ni.deepcopy()
    blurred.data = np.stack([[gaussian_filter(p.astype(np.float64), 3) for p in row] for row in ni.data])
    blurred.data = blurred.data.astype(ni.data.dtype)
    card = ModelCard.from_file(tiny_band_card_path)
    with pytest.warns(RuntimeWarning, match="could not be checked"):
        xmap = blurred.classify_structure(model=card, verbose=0, min_score=0, pc="check", pool="none")
    plain = blurred.classify_structure(model=card, verbose=0, min_score=0, pool="none")
    assert np.isfinite(xmap.scores).all()
    np.testing.assert_array_equal(xmap.scores, plain.scores)


def test_pc_check_is_silent_on_kikuchipy_ni(ni, tiny_band_card_path):
    # its calibrated PC agrees with the bands (directions alone at 60 px)
    import warnings

    card = ModelCard.from_file(tiny_band_card_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        xmap = ni.classify_structure(model=card, verbose=0, min_score=0, pc="check", pool="none")
    assert abs(xmap.pc_estimate.pc - ni.detector.pc.reshape(-1, 3).mean(0)).max() < 0.015


def test_bundled_band_model_pools_kikuchipys_ni_into_one_cf_phase_with_its_own_settings(ni):
    # the card's fitted pooling settings are used (no warning), and the nine Ni
    # patterns (seven grains) pool into one phase of the right class
    from pathlib import Path

    card = ModelCard.from_file(Path(__file__).resolve().parent.parent / "models" / "kcnn-bands-mlp" / "card.yaml")
    assert card.pooling_fitted and card.pool_tempering == 0.7 and card.pool_split_r2 == (0.40, 1.90)
    assert card.pool_signatures == ("probabilities", "spectra", "d_spacings")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xmap = ni.classify_structure(model="kcnn-bands-mlp", verbose=0, show_progressbar=False, min_score=0)
    assert not [w for w in caught if "pooling" in str(w.message)]
    pp = xmap.pooled_phases
    assert pp.names == ["cF m-3m"] and pp.n_patterns.tolist() == [9] and pp.tempering == 0.7
    assert (xmap.phase_id == 0).all()
    # its cell, from the band directions of its grains, has the shape of fcc's primitive cell
    from kikuchipy_cnn.lattice import CELL_AGREEMENT, cell_fingerprint
    from test_lattice import direct_basis

    fcc = np.log(cell_fingerprint(np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])))
    assert np.abs(np.log(cell_fingerprint(direct_basis(1, *pp.cells[0, 1:]))) - fcc).max() <= CELL_AGREEMENT
    assert pp.cell_support[0] >= 0.5
    # and the summary says it
    import kikuchipy_cnn

    row = kikuchipy_cnn.summary(xmap)["cF m-3m"]
    np.testing.assert_allclose(row["cell"], pp.cells[0])
    assert row["cell_support"] == pp.cell_support[0]
    text = kikuchipy_cnn.format_summary(xmap)
    size = pp.cell_size[0]
    assert "reduced cell a b c (Å)" in text and f"{pp.cells[0, 1] * size:.2f} {pp.cells[0, 2] * size:.2f} Å" in text
    # its size from the calibrated band widths and 20 kV: Ni's fcc, a = 3.524 Å
    # (shortest vector 2.492 Å; measured 2.85, the conventional cell 4.12 Å: 17 %
    # long, docs/phases.md)
    assert row["cell_size"] == size and abs(np.log(size / (3.524 / 2**0.5))) < 0.2
    conv = pp.conventional_cells[0] * np.array([size] * 3 + [1] * 3)
    np.testing.assert_allclose(conv[3:], 90)
    assert abs(np.log(conv[0] / 3.524)) < 0.2 and np.ptp(conv[:3]) < 1e-6
    assert f"a {conv[0]:.3f} Å" in text and row["conventional_cell"] == tuple(pp.conventional_cells[0])
    # and it is the phase's lattice in the map's phase list (Å)
    lat = xmap.phases[0].structure.lattice
    np.testing.assert_allclose([lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma], conv, rtol=1e-6)
    assert "cell" not in kikuchipy_cnn.summary(xmap, "crystal_system")["cubic"]


def test_each_pattern_and_each_phase_get_the_reduced_cell_of_its_band_directions(ni, tiny_band_card_path):
    from kikuchipy_cnn.crystal_map import CELL_PROPS
    from kikuchipy_cnn.lattice import cell_parameters
    from kikuchipy_cnn.phases import phase_cells

    card = ModelCard.from_file(tiny_band_card_path)
    kw = dict(model=card, verbose=0, min_score=0, show_progressbar=False)
    xmap = ni.classify_structure(pool="none", **kw)
    # by hand: the same bands, the lattice rebuilt from their directions
    x = ni.data.reshape(9, 60, 60).astype(np.float32)
    bg = ni.static_background.astype(np.float32)
    x = x / np.maximum(bg / bg.mean(), 0.01)
    pcs = ni.detector.pc.reshape(-1, 3)
    cells, scales = np.zeros((9, 3, 3)), np.zeros(9)
    band_features(detect_bands(x, pcs, n_bands=16), electron_wavelength(20), 1 / (pcs[:, 2] * 60), cells=cells,
                  cell_scales=scales)
    want = np.full((9, 6), np.nan)
    for i in range(9):
        if np.isfinite(cells[i]).all():
            p = cell_parameters(cells[i])
            want[i] = [p[0] * scales[i], p[1] / p[0], p[2] / p[0], *p[3:]]
    assert np.isfinite(want[:, 1:]).all(axis=1).sum() >= 5 and np.isfinite(want[:, 0]).sum() >= 5
    got = np.column_stack([xmap.prop[name] for name in CELL_PROPS])
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert (got[np.isfinite(got[:, 1]), 1] >= 1).all()  # a <= b <= c
    lazy = ni.as_lazy().classify_structure(pool="none", **kw)
    np.testing.assert_allclose(np.column_stack([lazy.prop[n] for n in CELL_PROPS]), got, rtol=1e-6)
    # pooled: each phase the consensus of its grains, each grain counting once
    pooled = ni.classify_structure(pool="phases", **kw)
    pp = pooled.pooled_phases
    assert pp.cells.shape == (len(pp.names), 6) and ((0 < pp.cell_support) & (pp.cell_support <= 1)).all()
    _, shape, support, size = phase_cells(cells, pooled.prop["phase_index"], pooled.prop["grain_index"], scales)
    np.testing.assert_allclose(pp.cells, shape, rtol=1e-4)
    np.testing.assert_allclose(pp.cell_support, support)
    np.testing.assert_allclose(pp.cell_size, size, rtol=1e-4)
    assert "reduced cell a b c (Å)" in repr(pp) and "conventional cell" in repr(pp)
    np.testing.assert_allclose(np.column_stack([pooled.prop[n] for n in CELL_PROPS]), got, rtol=1e-6)
    # a masked pattern has no cell, and is in no phase's consensus
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = True
    masked = ni.classify_structure(pool="none", navigation_mask=mask, **kw)
    np.testing.assert_allclose(np.column_stack([masked.prop[n] for n in CELL_PROPS]), got[1:], rtol=1e-6)


def test_pixel_models_carry_no_cells(ni, tiny_card_path):
    from kikuchipy_cnn.crystal_map import CELL_PROPS

    card = ModelCard.from_file(tiny_card_path)
    xmap = ni.classify_structure(model=card, verbose=0, min_score=0, show_progressbar=False)
    assert xmap.pooled_phases.cells is None and not set(CELL_PROPS) & set(xmap.prop)
    assert "reduced cell" not in repr(xmap.pooled_phases)
    import kikuchipy_cnn

    assert not any("cell" in row for row in kikuchipy_cnn.summary(xmap).values())
    assert "reduced cell" not in kikuchipy_cnn.format_summary(xmap)


def test_discovered_lattice_is_saved_and_candidates_keep_their_own(ni, tmp_path):
    from diffpy.structure import Lattice, Structure
    from orix import io
    from orix.crystal_map import Phase, PhaseList

    from kikuchipy_cnn.io import save_crystal_map

    kw = dict(model="kcnn-bands-mlp", verbose=0, min_score=0, show_progressbar=False)
    xmap = ni.classify_structure(**kw)
    lat = xmap.phases[0].structure.lattice
    assert 3.0 < lat.a < 5.0  # Å, from the widths (see the test above)
    save_crystal_map(xmap, tmp_path / "ni.h5")
    back = io.load(tmp_path / "ni.h5").phases[0].structure.lattice
    np.testing.assert_allclose([back.a, back.b, back.c, back.alpha], [lat.a, lat.b, lat.c, lat.alpha], rtol=1e-6)
    # the user's candidates keep their lattices; the pooled cell is still reported
    cands = PhaseList(Phase("Ni", space_group=225, structure=Structure(lattice=Lattice(3.524, 3.524, 3.524,
                                                                                        90, 90, 90))))
    mine = ni.classify_structure(phase_list=cands, **kw)
    assert mine.phases[0].structure.lattice.a == pytest.approx(3.524)
    np.testing.assert_allclose(mine.pooled_phases.cell_size, xmap.pooled_phases.cell_size)
    # the .ang names the discovered lattice
    save_crystal_map(xmap, tmp_path / "ni.ang")
    header = [line for line in open(tmp_path / "ni.ang") if "LatticeConstants" in line]
    assert header == [f"# LatticeConstants    {lat.a:.3f} {lat.a:.3f} {lat.a:.3f} 90.000 90.000 90.000\n"]


@pytest.mark.parametrize(
    "point_group, conventional, want",
    [
        ("m-3m", [1.414, 1.414, 1.414, 90, 90, 90], [3.52, 3.52, 3.52, 90, 90, 90]),
        ("6/mmm", [1, 1, 1.6, 90, 90, 120], [2.49, 2.49, 3.984, 90, 90, 120]),
        # spglib's b-unique monoclinic cell turned to c unique: orix's 2/m turns about z
        ("2/m", [1, 1.2, 1.6, 90, 104, 90], [3.984, 2.49, 2.988, 90, 90, 104]),
    ],
)
def test_discovered_lattices_in_the_phase_list_fit_orix_settings(point_group, conventional, want):
    from orix.crystal_map import Phase

    from kikuchipy_cnn.crystal_map import _set_lattice

    phase = Phase("x", point_group=point_group)
    _set_lattice(phase, np.array(conventional, float), 2.49)  # the reduced a in Å
    lat = phase.structure.lattice
    np.testing.assert_allclose([lat.a, lat.b, lat.c, lat.alpha, lat.beta, lat.gamma], want, rtol=1e-3)
    assert phase.name == "x" and phase.point_group.name == point_group
