"""Kinematical master patterns of full P1 cells, computed directly in the
square Lambert projection: fast (0.2-2 s per structure), a complement
to the dynamical master patterns for breadth over structures.

Structure factors are summed over every atom of the conventional cell (no
symmetry grouping, so any setting is exact), with Doyle-Turner electron
scattering factors and Debye-Waller damping exp(-B s^2). By default each
reflector ``g`` adds a band drawn with the profile fitted to the dynamical
master patterns (bright inside, dark flanks outside its edges, strength
``|F_g|^2``; :mod:`kikuchipy_cnn.training.band_profile`), which brings the
kinematical masters closer to dynamical ones; ``--band-profile step`` gives
the plain kinematical band of half-width equal to its Bragg angle and
intensity ``|F_g|`` (kikuchipy's ``scaling="linear"``; used by model 0.1.0).

    python -m kikuchipy_cnn.training.kinematical \
        --structures models/training-data/structures_seed1.json [--shard 0/2]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from kikuchipy_cnn.lattice import lattice_matrix
from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training.master_patterns import TRAINING_DATA, parse_shard, save_master

__all__ = ["kinematical_master_pattern", "lambert_directions", "reflectors", "structure_master", "wavelength"]

DEFAULT_OUT = TRAINING_DATA / "kinematical"
#: Kinematical masters drawn with the band profile fitted to the dynamical
#: masters (:mod:`kikuchipy_cnn.training.band_profile`)
FITTED_OUT = TRAINING_DATA / "kinematical-fitted"


def wavelength(energy_kev: float) -> float:
    """Relativistic electron wavelength in Å (:func:`kikuchipy_cnn.bands.electron_wavelength`)."""
    from kikuchipy_cnn.bands import electron_wavelength

    return electron_wavelength(energy_kev)


@lru_cache(maxsize=4)
def lambert_directions(npx: int) -> np.ndarray:
    """Unit vectors ``(2, n, n, 3)``, n = 2 npx + 1, of the square Lambert
    grid in the layout kikuchipy projects from: row = Lambert Y, column =
    Lambert X, north (z >= 0) then south hemisphere."""
    from kikuchipy.signals.util._master_pattern import _lambert2vector

    n = 2 * npx + 1
    c = (np.arange(n) - npx) / npx
    y, x = np.meshgrid(c, c, indexing="ij")
    v = _lambert2vector(x.ravel().astype(np.float64), y.ravel().astype(np.float64))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    north = v.reshape(n, n, 3)
    south = north * np.array([1, 1, -1])
    return np.stack([north, south])


def _scattering_parameters(elements) -> tuple[np.ndarray, np.ndarray]:
    from diffsims.structure_factor.atomic_scattering_parameters import (
        get_atomic_scattering_parameters,
    )

    a, b = zip(*(get_atomic_scattering_parameters(e.capitalize()) for e in elements))
    return np.array(a), np.array(b)


def reflectors(
    structure: dict, dmin: float = 0.5, min_intensity: float = 0.005,
    debye_waller: float = 0.5, max_reflectors: int = 2500,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflectors of a P1 cell: one of each Friedel pair.

    Parameters
    ----------
    structure
        ``{"lattice": [a, b, c, alpha, beta, gamma] (Å, degrees),
        "atoms": [[element, [x, y, z]], ...]}`` with all atoms of the cell.
    dmin
        Smallest d-spacing in Å.
    min_intensity
        Keep reflectors with |F|^2 at least this fraction of the strongest.
    debye_waller
        Isotropic B in Å^2.
    max_reflectors
        Keep at most this many, the strongest.

    Returns
    -------
    hkl
        Integer indices ``(m, 3)``.
    normals
        Unit plane normals ``(m, 3)`` in the Cartesian frame of
        :func:`~kikuchipy_cnn.lattice.lattice_matrix`.
    (d, F)
        d-spacings (Å) and complex structure factors.
    """
    A = lattice_matrix(*structure["lattice"])
    B = np.linalg.inv(A).T  # reciprocal basis as rows, Å^-1 (no 2 pi)
    hmax = [int(np.floor(np.linalg.norm(A[i]) / dmin)) for i in range(3)]
    h, k, l = np.meshgrid(*(np.arange(-m, m + 1) for m in hmax), indexing="ij")
    hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1)
    # One of each Friedel pair (the band of -g equals the band of g)
    first = np.where(hkl[:, 0] != 0, hkl[:, 0], np.where(hkl[:, 1] != 0, hkl[:, 1], hkl[:, 2]))
    hkl = hkl[first > 0]
    g = hkl @ B
    g_len = np.linalg.norm(g, axis=1)
    keep = g_len <= 1 / dmin
    hkl, g, g_len = hkl[keep], g[keep], g_len[keep]
    elements = [atom[0] for atom in structure["atoms"]]
    xyz = np.array([atom[1] for atom in structure["atoms"]], dtype=float)
    a, b = _scattering_parameters(elements)
    s2 = (g_len / 2) ** 2
    F = np.empty(len(hkl), dtype=complex)
    step = max(1, 2_000_000 // (len(xyz) * a.shape[-1]))  # bounded memory for large cells
    for i in range(0, len(hkl), step):
        sl = slice(i, i + step)
        f = (a[None] * np.exp(-b[None] * s2[sl, None, None])).sum(axis=2)  # (m, atoms)
        F[sl] = (f * np.exp(2j * np.pi * hkl[sl] @ xyz.T)).sum(axis=1)
    F *= np.exp(-debye_waller * s2)
    I = np.abs(F) ** 2
    keep = I >= min_intensity * I.max()
    order = np.argsort(I[keep])[::-1][:max_reflectors]
    idx = np.flatnonzero(keep)[order]
    return hkl[idx], g[idx] / g_len[idx, None], (1 / g_len[idx], F[idx])


def kinematical_master_pattern(
    structure: dict, energy_kev: float = 20.0, npx: int = 64, dmin: float = 0.5,
    debye_waller: float = 0.5, chunk: int = 256, band_profile: dict | None = None,
    relative_contrast: float = 0.23,
) -> np.ndarray:
    """Kinematical master pattern ``(2, 2 npx + 1, 2 npx + 1)`` (north,
    south) in the square Lambert projection, float32, of a P1 cell.

    Without ``band_profile`` each band is a step of height ``|F|`` between
    its Bragg angles. With a profile from
    :func:`kikuchipy_cnn.training.band_profile.load_profile`, each band
    follows that profile (dark flanks included) with strength
    ``|F|^exponent``, and the pattern is scaled to mean 1 and standard
    deviation ``relative_contrast`` (de-ebsd's dynamical masters: 0.11-0.39,
    median 0.23) and clipped at 0.
    """
    _, normals, (d, F) = reflectors(structure, dmin=dmin, debye_waller=debye_waller)
    sin_theta = wavelength(energy_kev) / (2 * d)
    v = lambert_directions(npx).reshape(-1, 3)
    out = np.zeros(v.shape[0], dtype=np.float64)
    if band_profile is None:
        weight = np.abs(F)
        for start in range(0, len(normals), chunk):
            n_ = normals[start : start + chunk]
            dots = np.abs(v @ n_.T)
            out += (dots <= sin_theta[None, start : start + chunk]) @ weight[start : start + chunk]
    else:
        from kikuchipy_cnn.training.band_profile import _TABLE_STEP, profile_table

        table = profile_table(band_profile)
        weight = np.abs(F) ** band_profile["exponent"]
        scale = _TABLE_STEP / sin_theta
        last = len(table) - 1
        for start in range(0, len(normals), chunk):
            sl = slice(start, start + chunk)
            idx = np.abs(v @ normals[sl].T) * scale[None, sl]
            np.minimum(idx, last, out=idx)
            out += table[idx.astype(np.intp)] @ weight[sl]
        out = np.clip(1 + relative_contrast * (out - out.mean()) / (out.std() or 1.0), 0, None)
    n = 2 * npx + 1
    return out.reshape(2, n, n).astype(np.float32)


def structure_master(structure: dict, npx: int = 64, band_profile=None) -> tuple[np.ndarray, dict]:
    """The kinematical master pattern of one structure of a structure file and
    its metadata, with the beam energy (10-30 kV), dmin (0.45-0.6 Å), Debye-Waller
    factor and band contrast drawn from the structure's own seed (the same on
    every run). ``band_profile``: a fitted profile, or None for step bands."""
    rng = np.random.default_rng([*structure["seed"], 11])
    energy = float(rng.uniform(10, 30))
    dmin = float(rng.uniform(0.45, 0.6))
    bdw = float(rng.uniform(0.3, 1.0))
    contrast = float(rng.uniform(0.12, 0.38))  # drawn last: step masters unchanged
    t = time.time()
    data = kinematical_master_pattern(
        structure, energy, npx, dmin, bdw, band_profile=band_profile, relative_contrast=contrast
    )
    s = structure  # short name for the table below
    meta = {
        "id": s["id"], "split": s["split"], "joint_class": s["joint_class"],
        "label": JOINT_CLASSES.index(s["joint_class"]), "space_group": s["space_group"],
        "n_atoms": s["n_atoms"], "lattice": s["lattice"], "energy_kev": energy,
        "npx": npx, "dmin_A": dmin, "debye_waller_A2": bdw, "source": "kinematical",
        "band_profile": "fitted" if band_profile is not None else "step", "seconds": time.time() - t,
    }  # fmt: skip
    return data, meta


def run(
    structures_file, out_dir=None, npx: int = 64, log=sys.stdout, splits=None,
    shard: tuple[int, int] = (0, 1), band_profile: str = "fitted", ids=None,
):
    """Compute and save kinematical master patterns of all structures,
    skipping finished ones; ``shard=(i, n)`` takes every n-th structure from
    the i-th (parallel workers take disjoint shards); ``ids``, a set of
    structure ids, keeps only those. ``band_profile`` is
    ``"fitted"`` (the stored profile, written to :data:`FITTED_OUT` by
    default) or ``"step"`` (:data:`DEFAULT_OUT`)."""
    from kikuchipy_cnn.training.band_profile import load_profile
    from kikuchipy_cnn.training.structures import load_structures

    if band_profile not in ("fitted", "step"):
        raise ValueError(f"band_profile must be 'fitted' or 'step', not {band_profile!r}")
    profile = load_profile() if band_profile == "fitted" else None
    if out_dir is None:
        out_dir = FITTED_OUT if profile is not None else DEFAULT_OUT
    out_dir = Path(out_dir)
    done = 0
    t0 = time.time()
    for s in load_structures(structures_file)[shard[0] :: shard[1]]:
        if (splits and s["split"] not in splits) or (ids is not None and s["id"] not in ids):
            continue
        path = out_dir / s["split"] / f"{s['id']}.npz"
        if path.exists():
            continue
        t = time.time()
        data, meta = structure_master(s, npx, profile)
        save_master(path, data, meta)
        done += 1
        print(f"{s['id']} {s['split']:5s} {s['joint_class']:9s} {time.time() - t:4.1f} s "
              f"({done / (time.time() - t0) * 60:.0f}/min)", file=log, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structures", default=str(TRAINING_DATA / "structures_seed0.json"))
    p.add_argument("--out", default=None, help=f"default {FITTED_OUT} (fitted), {DEFAULT_OUT} (step)")
    p.add_argument("--npx", type=int, default=64)
    p.add_argument("--splits", default="train,val,test")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), help="I/N: this worker's share of N")
    p.add_argument("--band-profile", choices=("fitted", "step"), default="fitted",
                   help="band profile fitted to the dynamical masters, or kinematical steps")
    p.add_argument("--ids", type=Path, default=None,
                   help="a text file of structure ids, one per line: only those")
    args = p.parse_args(argv)
    ids = set(args.ids.read_text().split()) if args.ids else None
    run(args.structures, args.out, args.npx, splits=set(args.splits.split(",")), shard=args.shard,
        band_profile=args.band_profile, ids=ids)


if __name__ == "__main__":
    main()
