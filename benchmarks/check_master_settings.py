"""Check the de-ebsd setting path and the projection convention.

1. hcp Zn (P6_3/mmc) in P1: (001) absent, (002) present.
2. de-ebsd Ni master pattern (P1 input, our fold) projected with
   kikuchipy_cnn.training.projection vs kikuchipy's EMsoft Ni master pattern
   projected by kikuchipy's get_patterns at the same orientations: NCC.
3. Master-pattern symmetry of a monoclinic cell (2-fold about the unique
   axis, which our setting puts along z) computed WITHOUT folding.

Run: OMP_NUM_THREADS=1 python benchmarks/check_master_settings.py
"""

import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

import kikuchipy as kp  # noqa: E402
from orix.quaternion import Rotation  # noqa: E402

from kikuchipy_cnn.training.master_patterns import (  # noqa: E402
    crystal_from_structure,
    fold_space_group,
    simulate_master_pattern,
)
from kikuchipy_cnn.training.projection import (  # noqa: E402
    DetectorGeometry,
    detector_directions,
    project,
    random_quaternions,
)


def ncc(a, b):
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# 1. hcp absences
from de_ebsd.crystal.structure_factors import compute_structure_factors  # noqa: E402

hcp = {
    "lattice": [2.66, 2.66, 4.95, 90, 90, 120],
    "atoms": [["Zn", [1 / 3, 2 / 3, 0.25]], ["Zn", [2 / 3, 1 / 3, 0.75]]],
    "space_group": 194, "joint_class": "hP 6/mmm", "n_atoms": 2,
}  # fmt: skip
sf = compute_structure_factors(crystal_from_structure(hcp), 20.0, 0.06)
for hkl in [(0, 0, 1), (0, 0, 2), (1, 0, 0), (1, 0, 1)]:
    m = (sf.hkl == hkl).all(1)
    print(f"hcp Zn |U{hkl}| = {np.abs(sf.ucg[m])[0]:.3g}")
print("hcp fold space group:", fold_space_group(hcp))

# 2. Ni vs EMsoft
ni = {
    "lattice": [3.524, 3.524, 3.524, 90, 90, 90],
    "atoms": [["Ni", [0, 0, 0]], ["Ni", [0, 0.5, 0.5]], ["Ni", [0.5, 0, 0.5]], ["Ni", [0.5, 0.5, 0]]],
    "space_group": 225, "joint_class": "cF m-3m", "n_atoms": 4,
}  # fmt: skip
t = time.time()
mp_de, info = simulate_master_pattern(ni, 20.0, npx=100, dmin=0.05, n_electrons=30000)
print(f"Ni de-ebsd master npx 100: {time.time() - t:.1f} s, {info}")
mp_em = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
geom = DetectorGeometry((60, 60), 0.5, 0.5, 0.6, 70.0, 0.0)
q = random_quaternions(5, np.random.default_rng(1))
det = kp.detectors.EBSDDetector((60, 60), pc=(0.5, 0.5, 0.6), convention="bruker", sample_tilt=70)
ref = mp_em.get_patterns(Rotation(q), det, energy=20, compute=True).data.astype(float)
ours = project(mp_de, q, detector_directions(geom), (60, 60))
print("NCC de-ebsd (ours) vs EMsoft (kikuchipy):", [round(ncc(a, b), 3) for a, b in zip(ours, ref)])
em_data = mp_em.data.astype(float)
ours_em = project(em_data, q, detector_directions(geom), (60, 60))
print("NCC our projection of EMsoft vs kikuchipy get_patterns:", [round(ncc(a, b), 4) for a, b in zip(ours_em, ref)])
