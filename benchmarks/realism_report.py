"""Realism report: simulated training patterns against real ones, after the
shared preprocessing.

Writes ``docs/realism/report.md`` with two figures: preprocessed patterns side by
side (simulated from the validation masters vs kikuchipy's raw Ni patterns and the
files of ``../shared/data``), and the distributions that the model sees: pixel
values of the preprocessed input, radially averaged power spectra, and a
band-contrast statistic (standard deviation of a 3-px high-pass within the mask).

    python benchmarks/realism_report.py [--n 512]
"""

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def radial_power(x: np.ndarray) -> np.ndarray:
    """Mean radially averaged power spectrum of ``(n, s, s)`` images."""
    n, s, _ = x.shape
    f = np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(1, 2))) ** 2
    yy, xx = np.mgrid[:s, :s]
    r = np.hypot(yy - s // 2, xx - s // 2).astype(int)
    out = np.array([f[:, r == k].mean() for k in range(s // 2)])
    return out / out.sum()


def band_contrast(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    from kikuchipy_cnn.preprocessing import circular_mask

    m = circular_mask(x.shape[-1])
    hp = x - gaussian_filter(x, (0, 3, 3))
    return hp[:, m].std(axis=1)


def main():
    import kikuchipy as kp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kikuchipy_cnn.preprocessing import preprocess
    from kikuchipy_cnn.training.kinematical import DEFAULT_OUT as STEP_OUT
    from kikuchipy_cnn.training.kinematical import FITTED_OUT
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE
    from kikuchipy_cnn.training.projection import MasterSet
    from kikuchipy_cnn.training.real_data import load_cases
    from kikuchipy_cnn.training.realism import make_batch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "realism")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    # Simulated patterns of the validation structures from each source of
    # master patterns: dynamical (de-ebsd), kinematical with the band profile
    # fitted to the dynamical masters, and plain kinematical steps
    split = "val" if (DEFAULT_CACHE / "val").is_dir() else "train"
    sim, sources = {}, {}
    for name, directory in (("dynamical", DEFAULT_CACHE), ("kinematical, fitted bands", FITTED_OUT),
                            ("kinematical, step bands", STEP_OUT)):
        if not (directory / split).is_dir():
            continue
        masters = MasterSet(directory, split)
        x, _, meta = make_batch(masters, args.n, np.random.default_rng(0))
        sim[f"simulated, {name}"] = x[np.asarray(meta["valid"]), 0]
        sources[name] = len(masters)

    groups = {}
    ni = kp.data.nickel_ebsd_small()
    groups["kikuchipy Ni, raw (exp)"] = preprocess(ni.data.reshape(-1, 60, 60), static_background=ni.static_background)[0][:, 0]
    for case in load_cases():
        data = case.signal.data.reshape((-1,) + case.signal.data.shape[-2:])
        bg = getattr(case.signal, "static_background", None)
        bg = bg if bg is not None and bg.shape == data.shape[1:] else None
        key = f"{case.path.parent.name} ({case.kind})"
        groups.setdefault(key, []).append(preprocess(data, static_background=bg)[0][:, 0])
    groups = {k: (np.concatenate(v) if isinstance(v, list) else v) for k, v in groups.items()}
    groups = {**sim, **groups}

    # Figure 1: side by side
    names = list(groups)
    fig, axes = plt.subplots(len(names), 6, figsize=(9, 1.6 * len(names)))
    for i, name in enumerate(names):
        x = groups[name]
        pick = np.linspace(0, len(x) - 1, 6).astype(int)
        for j, k in enumerate(pick):
            axes[i, j].imshow(x[k], cmap="gray", vmin=-2.5, vmax=2.5)
            axes[i, j].set_axis_off()
        axes[i, 0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(args.out / "side_by_side.png", dpi=90)
    plt.close(fig)

    # Figure 2: statistics
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    stats = {}
    for name, x in groups.items():
        m = np.abs(x).sum(axis=0) > 0
        vals = x[:, m].ravel()
        axes[0].hist(vals, bins=np.linspace(-4, 4, 81), density=True, histtype="step", label=name)
        pw = radial_power(x)
        axes[1].semilogy(pw, label=name)
        bc = band_contrast(x)
        axes[2].hist(bc, bins=np.linspace(0, 1.2, 41), density=True, histtype="step", label=name)
        stats[name] = {
            "n": len(x),
            "skewness": float(((vals - vals.mean()) ** 3).mean() / vals.std() ** 3),
            "high-frequency power (k >= 16)": float(pw[16:].sum()),
            "band contrast median": float(np.median(bc)),
        }
    axes[0].set_title("preprocessed pixel values")
    axes[1].set_title("radial power spectrum")
    axes[2].set_title("band contrast (3 px high-pass std)")
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.out / "statistics.png", dpi=90)
    plt.close(fig)

    lines = ["# Realism report", "",
             "Generated by `python benchmarks/realism_report.py`: simulated patterns from the "
             f"training engine ({split} structures; master patterns: "
             + ", ".join(f"{k} {v}" for k, v in sources.items())
             + ") against real patterns, all after the same preprocessing "
             "(`kikuchipy_cnn.preprocess`).", "",
             "![side by side](side_by_side.png)", "", "![statistics](statistics.png)", "",
             "| data | n | skewness | high-frequency power (k >= 16) | band contrast median |",
             "|---|---|---|---|---|"]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['n']} | {s['skewness']:.2f} | "
                     f"{s['high-frequency power (k >= 16)']:.3f} | {s['band contrast median']:.3f} |")
    from kikuchipy_cnn.training.band_profile import PROFILE_FILE

    if PROFILE_FILE.exists():
        import json

        c = json.loads(PROFILE_FILE.read_text())["comparison"]
        lines += ["", "Master patterns, kinematical against dynamical (de-ebsd) of the same "
                  f"structure, normalised cross-correlation over {c['step']['n']} validation and "
                  "test structures (`python -m kikuchipy_cnn.training.band_profile`): step bands "
                  f"mean {c['step']['mean']:.2f} (median {c['step']['median']:.2f}), fitted bands "
                  f"mean {c['fitted']['mean']:.2f} (median {c['fitted']['median']:.2f})."]
    real = {k: v for k, v in stats.items() if not k.startswith("simulated")}
    simulated = {k: v for k, v in stats.items() if k.startswith("simulated")}

    def _range(group, key):
        vals = [v[key] for v in group.values()]
        return f"{min(vals):.3f}-{max(vals):.3f}"

    hf, bc = "high-frequency power (k >= 16)", "band contrast median"
    lines += [
        "", "## What still differs", "",
        f"- Fine detail: high-frequency power is {_range(simulated, hf)} in the simulations and "
        f"{_range(real, hf)} in the other patterns (experimental and third-party simulations). The simulated master patterns are "
        "coarser than the detector (de-ebsd Lambert grids of 77-161 px per hemisphere, "
        "kinematical 129 px) and their reflectors stop at d = 0.45 Å or more (up to about 2 Å "
        "for the largest cells of the dynamical set), so fine bands and sharp "
        "edges are missing; noise fills part of that band of frequencies instead.",
        f"- Band contrast (3 px high-pass): {_range(simulated, bc)} simulated against "
        f"{_range(real, bc)} in the other patterns.",
        "- Kinematical masters drawn with plain step bands have over-bright zone axes (the "
        "highest skewness of the simulated sets); the fitted band profile brings their skewness, spectra and "
        "band contrast to those of the dynamical masters.",
    ]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    for line in lines[-len(stats) - 11:]:
        print(line)


if __name__ == "__main__":
    main()
