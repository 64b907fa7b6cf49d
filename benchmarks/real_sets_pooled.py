"""Real and third-party pattern sets, each classified as one scan with ``pool="phases"`` (issue 14).

Issue 14's target: kikuchipy's Ni scan and each ``../shared/data`` set with known
geometry, taken as one scan, get the right class with probability >= 0.9. A set is
the patterns of one ``cases.tsv`` phase with the same pattern shape and a detector
from ``detectors.tsv`` (the Bruker PC of each file, its tilts, its beam energy), plus
kikuchipy's 3 x 3 Ni scan (its own detector). Each set is stacked into one signal
(one pattern per navigation position, each with its own PC) and classified with
``classify_structure()`` (default ``pool="phases"``); the patterns of a stacked set
are not neighbours on a grid, so each usually is its own grain and counts as one
view. Prints per set: patterns, phases found (1 is right: one phase per set), the
pooled class of the phase with most patterns and its pooled probability, and the
per-pattern accuracy beside it, at every level; then the phase's cells: the
conventional cell of its pooled class (``xmap.pooled_phases.conventional_cells``
times ``cell_size``) and its shortest lattice vector in Å against the phase's
known room-temperature lattice (:data:`KNOWN_SHORTEST`; the shortest vector is
the reduced cell's ``a``, whatever the class).

    python benchmarks/real_sets_pooled.py [--model kcnn-bands-mlp]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

LEVELS = ("crystal_system", "bravais_lattice", "laue_class")

#: Shortest lattice vector (Å) of the phases of the sets: fcc a / sqrt 2, bcc
#: a sqrt 3 / 2, hexagonal a (Ni 3.524, Si 5.431, Al 4.049, alpha-Fe 2.8665,
#: alpha-Ti a 2.951 Å)
KNOWN_SHORTEST = {"Ni": 3.524 / 2**0.5, "Si": 5.431 / 2**0.5, "Al": 4.049 / 2**0.5,
                  "ferrite": 2.8665 * 3**0.5 / 2, "Ti-alpha": 2.951}


def real_sets(data_dir):
    """``{name: (signal, truth)}``: the stacked sets (see the module docstring)."""
    import kikuchipy as kp
    from kikuchipy.detectors import EBSDDetector

    from kikuchipy_cnn.training.real_data import load_cases

    groups = defaultdict(list)
    for case in load_cases(data_dir):
        if case.geometry is None:
            continue
        shape = case.signal.axes_manager.signal_shape[::-1]
        groups[(case.path.parent.name, case.phase, shape)].append(case)
    out = {}
    for (folder, phase, shape), cases in sorted(groups.items()):
        data = np.concatenate([np.asarray(c.signal.data, np.float32).reshape(-1, *shape) for c in cases])
        pcs = np.concatenate([np.broadcast_to(c.signal.detector.pc.reshape(-1, 3),
                                              (int(np.prod(c.signal.axes_manager.navigation_shape or (1,))), 3))
                              for c in cases])
        d0 = cases[0].signal.detector
        if any(c.signal.detector.tilt != d0.tilt or c.signal.detector.sample_tilt != d0.sample_tilt
               for c in cases):
            raise ValueError(f"{folder} {phase}: the files' tilts differ; split the set")
        s = kp.signals.EBSD(data)
        s.detector = EBSDDetector(shape=shape, pc=pcs, convention="bruker", tilt=d0.tilt,
                                  sample_tilt=d0.sample_tilt)
        energy = cases[0].signal.metadata.get_item("Acquisition_instrument.SEM.beam_energy")
        if energy is not None:
            s.metadata.set_item("Acquisition_instrument.SEM.beam_energy", energy)
        c = cases[0]
        out[f"{folder} {phase} {shape[1]}x{shape[0]} ({c.kind})"] = (
            s, {"crystal_system": c.crystal_system, "bravais_lattice": c.bravais_lattice,
                "laue_class": c.laue_class, "phase": phase})
    ni = kp.data.nickel_ebsd_small()
    out["kikuchipy nickel_ebsd_small 60x60 (exp)"] = (
        ni, {"crystal_system": "cubic", "bravais_lattice": "cF", "laue_class": "m-3m", "phase": "Ni"})
    return out


def main(argv=None):
    import kikuchipy_cnn
    from kikuchipy_cnn.phases import format_cell, format_conventional
    from kikuchipy_cnn.symmetry import joint_class_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="kcnn-bands-mlp", help="model name or card.yaml path")
    ap.add_argument("--data", default=None, help="folder with cases.tsv (default ../shared/data)")
    args = ap.parse_args(argv)
    print("| set | patterns | phases found | pooled class (largest phase) | pooled probability "
          "| pooled right: system / Bravais / Laue | per pattern right: system / Bravais / Laue |")
    print("|---|---|---|---|---|---|---|")
    cells = []
    for name, (s, truth) in real_sets(args.data).items():
        xmap = s.classify_structure(model=args.model, min_score=0, verbose=0, show_progressbar=False)
        none = s.classify_structure(model=args.model, min_score=0, pool="none", verbose=0,
                                    show_progressbar=False)
        if hasattr(xmap, "pooled_phases"):
            pp = xmap.pooled_phases
            major = int(np.argmax(pp.n_patterns))
            joint = pp.classes[int(np.argmax(pp.probabilities[major]))]
            n, found, score = int(pp.n_patterns.sum()), len(pp.names), float(pp.scores[major])
        else:  # one pattern: nothing to pool, its own answer
            probs, classes = kikuchipy_cnn.probabilities(none)
            joint, n, found, score = classes[int(np.argmax(probs[0]))], 1, 1, float(probs[0].max())
        info = joint_class_info(joint)
        lab = kikuchipy_cnn.labels(none)
        per = [np.mean(np.asarray(lab[level]) == truth[level]) for level in LEVELS]
        pooled = ["yes" if info[level] == truth[level] else "no" for level in LEVELS]
        print(f"| {name} | {n} | {found} | {joint} "
              f"| {score:.2f} | {' / '.join(pooled)} "
              f"| {' / '.join(f'{v:.2f}' for v in per)} |", flush=True)
        if hasattr(xmap, "pooled_phases") and xmap.pooled_phases.cells is not None:
            known = KNOWN_SHORTEST.get(truth["phase"], float("nan"))
            size = float(pp.cell_size[major])
            cells.append(f"| {name} | {joint} | {format_conventional(pp.conventional_cells[major], size)} "
                         f"| {format_cell(pp.cells[major], pp.cell_support[major], size)} "
                         f"| {size:.3f} / {known:.3f} ({size / known:.3f}) |")
    if cells:
        print("\n| set | pooled class | conventional cell | reduced cell (share of grains) "
              "| shortest vector found / known, Å (ratio) |")
        print("|---|---|---|---|---|")
        print("\n".join(cells))


if __name__ == "__main__":
    main()
