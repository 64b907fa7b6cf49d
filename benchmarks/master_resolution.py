"""Do the training masters' coarse Lambert grids limit the band widths?

Re-simulates some held-out (test-split) structures at a finer Lambert grid (same beam
energy and dmin as the committed masters; cached in ``--cache``, resumable), renders
the same patterns (orientations, detectors >= 120 px, degradation) from the committed
and from the fine masters, runs the same band front end, and prints width / 2theta_B
of the bands within 1 deg of a true reflector and the Bravais lattice of
``reconstruct_lattice`` (metric tolerance 0.05). docs/bands.md has the numbers.

    python benchmarks/master_resolution.py --structures 24,26,13,14,17,43 --npx 200
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np


def fine_masters(indices, npx, cache):
    """Simulate (or reuse) fine masters of test structures ``indices`` of
    the committed test split; return their MasterSet."""
    from kikuchipy_cnn.training import band_sets as BS
    from kikuchipy_cnn.training import master_patterns as MP
    from kikuchipy_cnn.training.projection import MasterSet

    coarse = MasterSet(MP.DEFAULT_CACHE, "test")
    structures = BS.structure_index()
    for k in indices:
        meta = coarse.meta[k]
        s = structures[meta["id"]]
        path = MP.master_path(cache, s)
        if path.exists():
            continue
        t0 = time.perf_counter()
        data, info = MP.simulate_master_pattern(
            s, energy_kev=float(meta["energy_kev"]), npx=npx, dmin=float(meta["dmin_nm"]), seed=1
        )
        MP.save_master(path, data, {**meta, "npx": npx, **info})
        print(f"simulated {meta['id']} {meta['joint_class']} at {data.shape[-1]} px "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return coarse, MasterSet(Path(cache), "test")


def _render(masters, ids, groups, fine_ids, seed=11):
    from kikuchipy_cnn.training import band_sets as BS

    index = {i: k for k, i in enumerate(ids)}
    rng = np.random.default_rng(seed)
    parts = [BS.render_band_sets(masters, BS.structure_index(),
                                 [{**it, "master": index[fine_ids[it["master"]]]} for it in its], rng)
             for its in groups.values()]
    return BS.concat_arrays(parts)


def _row(a):
    from kikuchipy_cnn.lattice import reconstruct_lattice
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    good = a["valid"] & (a["match_angle"] < np.deg2rad(1)) & np.isfinite(a["match_d"])
    tt = 2 * np.arcsin(np.clip(a["wavelength"][:, None] / (2 * a["match_d"]), 0, 1))
    meas = good & np.isfinite(a["width"])
    r, t2 = (a["width"] / tt)[meas], np.rad2deg(tt[meas])

    def stats(x):
        med = np.median(x)
        q1, q3 = np.percentile(x, [25, 75])
        return f"{med:.2f}, {(q3 - q1) / med:.2f}, {np.mean(np.abs(np.log(x / med)) < np.log(1.1)):.2f}"

    right = []
    for i in range(len(a["label"])):
        v = a["valid"][i]
        fit = reconstruct_lattice(a["normals"][i][v], a["width"][i][v], a["strength"][i][v],
                                  a["wavelength"][i])
        truth = JOINT_CLASSES[a["label"][i]].split()[0]
        right.append(fit is not None and fit.bravais_lattice(0.05) == truth)
    frac = good.sum() / max(a["valid"].sum(), 1)
    return (f"{frac:.2f} | {stats(r)} | {stats(r[t2 >= 3])} | {np.mean(right):.2f} "
            f"({len(right)} patterns)")


def main(argv=None):
    from kikuchipy_cnn.training import band_sets as BS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--structures", default="24,26,13,14,17,43",
                    help="indices into the committed test split")
    ap.add_argument("--npx", type=int, default=200, help="half-width of the fine Lambert grid")
    ap.add_argument("--cache", default="cache/masters-fine")
    ap.add_argument("--per-structure", type=int, default=12)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)

    idx = [int(x) for x in args.structures.split(",")]
    coarse, fine = fine_masters(idx, args.npx, args.cache)
    fine_ids = [m["id"] for m in fine.meta]
    rng = np.random.default_rng(args.seed)
    settings = {**BS.default_settings("rendered"), "pc_fraction": 0.0, "clean_fraction": 0.5}
    wanted = {coarse.meta[k]["id"] for k in idx}
    items = [it for it in BS._rendered_items(fine, args.per_structure, rng, settings)
             if fine_ids[it["master"]] in wanted and min(it["shape"]) >= 120]
    groups = collections.defaultdict(list)
    for it in items:
        groups[tuple(it["shape"])].append(it)
    print("\n| masters | bands true | widths: median, IQR/median, within ±10 % (all) "
          "| 2θ_B ≥ 3° | Bravais |")
    print("|---|---|---|---|---|")
    for name, ms in (("committed", coarse), (f"fine ({2 * args.npx + 1} px)", fine)):
        ids = [m["id"] for m in ms.meta]
        print(f"| {name} | " + _row(_render(ms, ids, groups, fine_ids)) + " |")


if __name__ == "__main__":
    main()
