"""Out-of-distribution rejection: false-accept rate of ``classify_structure()``
at its default settings on >= 1,000 inputs that are not Kikuchi patterns, next
to the accept rate on real and simulated Kikuchi patterns.

Non-Kikuchi inputs (many kinds, sizes and dtypes;
``kikuchipy_cnn.training.non_kikuchi``): noise of several spectra, blank,
gradients, saturated, tiny, natural images (those the learned check was
trained on and held-out ones, reported apart), lines, bands, grids, stripes,
checkerboards, diffraction spot and ring patterns, phase-scrambled Kikuchi
patterns. The learned check was trained on other random draws of these kinds
(and on patterns of the training structures, never kikuchipy's Ni).

Kikuchi patterns: kikuchipy's 9 experimental Ni patterns (raw, with their
static background), every pattern of ``../shared/data`` (cases.tsv), and
dynamical Ni patterns projected from kikuchipy's EMsoft master pattern at
random orientations at 60/120/240 px, noise-free and with Poisson noise.

An input counts as *accepted* when ``classify_structure()`` gives it a class
(phase_id != -1) at the default ``min_score`` of the default model; the
pattern check's own verdict (``kikuchi_check == 0``) is reported beside it.

    python benchmarks/ood_rejection.py [--seed 1] [--n-sim 300] [--markdown]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict

import numpy as np

from kikuchipy_cnn.training.non_kikuchi import non_kikuchi, sim_patterns


def kikuchi_sets(n_sim: int = 300, seed: int = 1):
    """Yield ``(set name, EBSD signal)`` of real and simulated Kikuchi patterns."""
    import kikuchipy as kp

    from kikuchipy_cnn.training.real_data import default_shared_data, load_cases

    s = kp.data.nickel_ebsd_small()
    yield "kikuchipy Ni, 9 experimental 60x60 (raw)", s
    bare = kp.signals.EBSD(s.data)  # the same without its static background
    yield "kikuchipy Ni, the same without static background", bare
    try:
        cases = load_cases(default_shared_data())
    except FileNotFoundError:
        cases = []
    for c in cases:
        yield f"shared data: {c.kind} {c.phase}", c.signal
    rng = np.random.default_rng(seed)
    per = n_sim // 6
    for size in (60, 120, 240):
        for noise in (False, True):
            data = sim_patterns(per, (size, size), rng, noise).astype(np.float32)
            yield (f"dynamical Ni {size} px, {'Poisson noise' if noise else 'no noise'}",
                   kp.signals.EBSD(data))


def _classify(s):
    """phase_id != -1 and kikuchi_check == 0 per pattern at default settings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xmap = s.classify_structure(verbose=0, show_progressbar=False, pool="none")  # per input
    accepted = xmap.phase_id != -1
    check = xmap.prop["kikuchi_check"] if "kikuchi_check" in xmap.prop else np.zeros(accepted.shape)
    return accepted, check == 0


def main():
    import kikuchipy as kp

    import kikuchipy_cnn  # noqa: F401 (registers the signal method)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-kind", type=int, default=60)
    p.add_argument("--n-sim", type=int, default=300)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()

    t0 = time.perf_counter()
    groups = defaultdict(list)
    for kind, img in non_kikuchi(args.seed, args.per_kind):
        groups[(kind, img.shape, img.dtype.str)].append(img)
    rows = defaultdict(lambda: [0, 0, 0])  # n, accepted, check passed
    for (kind, shape, _), imgs in groups.items():
        if min(shape) < 2:  # the classifier refuses these outright
            rows[kind][0] += len(imgs)
            continue
        acc, ok = _classify(kp.signals.EBSD(np.stack(imgs)))
        r = rows[kind]
        r[0] += len(imgs)
        r[1] += int(acc.sum())
        r[2] += int(ok.sum())
    real = defaultdict(lambda: [0, 0, 0])
    for name, s in kikuchi_sets(args.n_sim, args.seed):
        acc, ok = _classify(s)
        r = real[name]
        r[0] += acc.size
        r[1] += int(acc.sum())
        r[2] += int(ok.sum())

    def table(rows, title, what):
        lines = [f"| {title} | n | {what} by classify_structure() | passes the pattern check |",
                 "|---|---:|---:|---:|"]
        tot = [0, 0, 0]
        for k, (n, a, c) in rows.items():
            lines.append(f"| {k} | {n} | {a / n:.1%} ({a}) | {c / n:.1%} ({c}) |")
            tot = [tot[0] + n, tot[1] + a, tot[2] + c]
        n, a, c = tot
        lines.append(f"| **all** | **{n}** | **{a / n:.2%}** ({a}) | **{c / n:.2%}** ({c}) |")
        return "\n".join(lines)

    print(table(rows, "non-Kikuchi input", "falsely accepted"))
    print()
    print(table(real, "Kikuchi patterns", "accepted"))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
