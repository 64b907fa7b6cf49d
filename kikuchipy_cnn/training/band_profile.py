"""Kikuchi band profile fitted to the dynamical master patterns, so that
kinematical master patterns look like dynamical ones.

Kinematical theory (the "step" profile) gives each reflector ``g`` a band of
uniform intensity between its Bragg angles. de-ebsd's dynamical master
patterns of the same structures look different: a band is bright inside, has
dark flanks just outside its edges that fade out to about three Bragg angles,
and its strength follows ``|F_g|^2`` more closely than ``|F_g|``. This module
measures that profile and stores it; :mod:`kikuchipy_cnn.training.kinematical`
draws its bands with it.

Fit. For each of the first ``--n`` (80) dynamical master patterns of the
*train* split in a fixed shuffled order (the ids used are stored), the master
(standardised) is regressed on the band features
``X_k(v) = sum_g |F_g|^p [|n_g . v| / sin(theta_g) in bin k]`` (reflectors
from :func:`~kikuchipy_cnn.training.kinematical.reflectors`, twelve bins of
the distance from the band's plane in units of its Bragg angle, out to 3)
plus a constant; the coefficients are normalised to a maximum magnitude of 1
and their median over structures is the profile. ``p`` is chosen from
:data:`EXPONENTS` by the median coefficient of determination. Monoclinic
structures are left out: their dynamical masters are computed in a cyclically
permuted cell (unique axis along z), so the frames differ.

Check. :func:`compare` measures, on the validation and test splits (never
used by the fit), the normalised cross-correlation between each dynamical
master pattern and the kinematical master of the same structure with the step
and with the fitted profile.

    python -m kikuchipy_cnn.training.band_profile [--n 80]

writes ``models/training-data/band_profile.json`` and prints both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE, TRAINING_DATA, load_master

__all__ = ["EDGES", "EXPONENTS", "band_features", "compare", "fit", "load_profile", "profile_table"]

#: Bin edges of the distance from a band's plane, in units of its Bragg angle
EDGES = np.array([0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0])
#: Exponents of ``|F|`` tried for the band strength
EXPONENTS = (1.0, 1.5, 2.0, 2.5, 3.0)
PROFILE_FILE = TRAINING_DATA / "band_profile.json"
STRUCTURE_FILES = (
    TRAINING_DATA / "structures_seed0.json",
    TRAINING_DATA / "structures_seed1.json",
)
#: Samples per Bragg angle of the lookup table
_TABLE_STEP = 128


def band_features(
    structure: dict, npx: int, energy_kev: float, dmin: float = 0.5, exponents=EXPONENTS
) -> np.ndarray:
    """Band features ``(len(exponents), pixels, bins)`` on the square
    Lambert grid of ``npx`` (both hemispheres, flattened)."""
    from kikuchipy_cnn.training.kinematical import lambert_directions, reflectors, wavelength

    _, normals, (d, F) = reflectors(structure, dmin=dmin)
    sin_theta = wavelength(energy_kev) / (2 * d)
    weights = np.abs(F)[None] ** np.asarray(exponents, dtype=float)[:, None]
    v = lambert_directions(npx).reshape(-1, 3)
    nb = len(EDGES) - 1
    out = np.zeros((len(exponents), v.shape[0] * nb))
    for i in range(0, len(normals), 128):
        x = np.abs(v @ normals[i : i + 128].T) / sin_theta[None, i : i + 128]
        pix, ref = np.nonzero(x < EDGES[-1])  # most pixels are far from most bands
        idx = pix * nb + np.digitize(x[pix, ref], EDGES) - 1
        for e, w in enumerate(weights[:, i : i + 128]):
            out[e] += np.bincount(idx, weights=w[ref], minlength=out.shape[1])
    return out.reshape(len(exponents), v.shape[0], nb)


@lru_cache(maxsize=1)
def _structures() -> dict:
    """Structures of both structure lists by id (read once: fit and both
    comparison splits use them)."""
    from kikuchipy_cnn.training.structures import load_structures

    return {s["id"]: s for f in STRUCTURE_FILES if Path(f).exists() for s in load_structures(f)}


def _dynamical_pairs(split: str, n: int | None, directory=DEFAULT_CACHE):
    """(structure, master, meta) of dynamical masters of a split, monoclinic
    ones left out, in a fixed shuffled order."""
    structures = _structures()
    files = sorted(Path(directory, split).glob("*.npz"))
    np.random.default_rng(0).shuffle(files)
    k = 0
    for f in files:
        data, meta = load_master(f)
        s = structures.get(meta["id"])
        if s is None or s["joint_class"].startswith("m"):
            continue
        yield s, data, meta
        k += 1
        if n is not None and k >= n:
            return


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float).ravel()
    return (a - a.mean()) / (a.std() or 1.0)


def fit(n: int | None = 80, directory=DEFAULT_CACHE, log=sys.stdout) -> dict:
    """Fit the band profile to ``n`` dynamical master patterns of the train
    split; return ``{"edges", "profile", "exponent", ...}``."""
    coefs = {p: [] for p in EXPONENTS}
    r2 = {p: [] for p in EXPONENTS}
    ids = []
    for s, data, meta in _dynamical_pairs("train", n, directory):
        y = _standardise(data)
        X = band_features(s, meta["npx"], meta["energy_kev"])
        for p, Xp in zip(EXPONENTS, X):
            A = np.c_[np.ones(len(y)), Xp / (Xp.std() or 1.0)]
            c, *_ = np.linalg.lstsq(A, y, rcond=None)
            r2[p].append(1 - float(((A @ c - y) ** 2).mean()))
            coefs[p].append(c[1:] / np.abs(c[1:]).max())
        ids.append(meta["id"])
        print(f"{meta['id']} {s['joint_class']:9s} R2 " + " ".join(
            f"{p}:{r2[p][-1]:.3f}" for p in EXPONENTS), file=log, flush=True)
    if not ids:
        raise FileNotFoundError(f"No dynamical train master patterns in {directory}")
    best = max(EXPONENTS, key=lambda p: np.median(r2[p]))
    return {
        "edges": EDGES.tolist(),
        "profile": np.round(np.median(coefs[best], axis=0), 4).tolist(),
        "exponent": best,
        "median_r2": {str(p): round(float(np.median(r2[p])), 4) for p in EXPONENTS},
        "n_structures": len(ids),
        "structures": ids,
        "command": "python -m kikuchipy_cnn.training.band_profile",
    }


def load_profile(path=PROFILE_FILE) -> dict:
    """The stored band profile (see :func:`fit`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No band profile at {path}: run `python -m kikuchipy_cnn.training.band_profile`"
        )
    return json.loads(path.read_text())


def profile_table(profile: dict) -> np.ndarray:
    """Lookup table of the profile: entry ``i`` is its value at ``i /
    128`` Bragg angles (linear between bin centres, flat to the band's
    centre, zero from the last edge on)."""
    edges = np.asarray(profile["edges"])
    centres = (edges[1:] + edges[:-1]) / 2
    values = np.asarray(profile["profile"])
    x = np.arange(int(edges[-1] * _TABLE_STEP) + 2) / _TABLE_STEP
    return np.interp(x, np.r_[0, centres, edges[-1]], np.r_[values[0], values, 0], right=0)


def _ncc(a, b) -> float:
    a, b = _standardise(a), _standardise(b)
    return float(a @ b / len(a))


def compare(profile: dict, n: int | None = 60, directory=DEFAULT_CACHE, log=sys.stdout) -> dict:
    """NCC of dynamical masters (val and test splits) with kinematical
    masters of the same structures, step vs fitted profile."""
    from kikuchipy_cnn.training.kinematical import kinematical_master_pattern

    res = {"step": [], "fitted": []}
    for split in ("val", "test"):
        for s, data, meta in _dynamical_pairs(split, None if n is None else n // 2, directory):
            kw = dict(energy_kev=meta["energy_kev"], npx=meta["npx"], dmin=0.5)
            step = kinematical_master_pattern(s, band_profile=None, **kw)
            fitted = kinematical_master_pattern(s, band_profile=profile, **kw)
            res["step"].append(_ncc(step, data))
            res["fitted"].append(_ncc(fitted, data))
            print(f"{meta['id']} {split:5s} {s['joint_class']:9s} NCC step {res['step'][-1]:.3f} "
                  f"fitted {res['fitted'][-1]:.3f}", file=log, flush=True)
    return {
        k: {"mean": round(float(np.mean(v)), 4), "median": round(float(np.median(v)), 4),
            "n": len(v)}
        for k, v in res.items()
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=80, help="train structures to fit on")
    p.add_argument("--n-compare", type=int, default=60, help="val + test structures to compare on")
    p.add_argument("--out", default=str(PROFILE_FILE))
    args = p.parse_args(argv)
    t0 = time.time()
    profile = fit(args.n)
    print(f"exponent {profile['exponent']}, median R2 {profile['median_r2']}, "
          f"profile {profile['profile']}")
    profile["comparison"] = compare(profile, args.n_compare)
    print(f"NCC with dynamical masters (val + test): {profile['comparison']} "
          f"({time.time() - t0:.0f} s)")
    Path(args.out).write_text(json.dumps(profile, indent=1) + "\n")


if __name__ == "__main__":
    main()
