"""Per-phase indexing of a classified map: a synthetic FCC Ni + BCC Fe scan
with known orientations, indexed by Hough and dictionary indexing."""

import kikuchipy as kp
import numpy as np
import pytest
from diffpy.structure import Atom, Lattice, Structure
from orix.crystal_map import CrystalMap, Phase, PhaseList, create_coordinate_arrays
from orix.quaternion import Orientation, Rotation

import kikuchipy_cnn
from kikuchipy_cnn import index_phases
from kikuchipy_cnn.indexing import _strongest_reflectors

pytest.importorskip("pyebsdindex")

SIZE = 60
N_EACH = 20
NAV_SHAPE = (5, 8)  # 20 Ni patterns, then 20 Fe ones
UNCLASSIFIED = (3, 27)  # one Ni and one Fe pattern left unclassified


def _ni_phase():
    return Phase(
        name="ni",
        space_group=225,
        structure=Structure(
            atoms=[Atom("Ni", [0, 0, 0])], lattice=Lattice(3.5236, 3.5236, 3.5236, 90, 90, 90)
        ),
    )


def _fe_phase():
    return Phase(
        name="fe",
        space_group=229,
        structure=Structure(
            atoms=[Atom("Fe", [0, 0, 0])], lattice=Lattice(2.8665, 2.8665, 2.8665, 90, 90, 90)
        ),
    )


def _random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    return Rotation(q / np.linalg.norm(q, axis=1, keepdims=True))


def _fe_master_pattern():
    """Kinematical master pattern of bcc Fe in the Lambert projection."""
    from diffsims.crystallography import ReciprocalLatticeVector

    rlv = ReciprocalLatticeVector.from_min_dspacing(_fe_phase(), 0.7)
    rlv.sanitise_phase()
    rlv.calculate_structure_factor()
    rlv = rlv[np.abs(rlv.structure_factor) > 1e-3 * np.abs(rlv.structure_factor).max()]
    rlv.calculate_theta(20e3)
    simulator = kp.simulations.KikuchiPatternSimulator(rlv)
    mp = simulator.calculate_master_pattern(half_size=100, hemisphere="both", scaling="linear")
    return mp.as_lambert(show_progressbar=False)


@pytest.fixture(scope="module")
def scan():
    """EBSD signal of dynamical Ni and kinematical Fe patterns at known
    orientations, with its detector and the Ni master pattern."""
    rng = np.random.default_rng(42)
    detector = kp.detectors.EBSDDetector(shape=(SIZE, SIZE), pc=(0.4, 0.3, 0.5), sample_tilt=70)
    mp_ni = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    mp_fe = _fe_master_pattern()
    rot_ni, rot_fe = _random_rotations(rng, N_EACH), _random_rotations(rng, N_EACH)
    kw = dict(energy=20, compute=True, show_progressbar=False)
    p_ni = mp_ni.get_patterns(rot_ni, detector, **kw).data
    p_fe = mp_fe.get_patterns(rot_fe, detector, **kw).data
    data = np.concatenate([p_ni, p_fe]).reshape(NAV_SHAPE + (SIZE, SIZE))
    s = kp.signals.EBSD(data)
    truth = np.r_[np.zeros(N_EACH, int), np.ones(N_EACH, int)]  # 0 = Ni, 1 = Fe
    rotations = np.concatenate([rot_ni.data, rot_fe.data])
    return {"s": s, "detector": detector, "mp_ni": mp_ni, "truth": truth, "rot": rotations}


def _classification(phases, truth, ids=(3, 7), unclassified=UNCLASSIFIED):
    """Crystal map as classify_structure(phase_list=...) returns it, with the
    true phases (``truth`` indexes ``phases``) and some points not
    classified."""
    phase_list = PhaseList(phases=phases, ids=list(ids))
    phase_id = np.asarray(ids)[truth]
    phase_id[list(unclassified)] = -1
    coords, _ = create_coordinate_arrays(NAV_SHAPE)
    xmap = CrystalMap(
        rotations=Rotation.identity((truth.size,)), phase_id=phase_id, phase_list=phase_list,
        **coords,
    )
    phase_list.add_not_indexed()
    xmap.phases = phase_list
    return xmap


def _misorientation(rot_found, rot_true, point_group):
    o1 = Orientation(Rotation(rot_found), point_group)
    o2 = Orientation(Rotation(rot_true), point_group)
    return o1.angle_with(o2, degrees=True)


def test_reflectors_from_structure(scan):
    """The strongest families match kikuchipy's Hough indexing tutorial for
    Ni and the usual BCC list, also for a lattice in nm (master pattern)."""
    expected_ni = [[1, 1, 1], [2, 0, 0], [2, 2, 0], [3, 1, 1]]
    np.testing.assert_array_equal(_strongest_reflectors(_ni_phase()), expected_ni)
    np.testing.assert_array_equal(_strongest_reflectors(scan["mp_ni"].phase), expected_ni)
    np.testing.assert_array_equal(
        _strongest_reflectors(_fe_phase()), [[1, 1, 0], [2, 0, 0], [2, 1, 1], [3, 1, 0]]
    )


@pytest.mark.parametrize("ni_first", [True, False], ids=["ni-first", "fe-first"])
def test_hough_two_phases(scan, ni_first):
    """Each region is indexed with its own phase, whatever the phase order:
    measured here, all 38 classified patterns have the right phase and are
    within 0.4 degrees of the truth (Ni max 0.14, Fe max 0.31)."""
    phases = [_ni_phase(), _fe_phase()] if ni_first else [_fe_phase(), _ni_phase()]
    truth = scan["truth"] if ni_first else 1 - scan["truth"]
    xmap = _classification(phases, truth)
    out = kikuchipy_cnn.index_phases(scan["s"], xmap, scan["detector"], show_progressbar=False)

    assert out.shape == NAV_SHAPE
    assert set(out.phases.ids) == {-1, 3, 7}
    assert out.phases[3].name == phases[0].name and out.phases[7].name == phases[1].name
    assert sorted(out.prop) == ["cm", "fit", "nmatch", "pq"]
    expected = np.where(np.isin(np.arange(truth.size), UNCLASSIFIED), -1, np.array([3, 7])[truth])
    np.testing.assert_array_equal(out.phase_id, expected)
    for pid, fraction in ((3, 19 / 40), (7, 19 / 40), (-1, 2 / 40)):
        assert np.mean(out.phase_id == pid) == pytest.approx(fraction)

    unclassified = list(UNCLASSIFIED)
    np.testing.assert_allclose(out.rotations.data[unclassified], [[1, 0, 0, 0]] * 2)
    assert np.all(out.prop["nmatch"][unclassified] == 0)
    for pid in (3, 7):
        sel = out.phase_id == pid
        angle = _misorientation(out.rotations.data[sel], scan["rot"][sel], out.phases[pid].point_group)
        assert np.mean(angle < 2) >= 0.95, np.sort(angle)
        assert np.all(out.prop["nmatch"][sel] >= 5)


def test_hough_with_given_reflectors(scan):
    """A phase without atoms can be indexed when its reflectors are given."""
    fe = Phase(name="fe", space_group=229)  # no atoms, unit lattice
    xmap = _classification([_ni_phase(), fe], scan["truth"], unclassified=())
    out = index_phases(
        scan["s"], xmap, scan["detector"],
        reflectors={"fe": [[1, 1, 0], [2, 0, 0], [2, 1, 1], [3, 1, 0]]},
        show_progressbar=False,
    )
    sel = out.phase_id == 7
    assert sel.sum() == N_EACH
    angle = _misorientation(out.rotations.data[sel], scan["rot"][sel], fe.point_group)
    assert np.mean(angle < 2) >= 0.95, np.sort(angle)


def test_dictionary_ni(scan):
    """Dictionary indexing of the Ni region with a coarse (4 degree)
    dictionary: measured here, all 20 within 3.9 degrees."""
    ni = scan["mp_ni"].phase.deepcopy()
    truth = scan["truth"]
    # only Ni classified: the Fe region stays not indexed
    pid = np.where(truth == 0, 0, -1)
    xmap = _classification(
        [ni, _fe_phase()], np.zeros_like(truth), ids=(0, 1), unclassified=np.flatnonzero(truth)
    )
    out = index_phases(
        scan["s"], xmap, scan["detector"], method="dictionary",
        master_patterns={"ni": scan["mp_ni"]}, resolution=4, show_progressbar=False,
    )
    np.testing.assert_array_equal(out.phase_id, pid)
    assert list(out.prop) == ["scores"]
    sel = pid == 0
    angle = _misorientation(out.rotations.data[sel], scan["rot"][sel], ni.point_group)
    assert np.mean(angle < 5) >= 0.95, np.sort(angle)
    assert np.all(out.prop["scores"][sel] > 0) and np.all(out.prop["scores"][~sel] == 0)


# ----------------------------------------------------------------------------
# Errors


@pytest.fixture
def small(scan):
    xmap = _classification([_ni_phase(), _fe_phase()], scan["truth"])
    return scan["s"], xmap, scan["detector"]


def test_error_map_shape(small):
    s, xmap, det = small
    with pytest.raises(ValueError, match="crystal map shape .* navigation shape"):
        index_phases(s.inav[:4], xmap, det)


def test_error_detector_shape(small):
    s, xmap, det = small
    det2 = kp.detectors.EBSDDetector(shape=(SIZE, SIZE + 2), pc=(0.4, 0.3, 0.5))
    with pytest.raises(ValueError, match=r"detector shape \(60, 62\) must match"):
        index_phases(s, xmap, det2)


def test_error_nothing_classified(scan):
    xmap = _classification(
        [_ni_phase(), _fe_phase()], scan["truth"], unclassified=range(2 * N_EACH)
    )
    with pytest.raises(ValueError, match="No pattern .* classified"):
        index_phases(scan["s"], xmap, scan["detector"])


def test_error_phase_without_atoms(scan):
    s, det = scan["s"], scan["detector"]
    xmap = _classification([_ni_phase(), Phase(name="ferrite", space_group=229)], scan["truth"])
    with pytest.raises(ValueError, match="'ferrite' has no atoms.*reflectors.*from_cif"):
        index_phases(s, xmap, det)


def test_error_method_and_master_patterns(small):
    s, xmap, det = small
    with pytest.raises(ValueError, match="method must be one of"):
        index_phases(s, xmap, det, method="radon")
    with pytest.raises(ValueError, match="needs master_patterns"):
        index_phases(s, xmap, det, method="dictionary")
    with pytest.raises(ValueError, match=r"No master pattern .*\['fe'\]"):
        index_phases(s, xmap, det, method="dictionary", master_patterns={"ni": object()})


def test_error_without_pyebsdindex(small, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyebsdindex", None)
    s, xmap, det = small
    with pytest.raises(ImportError, match="pip install pyebsdindex"):
        index_phases(s, xmap, det)
