"""Fit a model's ``pooling:`` settings for ``classify_structure(pool="phases")``.

Two constants of :mod:`kikuchipy_cnn.phases` depend on the model whose
probabilities are pooled, and are fitted per model on *validation*
structures (never the test structures the benchmarks report):

- the tempering β of :func:`~kikuchipy_cnn.phases.pool_probabilities`: the β
  that minimises the pooled joint log-loss of groups of 3-16 grains of one
  structure (grains pooled as views: a grain's patterns count once);
- the phase split bar ``split_r2 = (a, b)`` of
  :func:`~kikuchipy_cnn.phases.discover_phases`: least squares of ``a + b / n``
  to the 98th percentile of the 2-means R² of random groups of ``n`` grains of
  one structure (``n`` = 3-16), i.e. about a 2 % false-split rate per group of
  true grains (the curve passes a little below some of the percentiles).

Data: per validation master one small scan, ``--grains`` grains of
``--per-grain`` patterns (one orientation per grain, its own noise per
pattern; one random detector and degradation per scan: ``training.scans``),
classified pattern by pattern through ``classify_structure(pool="none")``
with the signal's true detector; the radial spectra are those
``pool="phases"`` computes (``classify.sketch_preprocessing``).

    python -m kikuchipy_cnn.training.pooling_fit render --model kcnn-bands-mlp \\
        --out cache/pooling-fit/kcnn-bands-mlp-val.npz
    python -m kikuchipy_cnn.training.pooling_fit fit cache/pooling-fit/kcnn-bands-mlp-val.npz

``fit`` prints the tables and the ``pooling:`` block for the model card.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

__all__ = ["fit_split_r2", "fit_tempering", "render_views", "split_r2_quantiles"]

#: Group sizes (grains of one structure) the settings are fitted on
GROUP_SIZES = (3, 4, 6, 8, 10, 12, 16)
#: False-split rate of the split bar: its percentile is 100 (1 - rate)
FALSE_SPLIT_RATE = 0.02
#: Tempering grid searched by :func:`fit_tempering`
TEMPERING_GRID = np.round(np.arange(0.0, 1.5001, 0.05), 2)


def render_views(card, masters, n_grains: int, per_grain: int, rng, log=print) -> dict:
    """Per-pattern probabilities, spectra, d-spacing histograms (band models;
    NaN rows where no width was measured) and grain of one small rendered
    scan per master (see the module docstring)."""
    from kikuchipy_cnn.crystal_map import probabilities
    from kikuchipy_cnn.training.scans import discovery_inputs, render_scan, scan_signal

    grain = np.repeat(np.arange(n_grains), per_grain).reshape(n_grains, per_grain)
    out = {"probs": [], "spectra": [], "d_spacings": [], "grain": [], "structure": []}
    t0 = time.perf_counter()
    for m in range(len(masters)):
        raw, geom = render_scan(masters, np.full(n_grains, m), grain, rng)
        s = scan_signal(raw, geom, masters, [m])
        xmap = s.classify_structure(model=card, pool="none", verbose=0, show_progressbar=False)
        probs, classes = probabilities(xmap)
        if tuple(classes) != tuple(card.classes):
            raise RuntimeError("the map's classes are not the card's")
        inputs = discovery_inputs(s, card)  # as pool="phases" computes them
        ok = np.isfinite(probs).all(axis=1) & inputs["valid"]
        spectra, d_spacings = inputs["spectra"], inputs["d_spacings"]
        out["probs"].append(probs[ok])
        out["spectra"].append(spectra[ok])
        out["d_spacings"].append(d_spacings[ok])
        out["grain"].append(grain.ravel()[ok])
        out["structure"].append(np.full(int(ok.sum()), m))
        if log and (m + 1) % 10 == 0:
            log(f"  {m + 1}/{len(masters)} structures, {time.perf_counter() - t0:.0f} s", flush=True)
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["label"] = np.asarray(masters.labels)[res["structure"]]
    res["classes"] = np.asarray(card.classes)
    return res


def _groups(data, sizes, draws, rng):
    """(structure, grain subset) pairs: ``draws`` random subsets of each size
    per structure (fewer when it has fewer grains)."""
    out = []
    for m in np.unique(data["structure"]):
        grains = np.unique(data["grain"][data["structure"] == m])
        for n in sizes:
            if len(grains) >= n:
                out += [(int(m), rng.choice(grains, n, replace=False)) for _ in range(draws)]
    return out


def _rows(data, m, grains):
    return np.flatnonzero((data["structure"] == m) & np.isin(data["grain"], grains))


def fit_tempering(data, rng, sizes=GROUP_SIZES, draws=5, views=True):
    """β (of :data:`TEMPERING_GRID`) with the least pooled joint log-loss
    over random groups of grains of one structure; returns ``(beta, nll per
    β)``. ``views=False`` pools patterns, not grains."""
    from kikuchipy_cnn.phases import pool_probabilities
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    classes = [str(c) for c in data["classes"]]
    col = {JOINT_CLASSES.index(c): i for i, c in enumerate(classes)}
    nll = np.zeros(len(TEMPERING_GRID))
    groups = _groups(data, sizes, draws, rng)
    for m, grains in groups:
        r = _rows(data, m, grains)
        t = col[int(data["label"][r[0]])]
        v = data["grain"][r] if views else None
        # tempering divides the pooled log-probabilities (up to a constant) by n ** beta
        log0 = np.log(np.maximum(pool_probabilities(data["probs"][r], np.zeros(len(r), int), views=v)[1][0],
                                 1e-300))
        n = len(np.unique(v)) if views else len(r)
        z = log0[None, :] / float(n) ** TEMPERING_GRID[:, None]
        z -= z.max(axis=1, keepdims=True)
        nll -= z[:, t] - np.log(np.exp(z).sum(axis=1))
    nll /= max(len(groups), 1)
    return float(TEMPERING_GRID[int(np.argmin(nll))]), nll


def split_r2_quantiles(data, rng, sizes=GROUP_SIZES, draws=20, rate=FALSE_SPLIT_RATE,
                       signatures=None) -> dict:
    """``{n: (1 - rate) quantile of the first 2-means R²}`` of random groups
    of ``n`` grains of one structure, with the signatures (default
    :data:`~kikuchipy_cnn.phases.DEFAULT_SIGNATURES`) and weights
    :func:`~kikuchipy_cnn.phases.discover_phases` uses."""
    from kikuchipy_cnn.phases import DEFAULT_SIGNATURES, _standardised, _two_means, grain_signatures

    signatures = DEFAULT_SIGNATURES if signatures is None else tuple(signatures)
    per_pattern = {"probabilities": data["probs"], "spectra": data.get("spectra"),
                   "d_spacings": data.get("d_spacings")}
    r2 = {n: [] for n in sizes}
    for m, grains in _groups(data, sizes, draws, rng):
        r = _rows(data, m, grains)
        _, g = np.unique(data["grain"][r], return_inverse=True)
        blocks = grain_signatures({k: None if v is None else v[r] for k, v in per_pattern.items()}, g,
                                  len(grains), signatures)
        w = np.bincount(g, minlength=len(grains)).astype(np.float64)
        r2[len(grains)].append(_two_means(_standardised(blocks, w), w)[1])
    return {n: float(np.quantile(v, 1 - rate)) for n, v in r2.items() if v}


def fit_split_r2(quantiles: dict) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``a + b / n`` to ``{n: R²}``."""
    n = np.array(sorted(quantiles), float)
    y = np.array([quantiles[k] for k in sorted(quantiles)])
    (a, b), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(n), 1 / n]), y, rcond=None)
    return float(a), float(b)


def _save(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.exists(path):
        raise SystemExit(f"{path} exists; choose another --out")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    np.savez(tmp, **data)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="classify small scans of the validation structures")
    r.add_argument("--model", required=True)
    r.add_argument("--split", default="val")
    r.add_argument("--grains", type=int, default=16)
    r.add_argument("--per-grain", type=int, default=2)
    r.add_argument("--seed", type=int, default=11)
    r.add_argument("--out", required=True)
    f = sub.add_parser("fit", help="fit tempering and split_r2 on rendered scans")
    f.add_argument("data")
    f.add_argument("--seed", type=int, default=5)
    f.add_argument("--signatures", default=None, metavar="NAME,NAME",
                   help="discovery signatures the split bar is fitted for (names of "
                   "kikuchipy_cnn.phases.SIGNATURES; default: DEFAULT_SIGNATURES; give those of the "
                   "card the bar is for)")
    args = ap.parse_args(argv)

    if args.cmd == "render":
        if os.path.exists(args.out):
            raise SystemExit(f"{args.out} exists; choose another --out")
        from kikuchipy_cnn.classify import resolve_model
        from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
        from kikuchipy_cnn.training.projection import MasterSet

        card = resolve_model(args.model)
        masters = MasterSet(DEFAULT_CACHE, args.split)
        print(f"{len(masters)} {args.split} structures x {args.grains} grains x {args.per_grain} "
              f"patterns, model {card.name} {card.version}", flush=True)
        data = render_views(card, masters, args.grains, args.per_grain, np.random.default_rng(args.seed))
        data.update(model=np.asarray(f"{card.name} {card.version}"), split=np.asarray(args.split),
                    seed=np.asarray(args.seed))
        _save(args.out, data)
        print(f"{len(data['probs'])} patterns -> {args.out}")
        return
    data = dict(np.load(args.data))
    rng = np.random.default_rng(args.seed)
    print(f"{data['model']}: {len(data['probs'])} patterns of {len(np.unique(data['structure']))} "
          f"{data['split']} structures")
    fitted = {}
    for views in (True, False):
        beta, nll = fit_tempering(data, rng, views=views)
        fitted[views] = beta
        print(f"tempering, pooling {'grains' if views else 'patterns'}: beta = {beta:.2f} "
              f"(pooled joint log-loss {nll.min():.3f}; beta 0: {nll[0]:.3f}, 0.75: "
              f"{nll[int(np.argmin(abs(TEMPERING_GRID - 0.75)))]:.3f}, 1: "
              f"{nll[int(np.argmin(abs(TEMPERING_GRID - 1)))]:.3f})")
    signatures = None if args.signatures is None else tuple(args.signatures.split(","))
    if signatures is not None:
        from kikuchipy_cnn.phases import SIGNATURES

        if not signatures or not set(signatures) <= set(SIGNATURES):
            raise SystemExit(f"--signatures must name some of {list(SIGNATURES)}, not {list(signatures)}")
        if "d_spacings" in signatures and "d_spacings" not in data:
            raise SystemExit(f"{args.data} has no d-spacings (rendered before they were recorded): render again")
    q = split_r2_quantiles(data, rng, signatures=signatures)
    a, b = fit_split_r2(q)
    print("\n| grains in the group | " + " | ".join(str(n) for n in q) + " |")
    print("|---|" + "---|" * len(q))
    print(f"| {100 * (1 - FALSE_SPLIT_RATE):.0f}th percentile of R² | "
          + " | ".join(f"{v:.2f}" for v in q.values()) + " |")
    print(f"| bar {a:.2f} + {b:.2f} / n | " + " | ".join(f"{a + b / n:.2f}" for n in q) + " |")
    block = f"\npooling:\n  tempering: {fitted[True]:.2f}\n  split_r2:\n  - {a:.2f}\n  - {b:.2f}"
    if signatures:
        block += "\n  signatures:\n" + "\n".join(f"  - {x}" for x in signatures)
    print(block)


if __name__ == "__main__":
    main()
