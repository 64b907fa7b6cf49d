"""Zone-axis factor of a model's saliency on dynamical Ni patterns.

kikuchipy's EMsoft Ni master pattern is projected at random known orientations
onto a 60x60 detector; the low-index zone axes ({111}, {200}, {220} band
intersections) come from kikuchipy's geometrical simulation at the same
orientations. The factor is the mean CAM saliency within a few pixels of the
zone axes divided by the mean over the pattern (see
``kikuchipy_cnn.saliency.zone_axis_factor``). Also saves a figure.

    python benchmarks/zone_axis_factor.py [--model NAME] [--n 50] \
        [--figure docs/_static/saliency_ni_al.png]

The figure shows, like Kaufmann et al. (2020, Fig. 2), a dynamical Ni pattern and
an Al-like FCC pattern (kinematical master pattern of Al, a = 4.05 Å) at nearly
the same orientation (2° apart), their CAM heatmaps and the labelled zone axes.
"""

import argparse

import numpy as np


def dynamical_ni_with_zone_axes(n=50, size=60, seed=0):
    import kikuchipy as kp
    from diffpy.structure import Atom, Lattice, Structure
    from diffsims.crystallography import ReciprocalLatticeVector
    from orix.crystal_map import Phase
    from orix.quaternion import Rotation

    # uniform random orientations from normalised Gaussian quaternions, seeded
    q = np.random.default_rng(seed).normal(size=(n, 4))
    rot = Rotation(q / np.linalg.norm(q, axis=1, keepdims=True))
    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
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
          f"(radius {args.radius} px), CAM of the predicted class: {summary(f)}")
    # References on the same patterns: a heatmap that is the pattern itself (zone
    # axes are bright in dynamical patterns), and the best a heatmap with the
    # CAM's resolution can do (blobs on the zone axes, pooled to the CAM grid)
    pats = s.data.astype(np.float32)
    print(f"  reference, pattern intensity as heatmap: "
          f"{summary(zone_axis_factor(_unit(pats), za, args.radius))}")
    grid = _cam_grid(args.model)
    print(f"  reference, zone-axis blobs at the CAM's {grid}x{grid} resolution (ceiling): "
          f"{summary(zone_axis_factor(_blobs_at_grid(za, pats.shape[-1], args.radius, grid), za, args.radius))}")
    if args.figure:
        ni_al_figure(args.model, args.figure)
        print(f"Wrote {args.figure}")


def summary(f):
    """Mean, its standard error, median and fraction above 1 of finite factors."""
    f = f[np.isfinite(f)]
    sem = f.std(ddof=1) / np.sqrt(len(f))
    return (f"mean {f.mean():.2f} ± {sem:.2f} (s.e.), median {np.median(f):.2f}, "
            f"fraction > 1: {(f > 1).mean():.2f}")


def _cam_grid(model):
    """Side of the model's CAM grid (its ``cam`` output)."""
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.engine import get_session

    card = resolve_model(model)
    x = np.zeros((1, *card.data["input"]["shape"][1:]), np.float32)
    return get_session(card, ["CPUExecutionProvider"]).run(x, ("cam",), 1)["cam"].shape[-1]


def _unit(images):
    """Scale each image to [0, 1] inside the circle the model sees."""
    from kikuchipy_cnn.preprocessing import circular_mask

    seen = circular_mask(images.shape[-1]).astype(bool)
    v = images[:, seen]
    lo, hi = v.min(1)[:, None, None], v.max(1)[:, None, None]
    return np.where(seen, (images - lo) / (hi - lo), 0)


def _blobs_at_grid(za, size, sigma, grid):
    """Gaussian blobs on the zone axes, resized to ``grid`` and back the
    way CAMs are mapped to the pattern."""
    from kikuchipy_cnn.saliency import _to_pattern_frame
    from kikuchipy_cnn.preprocessing import resize

    yy, xx = np.mgrid[:size, :size]
    blobs = np.zeros((len(za), size, size), np.float32)
    for i, z in enumerate(za):
        for x, y in np.asarray(z, dtype=float).reshape(-1, 2):
            blobs[i] += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return _to_pattern_frame(resize(blobs, grid), (size, size), circular=True)


def ni_al_figure(model, path, size=120):
    """Ni (dynamical) and Al-like (kinematical) FCC patterns 2° apart, their
    CAM heatmaps and labelled zone axes."""
    import kikuchipy as kp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from diffpy.structure import Atom, Lattice, Structure
    from diffsims.crystallography import ReciprocalLatticeVector
    from orix.crystal_map import Phase
    from orix.quaternion import Rotation

    import kikuchipy_cnn
    from kikuchipy_cnn.training.kinematical import kinematical_master_pattern

    det = kp.detectors.EBSDDetector(shape=(size, size), pc=(0.45, 0.30, 0.55), sample_tilt=70)
    r_ni = Rotation.from_euler(np.radians([[10, 40, 20]]))
    r_al = Rotation.from_euler(np.radians([[11, 41.5, 21]]))
    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    p_ni = mp.get_patterns(r_ni, det, energy=20, compute=True, show_progressbar=False)
    al = {"lattice": [4.05] * 3 + [90] * 3,
          "atoms": [["Al", [0, 0, 0]], ["Al", [0.5, 0.5, 0]], ["Al", [0.5, 0, 0.5]], ["Al", [0, 0.5, 0.5]]]}
    m_al = kinematical_master_pattern(al, 20, 200, 0.5)
    mp_al = kp.signals.EBSDMasterPattern(
        m_al, projection="lambert", hemisphere="both", phase=mp.phase,
    )
    mp_al.axes_manager[0].name = "hemisphere"
    p_al = mp_al.get_patterns(r_al, det, energy=None, compute=True, show_progressbar=False)
    fig, axes = plt.subplots(2, 2, figsize=(8, 8))
    for j, (name, p, rot) in enumerate((("Ni (dynamical)", p_ni, r_ni), ("Al-like (kinematical)", p_al, r_al))):
        pats = kp.signals.EBSD(p.data.reshape(1, size, size).astype(np.float32))
        xmap = pats.classify_structure(model=model, min_score=0, verbose=0, show_progressbar=False)
        sal = pats.get_saliency(model=model, show_progressbar=False)
        lattice = 3.52 if j == 0 else 4.05
        phase = Phase(name="fcc", space_group=225, structure=Structure(
            lattice=Lattice(lattice, lattice, lattice, 90, 90, 90), atoms=[Atom("Ni", [0, 0, 0])]))
        ref = ReciprocalLatticeVector(phase, hkl=[[1, 1, 1], [2, 0, 0], [2, 2, 0], [3, 1, 1]]).symmetrise()
        sim = kp.simulations.KikuchiPatternSimulator(ref).on_detector(det, rot)
        za = sim.zone_axes_coordinates(exclude_nan=False)
        za_labels = sim._zone_axes_labels_as_array()
        label = kikuchipy_cnn.labels(xmap)["joint"][0]
        axes[0, j].imshow(pats.data[0], cmap="gray")
        axes[0, j].set_title(f"{name}: {label} ({xmap.scores[0]:.2f})")
        axes[1, j].imshow(pats.data[0], cmap="gray")
        axes[1, j].imshow(sal.data[0], cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        for (x, y), t in zip(za, za_labels):
            if np.isfinite(x):
                axes[1, j].scatter(x, y, s=40, facecolor="none", edgecolor="cyan")
                axes[1, j].text(x + 2, y - 2, f"[{t}]", color="cyan", fontsize=7)
        for ax in axes[:, j]:
            ax.set_axis_off()
    fig.suptitle("CAM saliency of the predicted class, zone axes in cyan")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
