"""Pattern-centre estimation without the phase: error before and after.

For every case the estimate (:func:`kikuchipy_cnn.estimate_pc`) starts from
the true PC plus an offset of the given size in a seeded random direction and
is compared with the truth. Errors are Euclidean norms of the PC difference
(Bruker fractions: PCx of the width, PCy and PCz of the height; all cases but
the EMsoft Ni one are square). Cases:

* dynamical Ni scans (kikuchipy's EMsoft master pattern, 20 kV, random
  orientations, Poisson noise at 200 counts) of 9 and 20 patterns at 60, 120
  and 240 px, one random true PC per trial, starting offsets 0.02-0.05;
* single dynamical Ni patterns at 240 and 480 px;
* kikuchipy's Ni scan (``kp.data.nickel_ebsd_small()``, 9 experimental
  patterns, 60 px; reference: the mean of its own ``s.detector.pc``, whose
  spread over the map is < 0.004);
* the ``../shared/data`` files with known geometry (``detectors.tsv``), the
  EMsoft Fe set as scans of its 10 orientations per binning and noise level.

Refusals (ValueError: the data do not constrain the PC) are counted, not
scored. Prints markdown.

* a 5 x 6 map of dynamical Ni (120 px) whose PC moves with the beam
  (:data:`MAP_GRADIENT`), estimated with one PC and with ``pc_model="affine"``,
  scored by the rms over the map of the per-pattern PC error.

    python benchmarks/pc_estimation.py [--trials 3] [--seed 0] [--skip-shared]
                                       [--skip-map | --only-map]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

_MASTER = None

#: Options of every estimate_pc call (set from the command line).
ESTIMATE_OPTIONS: dict = {}


def dynamical_ni(n: int, size: int, pc, rng, counts: float = 200.0) -> np.ndarray:
    """``(n, size, size)`` dynamical Ni patterns at random orientations seen
    with pattern centre ``pc`` (Bruker, one ``(3,)`` or one per pattern
    ``(n, 3)``; sample tilt 70 deg), 20 kV, Poisson noise at ``counts`` per
    pixel at the brightest point."""
    import kikuchipy as kp
    from orix.quaternion import Rotation

    global _MASTER
    if _MASTER is None:
        _MASTER = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    q = rng.normal(size=(n, 4))
    rot = Rotation(q / np.linalg.norm(q, axis=1, keepdims=True))
    pc = np.asarray(pc, np.float64)
    det = kp.detectors.EBSDDetector(shape=(size, size), pc=pc if pc.ndim == 1 else pc.reshape(n, 3),
                                    sample_tilt=70)
    p = _MASTER.get_patterns(rot, det, energy=20, compute=True, show_progressbar=False).data
    p = np.asarray(p, np.float64).reshape(n, size, size)
    lo, hi = p.min(axis=(1, 2), keepdims=True), p.max(axis=(1, 2), keepdims=True)
    return rng.poisson((p - lo) / (hi - lo) * counts + 1.0).astype(np.float32)


def random_offset(rng, size: float) -> np.ndarray:
    """A PC offset of Euclidean length ``size`` in a random direction."""
    d = rng.normal(size=3)
    return size * d / np.linalg.norm(d)


def run_case(patterns, truth, start, **kwargs) -> dict:
    """Estimate from ``start``; the start and end errors against ``truth``."""
    import kikuchipy_cnn

    truth = np.asarray(truth, np.float64).reshape(-1, 3).mean(0)
    start_err = float(np.linalg.norm(np.asarray(start, np.float64).reshape(-1, 3).mean(0) - truth))
    t = time.perf_counter()
    try:
        e = kikuchipy_cnn.estimate_pc(patterns, pc0=start, **ESTIMATE_OPTIONS, **kwargs)
    except ValueError as ex:
        return dict(start=start_err, refused=str(ex), seconds=time.perf_counter() - t)
    return dict(start=start_err, end=float(np.linalg.norm(e.pc - truth)), sd=float(np.linalg.norm(e.uncertainty)),
                lattice=e.lattice, used=e.n_patterns_used, seconds=time.perf_counter() - t)


def dynamical_rows(trials: int, rng) -> list[tuple[str, list[dict]]]:
    """Scans of 9 and 20 patterns at 60/120/240 px and single 240/480 px patterns."""
    configs = [(n, size) for n in (9, 20) for size in (60, 120, 240)] + [(1, 240), (1, 480)]
    rows = []
    for n, size in configs:
        results = []
        for _ in range(trials):
            truth = np.array([rng.uniform(0.4, 0.6), rng.uniform(0.2, 0.35), rng.uniform(0.5, 0.65)])
            pats = dynamical_ni(n, size, truth, rng)
            start = truth + random_offset(rng, rng.uniform(0.02, 0.05))
            results.append(run_case(pats, truth, start, beam_energy=20.0))
            print(f"  dynamical Ni {n} x {size} px: {results[-1]}", flush=True)
        rows.append((f"dynamical Ni, {n} pattern(s), {size} px", results))
    return rows


#: PC change per navigation step (rows: PCx, PCy, PCz; columns: per row, per
#: column step) of the map benchmark: 0.018-0.025 across a 5 x 6 map, as on
#: a large map with a short camera distance.
MAP_GRADIENT = np.array([[0.0, -0.005], [-0.0045, 0.0], [0.0016, 0.0]])


def map_rows(trials: int, rng, shape=(5, 6), size: int = 120) -> list[tuple[str, list[dict]]]:
    """A map of dynamical Ni whose PC moves with the beam by
    :data:`MAP_GRADIENT`; scored per pattern (rms over the map of the PC
    error) with one PC for all and with the affine model."""
    import kikuchipy as kp

    import kikuchipy_cnn

    n = int(np.prod(shape))
    pos = np.array(np.unravel_index(np.arange(n), shape), float).T
    pos -= pos.mean(0)
    rows = {"constant": [], "affine": []}
    for _ in range(trials):
        centre = np.array([rng.uniform(0.45, 0.55), rng.uniform(0.25, 0.3), rng.uniform(0.55, 0.6)])
        truth = centre + pos @ MAP_GRADIENT.T
        s = kp.signals.EBSD(dynamical_ni(n, size, truth, rng).reshape(*shape, size, size))
        s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
        start = centre + random_offset(rng, rng.uniform(0.02, 0.05))
        s.detector = kp.detectors.EBSDDetector(shape=(size, size), pc=start, sample_tilt=70)
        for model in rows:
            t = time.perf_counter()
            try:
                e = kikuchipy_cnn.estimate_pc(s, pc_model=model, **ESTIMATE_OPTIONS)
            except ValueError as ex:
                rows[model].append(dict(start=float(np.sqrt(np.mean(np.sum((start - truth) ** 2, 1)))),
                                        refused=str(ex), seconds=time.perf_counter() - t))
                continue
            err = np.sqrt(np.mean(np.sum((e.pc_per_pattern - truth) ** 2, 1)))
            rows[model].append(dict(start=float(np.sqrt(np.mean(np.sum((start - truth) ** 2, 1)))),
                                    end=float(err), sd=float(np.linalg.norm(e.uncertainty)),
                                    lattice=e.lattice, used=e.n_patterns_used, seconds=time.perf_counter() - t))
            print(f"  map {shape} {model}: {rows[model][-1]}", flush=True)
    return [(f"dynamical Ni map {shape[0]}x{shape[1]}, {size} px, PC gradient, {m} PC (rms over the map)", r)
            for m, r in rows.items()]


def kikuchipy_ni_rows(trials: int, rng) -> list[tuple[str, list[dict]]]:
    """kikuchipy's 9-pattern Ni scan from its own PCs plus 0.03 (and 0)."""
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    ref = np.asarray(s.detector.pc, np.float64).reshape(-1, 3)
    rows = []
    for size in (0.0, 0.03):
        results = [run_case(s, ref, ref + random_offset(rng, size)) for _ in range(trials if size else 1)]
        print(f"  kikuchipy Ni, offset {size}: {results}", flush=True)
        rows.append((f"kikuchipy Ni scan (9 x 60 px, experimental), offset {size}", results))
    return rows


def shared_rows(rng, size: float = 0.03) -> list[tuple[str, list[dict]]]:
    """../shared/data files with known geometry; the EMsoft Fe files as one
    10-pattern scan per binning and noise level."""
    from kikuchipy_cnn.training.real_data import load_cases

    groups: dict[str, list] = defaultdict(list)
    for c in load_cases():
        if c.geometry is None:
            continue
        name = c.path.name
        if name.startswith("Fe_bcc_"):
            _, _, _, binning, noise = c.path.stem.split("_")
            groups[f"EMsoft Fe scan {binning} {noise}"].append(c)
        else:
            groups[f"{c.path.parent.name}/{name}"].append(c)
    rows = []
    for label, cases in groups.items():
        s = cases[0].signal
        shape = tuple(s.axes_manager.signal_shape[::-1])
        truth = np.asarray(s.detector.pc, np.float64).reshape(-1, 3)[0]
        start = truth + random_offset(rng, size)
        energy = float(s.metadata.get_item("Acquisition_instrument.SEM.beam_energy", 20.0))
        if len(cases) > 1:
            data = np.stack([np.asarray(c.signal.data, np.float32).reshape(shape) for c in cases])
            res = run_case(data, truth, start, beam_energy=energy)
        else:
            res = run_case(s, truth, start)
        print(f"  {label} ({cases[0].geometry}): {res}", flush=True)
        rows.append((f"{label}, {len(cases)} x {shape[0]}x{shape[1]} px ({cases[0].geometry} PC, "
                     f"{cases[0].bravais_lattice})", [res]))
    return rows


def _fmt(x: list[float]) -> str:
    if not x:
        return "-"
    return f"{np.median(x):.4f}" if len(x) == 1 else f"{np.median(x):.4f} ({np.max(x):.4f})"


def table(rows) -> str:
    """Markdown: median (max) start error, end error and reported uncertainty."""
    out = ["| case | trials | start error | estimated error | reported uncertainty | refused | lattice | s / trial |",
           "|---|---|---|---|---|---|---|---|"]
    for label, res in rows:
        ok = [r for r in res if "end" in r]
        lat = ", ".join(sorted({r["lattice"] for r in ok})) or "-"
        out.append(f"| {label} | {len(res)} | {_fmt([r['start'] for r in res])} | {_fmt([r['end'] for r in ok])} "
                   f"| {_fmt([r['sd'] for r in ok])} | {len(res) - len(ok)} | {lat} "
                   f"| {np.mean([r['seconds'] for r in res]):.1f} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-shared", action="store_true")
    ap.add_argument("--skip-map", action="store_true")
    ap.add_argument("--only-map", action="store_true", help="only the map with a PC gradient")
    ap.add_argument("--indexing", default="auto", choices=("auto", "widths", "directions"),
                    help="estimate_pc's indexing option")
    args = ap.parse_args(argv)
    ESTIMATE_OPTIONS["indexing"] = args.indexing
    rng = np.random.default_rng(args.seed)
    if args.only_map:
        print(table(map_rows(args.trials, rng)))
        return
    rows = dynamical_rows(args.trials, rng) + kikuchipy_ni_rows(args.trials, rng)
    if not args.skip_map:
        rows += map_rows(args.trials, rng)
    if not args.skip_shared:
        rows += shared_rows(rng)
    print()
    print("Errors: Euclidean norm of the PC difference, median (max) over trials.")
    print(table(rows))


if __name__ == "__main__":
    main()
