"""Phase discovery and pooling of ``classify_structure(pool="phases")`` (issue 14).

Synthetic scans of held-out structures (the test-split master patterns, never seen
in training), rendered with the data engine's projection and degradation (as
``benchmarks/pooling_curve.py``): a ``--rows`` x ``--cols`` grid cut into Voronoi
grains, each grain one structure at one random orientation; one random detector and
one set of degradation parameters per scan (Poisson and read noise per pattern).
Scan kinds:

- single: one structure (every test structure once per ``--single`` round);
- fcc+bcc: a cF m-3m and a cI m-3m structure;
- cubic+hex: a cubic and a hexagonal (hP 6/m, hP 6/mmm) structure;
- same lattice: two structures of one Bravais lattice with different cells;
- three: three structures of different crystal systems.

The structures of a multi-phase scan were simulated within ``--kv`` (1 kV) of each
other and the scan carries the first one's beam energy, as a real scan has one; the
masters were simulated at 10-30 kV each, and unmatched pairs let band widths tell
phases apart by their energy (measured: ``models/experiments/2026-11-30-discovery-
band-signatures``). ``--masters DIR`` renders from other master patterns (e.g. fine kinematical
ones, ``python -m kikuchipy_cnn.training.kinematical ... --npx 200 --out
cache/kin-fine``: ``docs/bands.md``).

Each scan is classified with ``pool="none"`` and ``pool="phases"`` (same run, same
process, alternating order) and scored: phases found = phases present (fraction of
scans), fraction of patterns in the right phase (discovered phases matched to true
ones by the largest overlap, Hungarian), and the pooled class of each true phase (that
of the discovered phase holding most of its patterns) at every level, beside the
per-pattern accuracy and the pooled accuracy with the true phases given (oracle
grouping; pooled by detected grains, as ``pool="phases"`` pools, and by patterns). ``--split val`` runs the same on validation structures (for calibrating
the discovery constants in ``kikuchipy_cnn.phases``); ``--calibrate`` also prints
the R² of the first 2-means split of every single-phase scan (``SPLIT_R2`` is the
bar), for every kind of scan how many first splits pass the bar at a grid of ``a``
(single: false splits; the others: second phases seen), and the neighbour
similarities within and across grains.

    python benchmarks/phase_discovery.py [--rows 20 --cols 20 --grains 20] [--seed 3]

``--figure PATH`` instead draws one rendered two-phase scan (by default a
large-cell fcc and a small-cell bcc held-out structure, ``--figure-structures``)
classified with ``pool="none"`` and ``pool="phases"`` (the figure of
``docs/phases.md``):

    python benchmarks/phase_discovery.py --figure docs/_static/phase_discovery_fcc_bcc.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kikuchipy_cnn.training.scans import grain_layout, render_scan, scan_signal

LEVELS = ("crystal_system", "bravais_lattice", "laue_class", "joint")


def _partner(pool, first_kv, kvs, kv, rng):
    """A master of ``pool`` simulated within ``kv`` kV of ``first_kv`` (one
    scan has one beam energy), or None."""
    near = [i for i in pool if abs(kvs[i] - first_kv) <= kv]
    return int(rng.choice(near)) if near else None


def _matched(pools, kvs, kv, rng, tries=50):
    """One master from each of ``pools`` (distinct), all within ``kv`` kV of
    the first; None if no such draw is found in ``tries``."""
    for _ in range(tries):
        first = int(rng.choice(pools[0]))
        picks = [first]
        for pool in pools[1:]:
            p = _partner([i for i in pool if i not in picks], kvs[first], kvs, kv, rng)
            if p is None:
                break
            picks.append(p)
        else:
            return picks
    return None


def scan_plans(masters, args, rng) -> list[tuple[str, list[int]]]:
    """(kind, master indices) of every scan. The phases of a multi-phase scan
    were simulated within ``args.kv`` kV of each other: the scan carries one
    beam energy (``training.scans.scan_signal``), and band widths read at
    another energy than a master's own would tell its phase apart for a
    reason no real scan has."""
    from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info

    lab = [JOINT_CLASSES[i] for i in masters.labels]
    info = [joint_class_info(x) for x in lab]
    kvs = [float(m["energy_kev"]) for m in masters.meta]
    by = lambda f: [i for i in range(len(lab)) if f(i)]  # noqa: E731
    fcc, bcc = by(lambda i: lab[i] == "cF m-3m"), by(lambda i: lab[i] == "cI m-3m")
    cubic = by(lambda i: info[i]["crystal_system"] == "cubic")
    hexa = by(lambda i: info[i]["crystal_system"] == "hexagonal")
    lattices, systems = {}, {}
    for i in range(len(lab)):
        lattices.setdefault(info[i]["bravais_lattice"], []).append(i)
        systems.setdefault(info[i]["crystal_system"], []).append(i)
    same = [v for v in lattices.values() if len(v) >= 2]
    plans, missed = [], {}
    for _ in range(args.single):
        plans += [("single", [i]) for i in range(len(lab))]
    for _ in range(args.pairs):
        kinds = []
        if fcc and bcc:
            kinds.append(("fcc+bcc", [fcc, bcc]))
        if cubic and hexa:
            kinds.append(("cubic+hex", [cubic, hexa]))
        if same:
            v = same[int(rng.integers(len(same)))]
            kinds.append(("same lattice", [v, v]))
        three = rng.choice(sorted(systems), 3, replace=False)
        kinds.append(("three", [systems[x] for x in three]))
        for kind, pools in kinds:
            picks = _matched(pools, kvs, args.kv, rng)
            if picks is None:
                missed[kind] = missed.get(kind, 0) + 1
            else:
                plans.append((kind, picks))
    for kind, n in missed.items():
        print(f"  {kind}: {n} scan(s) left out, no masters within {args.kv:g} kV of each other")
    return plans


def assign_phases(grain: np.ndarray, n_phases: int, rng) -> np.ndarray:
    """True phase of every grain: each phase gets at least one grain."""
    n = int(grain.max()) + 1
    while True:
        ph = rng.integers(0, n_phases, n)
        if len(np.unique(ph)) == n_phases:
            return ph


def match(true: np.ndarray, found: np.ndarray) -> float:
    """Fraction of patterns whose discovered phase is matched to their true
    phase (largest total overlap, one discovered phase per true phase)."""
    from scipy.optimize import linear_sum_assignment

    ok = found >= 0
    t, f = true[ok], found[ok]
    table = np.zeros((t.max() + 1, f.max() + 1))
    np.add.at(table, (t, f), 1)
    r, c = linear_sum_assignment(-table)
    return float(table[r, c].sum() / max(ok.sum(), 1))


def level_hits(probs, classes, truth: str) -> list[bool]:
    from kikuchipy_cnn.symmetry import joint_class_info, level_names, marginalise

    out = []
    for level in LEVELS:
        p = probs if level == "joint" else marginalise(probs[None], classes, level)[0]
        names = classes if level == "joint" else level_names(level)
        want = truth if level == "joint" else joint_class_info(truth)[level]
        out.append(names[int(np.argmax(p))] == want)
    return out


def classify(s, pool, model):
    t = time.perf_counter()
    xmap = s.classify_structure(model=model, pool=pool, verbose=0, show_progressbar=False)
    return xmap, time.perf_counter() - t


def _colour_map(xmap, shape):
    """RGB image of a map's phases (white: not classified)."""
    from matplotlib.colors import to_rgb

    img = np.ones((xmap.is_in_data.size, 3))
    ids = np.full(xmap.is_in_data.size, -1)
    ids[xmap.is_in_data] = xmap.phase_id
    for i, phase in xmap.phases:
        if i != -1:
            img[ids == i] = to_rgb(phase.color)
    return img.reshape(*shape, 3)


def figure(path, masters, card, args):
    """True phases, the per-pattern map, the grains and the discovered, pooled
    phases of a rendered two-phase scan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    rng = np.random.default_rng(args.seed)
    lab = [JOINT_CLASSES[i] for i in masters.labels]
    ids = [m["id"] for m in masters.meta]
    mids = [ids.index(i) for i in args.figure_structures.split(",")]
    grain = grain_layout(args.rows, args.cols, args.grains, rng)
    gphase = assign_phases(grain, 2, rng)
    s = scan_signal(*render_scan(masters, np.asarray(mids)[gphase], grain, rng), masters, mids)
    none = s.classify_structure(model=card, pool="none", min_score=0, verbose=0, show_progressbar=False)
    pooled = s.classify_structure(model=card, min_score=0, verbose=0, show_progressbar=False)
    true_rgb = np.array([[0.12, 0.47, 0.71], [0.84, 0.15, 0.16]])[gphase[grain]]
    fig, ax = plt.subplots(1, 4, figsize=(13, 4.2), constrained_layout=True)
    g = np.asarray(pooled.prop["grain_index"]).reshape(grain.shape)
    palette = plt.get_cmap("tab20")(np.arange(20))[:, :3]
    grain_rgb = palette[np.random.default_rng(0).permutation(max(20, g.max() + 1))[g] % 20]
    single = np.bincount(g.ravel())[g] == 1
    grain_rgb[single] = 0.0  # grains of one pattern: black
    panels = [
        (true_rgb, f"true phases: {lab[mids[0]]} ({masters.meta[mids[0]]['id']}),\n"
                   f"{lab[mids[1]]} ({masters.meta[mids[1]]['id']})", None),
        (_colour_map(none, grain.shape), 'pool="none": one class per pattern', none),
        (grain_rgb, "grains found (neighbour similarity;\nblack: grains of one pattern)", None),
        (_colour_map(pooled, grain.shape), 'pool="phases" (default):\none pooled class per phase', pooled),
    ]
    for a, (img, title, xmap) in zip(ax, panels):
        a.imshow(img, interpolation="nearest")
        a.set_title(title, fontsize=10)
        a.set_xticks([])
        a.set_yticks([])
        if xmap is not None:
            ids, counts = np.unique(xmap.phase_id[xmap.phase_id >= 0], return_counts=True)
            top = ids[np.argsort(-counts)][:6]
            handles = [Patch(color=xmap.phases[int(i)].color, label=xmap.phases[int(i)].name)
                       for i in top]
            if xmap is pooled:
                handles = [Patch(color=xmap.phases[int(i)].color,
                                 label=f"{xmap.phases[int(i)].name} "
                                 f"({xmap.pooled_phases.scores[int(i)]:.2f})") for i in top]
            a.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02),
                     ncol=2, fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
    found = np.asarray(pooled.prop["phase_index"])
    ok = found >= 0
    print(f"wrote {path}; patterns in the right phase: "
          f"{match(gphase[grain.ravel()][ok], found[ok]):.3f}")
    print(pooled.pooled_phases)


def main(argv=None):
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.crystal_map import probabilities
    from kikuchipy_cnn.phases import pool_probabilities
    from kikuchipy_cnn.symmetry import JOINT_CLASSES
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="kcnn-resnet-s", help="model name or card.yaml path")
    ap.add_argument("--split", default="test")
    ap.add_argument("--masters", default=None, metavar="DIR",
                    help="master patterns (default: the data engine's, "
                    "kikuchipy_cnn.training.master_patterns.DEFAULT_CACHE)")
    ap.add_argument("--kv", type=float, default=1.0,
                    help="the phases of a multi-phase scan are simulated within this many kV")
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--grains", type=int, default=20, help="Voronoi seeds per scan")
    ap.add_argument("--single", type=int, default=1, help="rounds of single-phase scans")
    ap.add_argument("--pairs", type=int, default=10, help="scans of every multi-phase kind")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--phases-only", action="store_true",
                    help="classify each scan once, with pool='phases' (no time ratio; the "
                    "per-pattern numbers from the same map's pattern probabilities)")
    ap.add_argument("--figure", default=None, metavar="PATH")
    ap.add_argument("--figure-structures", default="s1-05275,s0-00884", metavar="ID,ID",
                    help="master ids of the figure's two structures (default: a cF m-3m with "
                    "a 10.1 A cell and a cI m-3m with a 3.07 A cell, test split)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    card = resolve_model(args.model)  # a name or a card.yaml path
    masters = MasterSet(args.masters or DEFAULT_CACHE, args.split)
    if args.figure:
        return figure(args.figure, masters, card, args)
    rng = np.random.default_rng(args.seed)
    plans = scan_plans(masters, args, rng)
    print(f"{len(plans)} scans of {args.rows} x {args.cols} patterns, ~{args.grains} grains, "
          f"{args.split} structures of {args.masters or DEFAULT_CACHE}, model {card.name} {card.version}, "
          f"discovery signatures {', '.join(card.pool_signatures)}")
    rows = {}
    t_none = t_phases = 0.0
    r2_first, sim_in, sim_out = {}, [], []
    for k, (kind, mids) in enumerate(plans):
        grain = grain_layout(args.rows, args.cols, args.grains, rng)
        gphase = assign_phases(grain, len(mids), rng)
        true = gphase[grain.ravel()]
        raw, geom = render_scan(masters, np.asarray(mids)[gphase], grain, rng)
        s = scan_signal(raw, geom, masters, mids)
        order = ("none", "phases") if k % 2 == 0 else ("phases", "none")
        if args.phases_only:
            order = ("phases",)
        maps = {}
        for pool in order:
            maps[pool], dt = classify(s, pool, card)
            if pool == "none":
                t_none += dt
            else:
                t_phases += dt
        x = maps["phases"]
        x0 = x if args.phases_only else maps["none"]  # the patterns' own probabilities: the same
        found = np.asarray(x.prop["phase_index"])
        usable = found >= 0
        pp = x.pooled_phases
        r = rows.setdefault(kind, {"scans": 0, "right_n": 0, "assigned": [], "hits": [],
                                   "oracle": [], "oracle_patterns": [], "pattern": [], "n_found": []})
        r["scans"] += 1
        r["n_found"].append(len(pp.names))
        r["right_n"] += int(len(pp.names) == len(mids))
        r["assigned"].append(match(true[usable], found[usable]) if usable.any() else 0.0)
        probs, classes = probabilities(x0)
        for p, m in enumerate(mids):
            truth = JOINT_CLASSES[masters.labels[m]]
            sel = usable & (true == p)
            if not sel.any():
                continue
            major = np.bincount(found[sel]).argmax()
            r["hits"].append(level_hits(pp.probabilities[major], pp.classes, truth))
            # true grouping, pooled as pool="phases" pools (its grains as views) and by patterns
            grain_of = np.asarray(x.prop["grain_index"])
            _, oracle, _ = pool_probabilities(probs[sel], np.zeros(int(sel.sum()), int),
                                              tempering=card.pool_tempering, views=grain_of[sel])
            r["oracle"].append(level_hits(oracle[0], classes, truth))
            _, oracle, _ = pool_probabilities(probs[sel], np.zeros(int(sel.sum()), int),
                                              tempering=card.pool_tempering)
            r["oracle_patterns"].append(level_hits(oracle[0], classes, truth))
            r["pattern"].append(np.mean([level_hits(q, classes, truth) for q in probs[sel]], axis=0))
        if args.calibrate:
            from kikuchipy_cnn.phases import discover_phases
            from kikuchipy_cnn.training.scans import discovery_inputs

            inputs = discovery_inputs(s, card)
            sk = inputs["sketches"]
            ok = np.isfinite(probs).all(axis=1)
            g = grain.ravel()
            for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
                ia = np.arange(g.size).reshape(grain.shape)[a].ravel()
                ib = np.arange(g.size).reshape(grain.shape)[b].ravel()
                sim = np.einsum("ij,ij->i", sk[ia], sk[ib])
                sim_in += list(sim[g[ia] == g[ib]])
                sim_out += list(sim[g[ia] != g[ib]])
            d = discover_phases(probs, sk, grain.shape, ok, spectra=inputs["spectra"],
                                d_spacings=inputs["d_spacings"], signatures=card.pool_signatures,
                                split_r2=(0.0, 0.0), max_phases=2)
            r2_first.setdefault(kind, []).append((d.split_r2[0] if d.split_r2 else 0.0, d.n_grains))
        if (k + 1) % 20 == 0:
            print(f"  {k + 1} scans, {time.perf_counter() - t0:.0f} s", flush=True)

    print("\n| scans | n | phases found = present | patterns in the right phase | pooled: system "
          "| Bravais | Laue | joint | per pattern: system / Bravais / Laue / joint "
          "| true grouping pooled: system / Bravais / Laue / joint | same, patterns pooled, not grains |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, r in rows.items():
        h = np.array(r["hits"], float).mean(axis=0)
        o = np.array(r["oracle"], float).mean(axis=0)
        op = np.array(r["oracle_patterns"], float).mean(axis=0)
        pt = np.array(r["pattern"], float).mean(axis=0)
        print(f"| {kind} | {r['scans']} | {r['right_n'] / r['scans']:.2f} "
              f"| {np.mean(r['assigned']):.3f} | " + " | ".join(f"{v:.2f}" for v in h)
              + " | " + " / ".join(f"{v:.2f}" for v in pt)
              + " | " + " / ".join(f"{v:.2f}" for v in o)
              + " | " + " / ".join(f"{v:.2f}" for v in op) + " |")
    for kind, r in rows.items():
        print(f"  {kind}: phases found per scan {np.bincount(r['n_found']).tolist()} (index = count)")
    if not args.phases_only:
        print(f"\npool='phases' / pool='none' time: {t_phases / t_none:.3f} "
              f"({t_phases:.1f} s / {t_none:.1f} s)")
    if args.calibrate and r2_first:
        if "single" in r2_first:
            r2, ng = np.array(r2_first["single"]).T
            print(f"single-phase first-split R²: quantiles 50/90/95/99/max "
                  f"{np.round(np.quantile(r2, [0.5, 0.9, 0.95, 0.99, 1.0]), 3).tolist()}; grains "
                  f"50/90 % {np.quantile(ng, [0.5, 0.9]).tolist()}")
        b = card.pool_split_r2[1]
        for kind, first in r2_first.items():  # single: false splits; the others: a second phase seen
            r2, ng = np.array(first).T
            # (the first split as discover_phases accepts it: >= min_patterns and min_grains a side)
            print(f"{kind} scans whose first split passes a + {b:g} / n_grains: "
                  + ", ".join(f"a={a:.2f}: {int((r2 >= a + b / np.maximum(ng, 1)).sum())}"
                              for a in np.arange(0.08, 0.62, 0.04)) + f" (of {len(r2)})")
        si, so = np.array(sim_in), np.array(sim_out)
        print(f"neighbour similarity within grains: quantiles 1/5/50 % "
              f"{np.round(np.quantile(si, [0.01, 0.05, 0.5]), 3).tolist()}; across grains "
              f"50/95/99/max {np.round(np.quantile(so, [0.5, 0.95, 0.99, 1.0]), 3).tolist()}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
