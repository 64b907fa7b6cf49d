"""How often the reduced cell of a phase is right (issue 14: the lattice metric per phase).

Held-out structures only: band sets detected on rendered dynamical patterns of the
50 test-split masters at many random orientations (``band_sets --source rendered
--split test --n 20``, the file ``benchmarks/pooled_evidence.py`` reads). Each band
set's lattice is rebuilt from its band directions in the same pass as its features
(``features.band_features(cells=...)``, what ``classify_structure`` does); then, for
N = 1, 3, 10, 20 views of one structure (``--draws`` bags per structure and N), the
consensus cell of the bag (``lattice.consensus_cell``, each view weighing one, as
``phases.phase_cells`` does for a discovered phase) is compared with the structure's
true primitive lattice: right when their ``lattice.cell_fingerprint`` agree to
``lattice.CELL_AGREEMENT`` (shape only; the size is compared below).
A sublattice or superlattice of the truth counts as wrong, as does any other shape.
Also printed: how often the consensus is agreed by at least half of the views, and
how often it is right then; and, where the cell is right, its size: the phase's
shortest lattice vector in Å (``phases.phase_cells``' ``size``, the median over the
agreeing views of their cells scaled by their calibrated band widths,
``features.band_features(cell_scales=...)``) against the truth's.

    python benchmarks/phase_cells.py cache/bags/rendered/rendered_test.npz
"""

from __future__ import annotations

import argparse
import time

import numpy as np

#: Centring translations of each Hermann-Mauguin letter (fractional)
_CENTRING = {
    "P": [], "A": [[0, 0.5, 0.5]], "B": [[0.5, 0, 0.5]], "C": [[0.5, 0.5, 0]],
    "I": [[0.5, 0.5, 0.5]], "F": [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]],
    "R": [[2 / 3, 1 / 3, 1 / 3], [1 / 3, 2 / 3, 2 / 3]],
}


def true_primitive(lattice, space_group: int) -> np.ndarray:
    """Niggli-reduced primitive cell (rows) of a structure's lattice: its
    conventional cell ``(a, b, c, alpha, beta, gamma)`` with the centring of
    its space group (standard setting; R groups in hexagonal axes)."""
    import spglib

    from kikuchipy_cnn.lattice import lattice_matrix, niggli_cell
    from kikuchipy_cnn.symmetry import space_group_class

    conv = lattice_matrix(*lattice)
    pos = np.array([[0, 0, 0]] + _CENTRING[space_group_class(space_group).centring], float)
    prim = spglib.find_primitive((conv, pos, [1] * len(pos)), symprec=1e-4)
    if prim is None:
        raise ValueError(f"no primitive cell for space group {space_group}")
    return niggli_cell(np.asarray(prim[0]))


def main(argv=None):
    from kikuchipy_cnn.bands import BandSet, pixel_angle
    from kikuchipy_cnn.features import band_features
    from kikuchipy_cnn.lattice import CELL_AGREEMENT, cell_fingerprint, lattice_matrix, lattice_vector_lengths
    from kikuchipy_cnn.phases import phase_cells
    from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bandsets", help="rendered band sets of test-split masters (.npz)")
    ap.add_argument("--sizes", default="1,3,10,20")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    d = dict(np.load(args.bandsets, allow_pickle=True))
    meta = {m["id"]: m for m in MasterSet(DEFAULT_CACHE, "test").meta}
    sid = d["structure_id"].astype(str)
    if not set(sid) <= set(meta):
        raise SystemExit("the band sets are not of test-split masters")
    n = len(sid)
    bs = BandSet(d["normals"], d["strength"], d["width"], d["contrast"], d["valid"])
    cells, scales = np.full((n, 3, 3), np.nan), np.full(n, np.nan)
    band_features(bs, d["wavelength"], pixel_angle(d["shape"], d["pc"]), cells=cells, cell_scales=scales)
    prim = {s: true_primitive(meta[s]["lattice"], meta[s]["space_group"]) for s in np.unique(sid)}
    truth = {s: np.log(cell_fingerprint(p)) for s, p in prim.items()}
    shortest = {s: float(lattice_vector_lengths(p, 1)[0, 0]) for s, p in prim.items()}
    has = np.isfinite(cells).all(axis=(1, 2))

    def right(cell, s):
        return bool(np.abs(np.log(cell_fingerprint(cell)) - truth[s]).max() <= CELL_AGREEMENT)

    per = np.array([has[i] and right(cells[i], sid[i]) for i in range(n)])
    per_size = np.array([lattice_vector_lengths(cells[i], 1)[0, 0] * scales[i] / shortest[sid[i]]
                         if per[i] else np.nan for i in range(n)])
    system = np.array([joint_class_info(JOINT_CLASSES[meta[s]["label"]])["crystal_system"] for s in sid])
    print(f"{n} band sets of {len(truth)} held-out structures; a lattice rebuilt from the directions "
          f"of {has.mean():.3f}; {time.perf_counter() - t0:.0f} s")
    rng = np.random.default_rng(args.seed)
    sizes = []
    print("\n| views | bags | consensus cell right | mean support | support >= 0.5: share of bags / right "
          "| right, cubic / hexagonal+trigonal / tetragonal / orthorhombic / monoclinic+triclinic |")
    print("|---|---|---|---|---|---|")
    groups = {"cubic": ("cubic",), "hex/trig": ("hexagonal", "trigonal"), "tetragonal": ("tetragonal",),
              "orthorhombic": ("orthorhombic",), "mono/tri": ("monoclinic", "triclinic")}
    for size in [int(v) for v in args.sizes.split(",")]:
        hits, sup, sys_of, ratio = [], [], [], []
        for s in truth:
            rows = np.flatnonzero(sid == s)
            if len(rows) < size:
                continue
            for _ in range(args.draws if size < len(rows) else 1):
                bag = rng.choice(rows, size, replace=False)
                _, shape, support, found = phase_cells(cells[bag], np.zeros(size, int), np.arange(size), scales[bag])
                ok = bool(np.isfinite(shape[0]).all() and right(lattice_matrix(*shape[0]), s))
                hits.append(ok)
                sup.append(support[0])
                sys_of.append(system[rows[0]])
                ratio.append(found[0] / shortest[s] if ok else np.nan)
        hits, sys_of, sup, ratio = np.array(hits), np.array(sys_of), np.array(sup), np.array(ratio)
        sizes.append((size, ratio[np.isfinite(ratio)]))
        strong = sup >= 0.5
        agreed = f"{strong.mean():.2f} / {hits[strong].mean():.2f}" if strong.any() else f"{strong.mean():.2f} / -"
        by = " / ".join(f"{hits[np.isin(sys_of, g)].mean():.2f}" if np.isin(sys_of, g).any() else "-"
                        for g in groups.values())
        print(f"| {size} | {len(hits)} | {hits.mean():.3f} | {sup.mean():.2f} | {agreed} | {by} |")
    print(f"\nper pattern: cell right {per.mean():.3f} (of those with a lattice {per[has].mean():.3f}); "
          f"{time.perf_counter() - t0:.0f} s")
    sizes.insert(0, ("1 (each pattern)", per_size[np.isfinite(per_size)]))
    print("\nSize where the cell is right: shortest lattice vector found / true\n")
    print("| views | right cells with a size | ratio: 10th / 25th / median / 75th / 90th percentile "
          "| within 5 % | within 10 % |")
    print("|---|---|---|---|---|")
    for size, r in sizes:
        if r.size == 0:
            print(f"| {size} | 0 | - | - | - |")
            continue
        q = " / ".join(f"{v:.3f}" for v in np.percentile(r, [10, 25, 50, 75, 90]))
        e = np.abs(np.log(r))
        print(f"| {size} | {r.size} | {q} | {np.mean(e <= np.log(1.05)):.2f} | {np.mean(e <= np.log(1.1)):.2f} |")


if __name__ == "__main__":
    main()
