"""Lattice reconstruction with band widths against directions alone.

``reconstruct_lattice(..., use_widths=True)`` builds its basis triples from
band directions and widths (lengths ``2 sin(w/2) / lambda``);
``use_widths=False`` ignores the widths and votes for the triples' length
ratios from the other bands' directions (``direction_bases``). Both are run,
with the same bands, on

* the committed rendered band sets of held-out (test-split) structures
  (``models/training-data/band-sets/rendered_test.npz``: 200 patterns of 50
  structures, 60-480 px, as the band model sees them), by detector size;
* kikuchipy's 9 experimental Ni patterns (60 px, static background divided,
  bands detected at the file's PC);
* the ``../shared/data`` patterns whose geometry is known (``detectors.tsv``),
  bands detected at that PC (skipped without ``../shared``).

Printed: the fraction whose metric ladder at tolerance 0.05 gives the true
Bravais lattice, and the true crystal family (first letter: a, m, o, t, h, c),
and the mean time per pattern. Markdown.

    python benchmarks/lattice_directions.py [--skip-shared]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict

import numpy as np

TOLERANCE = 0.05


def _score(rows: dict, key: str, normals, widths, strength, wavelength, truth: str) -> None:
    from kikuchipy_cnn.lattice import reconstruct_lattice

    for use_widths in (True, False):
        t = time.perf_counter()
        fit = reconstruct_lattice(normals, widths, strength, wavelength, use_widths=use_widths)
        dt = time.perf_counter() - t
        b = fit.bravais_lattice(TOLERANCE) if fit is not None else "-"
        rows[(key, use_widths)].append((b == truth, b[0] == truth[0], dt))


def rendered(rows: dict) -> None:
    from kikuchipy_cnn.symmetry import JOINT_CLASSES
    from kikuchipy_cnn.training.band_sets import load_band_sets
    from kikuchipy_cnn.training.master_patterns import TRAINING_DATA

    a, _ = load_band_sets(TRAINING_DATA / "band-sets" / "rendered_test.npz")
    for i in range(len(a["normals"])):
        v = a["valid"][i]
        size = int(min(a["shape"][i]))
        key = "rendered held-out, 60-99 px" if size < 100 else "rendered held-out, >= 100 px"
        truth = JOINT_CLASSES[int(a["label"][i])].split()[0]
        _score(rows, key, a["normals"][i][v], a["width"][i][v], a["strength"][i][v], float(a["wavelength"][i]),
               truth)


def _signal_bands(rows: dict, key: str, s, truth: str) -> None:
    from kikuchipy_cnn.bands import detect_bands
    from kikuchipy_cnn.pc_estimation import _input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, _, pcs, _, wavelength = _input(s, None, None, "auto", None)
    b = detect_bands(data, pcs[: len(data)], n_bands=16)
    for i in range(len(data)):
        v = b.valid[i]
        _score(rows, key, b.normals[i][v], b.width[i][v], b.strength[i][v], wavelength, truth)


def kikuchipy_ni(rows: dict) -> None:
    import kikuchipy as kp

    _signal_bands(rows, "kikuchipy Ni, 9 experimental, 60 px", kp.data.nickel_ebsd_small(), "cF")


def shared(rows: dict) -> None:
    from kikuchipy_cnn.training.real_data import load_cases

    for case in load_cases():
        if case.geometry is None:
            continue
        _signal_bands(rows, "../shared/data with known geometry", case.signal, case.bravais_lattice)


def table(rows: dict) -> str:
    out = ["| patterns | n | Bravais: widths | Bravais: directions | family: widths | family: directions "
           "| s / pattern (widths, directions) |", "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys(k for k, _ in rows):
        w, d = np.array(rows[(key, True)], float), np.array(rows[(key, False)], float)
        out.append(f"| {key} | {len(w)} | {w[:, 0].mean():.3f} | {d[:, 0].mean():.3f} | {w[:, 1].mean():.3f} "
                   f"| {d[:, 1].mean():.3f} | {w[:, 2].mean():.2f}, {d[:, 2].mean():.2f} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-shared", action="store_true")
    args = ap.parse_args(argv)
    rows: dict = defaultdict(list)
    rendered(rows)
    kikuchipy_ni(rows)
    if not args.skip_shared:
        shared(rows)
    print(f"Metric ladder at tolerance {TOLERANCE}: fraction with the true Bravais lattice / crystal family.")
    print(table(rows))


if __name__ == "__main__":
    main()
