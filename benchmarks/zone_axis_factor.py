"""Zone-axis factor of a model's saliency on dynamical Ni patterns.

kikuchipy's EMsoft Ni master pattern is projected at random known orientations
onto a 60x60 detector; the low-index zone axes ({111}, {200}, {220} band
intersections) come from kikuchipy's geometrical simulation at the same
orientations. The factor is the mean CAM saliency within a few pixels of the
zone axes divided by the mean over the pattern (see
``kikuchipy_cnn.saliency.zone_axis_factor``). Also saves a figure.

    python benchmarks/zone_axis_factor.py [--model NAME] [--n 50] [--figure docs/_static/saliency_ni.png]
"""

import argparse

import numpy as np


def dynamical_ni_with_zone_axes(n=50, size=60, seed=0):
    import kikuchipy as kp
    from diffpy.structure import Atom, Lattice, Structure
    from diffsims.crystallography import ReciprocalLatticeVector
    from orix.crystal_map import Phase
    from orix.quaternion import Rotation

    rng = np.random.default_rng(seed)
    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    rot = Rotation.random(n)
    det = kp.detectors.EBSDDetector(shape=(size, size), pc=(0.42, 0.22, 0.50), sample_tilt=70)
    s = mp.get_patterns(rot, det, energy=20, compute=True, show_progressbar=False)
    phase = Phase(
        name="ni", space_group=225,
        structure=Structure(lattice=Lattice(3.52, 3.52, 3.52, 90, 90, 90), atoms=[Atom("Ni", [0, 0, 0])]),
    )
    ref = ReciprocalLatticeVector(phase, hkl=[[1, 1, 1], [2, 0, 0], [2, 2, 0]]).symmetrise()
    sim = kp.simulations.KikuchiPatternSimulator(ref).on_detector(det, rot)
    za = [sim.zone_axes_coordinates(i) for i in range(n)]
    return s, za


def main():
    import kikuchipy_cnn
    from kikuchipy_cnn.saliency import zone_axis_factor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--radius", type=float, default=3.0)
    p.add_argument("--figure", default=None)
    args = p.parse_args()
    s, za = dynamical_ni_with_zone_axes(args.n)
    sal = s.get_saliency(model=args.model, show_progressbar=False)
    f = zone_axis_factor(sal.data, za, args.radius)
    print(f"zone-axis factor over {np.isfinite(f).sum()} dynamical Ni patterns "
          f"(radius {args.radius} px): mean {np.nanmean(f):.2f}, median {np.nanmedian(f):.2f}, "
          f"fraction > 1: {(f[np.isfinite(f)] > 1).mean():.2f}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 4, figsize=(12, 6))
        for j in range(4):
            axes[0, j].imshow(s.data[j], cmap="gray")
            axes[1, j].imshow(s.data[j], cmap="gray")
            axes[1, j].imshow(sal.data[j], cmap="inferno", alpha=0.5, vmin=0, vmax=1)
            for ax in axes[:, j]:
                ax.scatter(*za[j].T, s=30, facecolor="none", edgecolor="cyan")
                ax.set_axis_off()
            axes[0, j].set_title(f"factor {f[j]:.2f}")
        fig.suptitle("Dynamical Ni patterns, zone axes (cyan) and CAM saliency")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=100)
        print(f"Wrote {args.figure}")


if __name__ == "__main__":
    main()
