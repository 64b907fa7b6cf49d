"""Band-model saliency (``get_saliency(method="bands")``) on kikuchipy's Ni
patterns: the figure of docs/saliency.md and its cost against
``classify_structure`` with the same model, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/band_saliency.py \
        [--figure docs/_static/saliency_bands_ni.png] [--repeat 1]

The patterns are ``kp.data.nickel_ebsd_small()`` (3 x 3 patterns of 60 x 60,
with their detector PC, beam energy and static background).
"""

import argparse
import time

import numpy as np


def figure(path, model="kcnn-bands-mlp", index=(1, 2)):
    import kikuchipy as kp
    import matplotlib

    matplotlib.use("Agg")
    import kikuchipy_cnn  # noqa: F401  (adds get_saliency to EBSD)

    s = kp.data.nickel_ebsd_small().inav[index]
    sal = s.get_saliency(model=model, show_progressbar=False)
    fig = sal.plot_overlay(s, alpha=0.5)
    fig.set_size_inches(5.2, 4.4)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    # the numbers behind the heatmap
    from kikuchipy_cnn.bands import detect_bands, pixel_angle
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.engine import get_session
    from kikuchipy_cnn.preprocessing import static_background_divisor
    from kikuchipy_cnn.saliency import _band_occlusion

    card = resolve_model(model)
    x = np.asarray(s.data, np.float32)[None] / static_background_divisor(s.static_background, s.data.shape)
    pc = np.asarray(s.detector.pc, np.float64).reshape(1, 3)
    bands = detect_bands(x, pc, n_bands=card.band_settings["n_bands"])
    probs, t, drops = _band_occlusion(bands, float(sal.metadata.Saliency.wavelength),
                                      pixel_angle(s.data.shape, pc)[0], get_session(card), 64)
    d = drops[np.isfinite(drops)]
    print(f"pattern {index}: {card.classes[t]} p = {probs[0, t]:.3f}; {len(d)} bands, "
          f"{(d > 0.01).sum()} with drop > 0.01, {(d < -0.01).sum()} with drop < -0.01; "
          f"drops sorted: {np.round(np.sort(d)[::-1], 3).tolist()}")
    return sal


def cost(model="kcnn-bands-mlp", repeat=1):
    import kikuchipy as kp

    import kikuchipy_cnn  # noqa: F401

    s = kp.data.nickel_ebsd_small()
    n = int(np.prod(s.axes_manager.navigation_shape))
    # warm-up (sessions, PyEBSDIndex plans, numba)
    s.inav[0, 0].classify_structure(model=model, pool="none", verbose=0, show_progressbar=False)
    t_cls, t_sal = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        s.classify_structure(model=model, pool="none", verbose=0, show_progressbar=False)
        t_cls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s.get_saliency(model=model, show_progressbar=False)
        t_sal.append(time.perf_counter() - t0)
    c, g = min(t_cls), min(t_sal)
    print(f"{n} patterns of {s.axes_manager.signal_shape}, model {model}")
    print(f"classify_structure(pool='none'): {c:.2f} s = {n / c:.2f} patterns/s")
    print(f"get_saliency(method='bands'):    {g:.2f} s = {n / g:.3f} patterns/s ({g / c:.1f} x the time)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--figure", default=None)
    p.add_argument("--model", default="kcnn-bands-mlp")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--no-cost", action="store_true")
    args = p.parse_args()
    if args.figure:
        figure(args.figure, args.model)
        print(f"Wrote {args.figure}")
    if not args.no_cost:
        cost(args.model, args.repeat)


if __name__ == "__main__":
    main()
