"""Evaluate a registered model, per level (crystal system, Bravais lattice,
Laue class, joint class): top-1 accuracy, confusion matrix, expected
calibration error and accuracy vs coverage as ``min_score`` rises, on

a. held-out simulated structures (test split, never seen in training);
b. every pattern in ``../shared/data`` (``cases.tsv``), classified through
   ``classify_structure()`` from the raw files;
c. kikuchipy's 9 experimental Ni patterns, raw;
d. kikuchipy's EMsoft dynamical Ni master pattern projected at random
   orientations, pattern centres, detector sizes (60-240 px) and noise
   levels.

Run::

    python -m kikuchipy_cnn.training.evaluate --model kcnn-resnet-s \\
        --out models/kcnn-resnet-s/evaluation.md

It writes a Markdown report and, beside it, the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kikuchipy_cnn.symmetry import LEVELS as SYMMETRY_LEVELS
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info, level_names, marginalise
from kikuchipy_cnn.training.calibrate import expected_calibration_error

LEVELS = SYMMETRY_LEVELS + ("joint",)
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)


def level_probabilities(probs: np.ndarray, classes, level: str) -> np.ndarray:
    return probs if level == "joint" else marginalise(probs, classes, level)


def level_index(joint_labels, level: str) -> np.ndarray:
    names = JOINT_CLASSES if level == "joint" else level_names(level)
    key = None if level == "joint" else level
    return np.array(
        [names.index(j if key is None else joint_class_info(j)[key]) for j in joint_labels]
    )


def metrics(probs: np.ndarray, joint_labels, classes=JOINT_CLASSES) -> dict:
    """Per-level metrics of joint-class probabilities against joint labels."""
    out = {"n": int(len(joint_labels))}
    for level in LEVELS:
        p = level_probabilities(probs, classes, level)
        y = level_index(joint_labels, level)
        pred = p.argmax(axis=1)
        conf = p.max(axis=1)
        names = JOINT_CLASSES if level == "joint" else level_names(level)
        cm = np.zeros((len(names), len(names)), dtype=int)
        np.add.at(cm, (y, pred), 1)
        coverage = []
        for t in THRESHOLDS:
            keep = conf >= t
            coverage.append(
                {
                    "min_score": t,
                    "coverage": float(keep.mean()),
                    "accuracy": float((pred[keep] == y[keep]).mean()) if keep.any() else None,
                }
            )
        out[level] = {
            "accuracy": float((pred == y).mean()),
            "ece": float(expected_calibration_error(p, y)),
            "confusion": cm.tolist(),
            "names": list(names),
            "coverage": coverage,
        }
    return out


def _classify(signal, model):
    import kikuchipy_cnn  # noqa: F401

    xmap = signal.classify_structure(model=model, min_score=0, verbose=0, show_progressbar=False, pool="none")
    probs, classes = kikuchipy_cnn.probabilities(xmap)
    assert classes == JOINT_CLASSES
    return probs


def eval_shared(model, data_dir=None) -> tuple[dict, list]:
    from kikuchipy_cnn.training.real_data import load_cases

    probs, labels, rows = [], [], []
    for case in load_cases(data_dir):
        p = _classify(case.signal, model)
        for pi in p:
            probs.append(pi)
            labels.append(case.joint_class)
            j = JOINT_CLASSES[int(np.argmax(pi))]
            rows.append(
                (case.path.name, case.kind, case.joint_class, j, float(pi.max()),
                 joint_class_info(j)["bravais_lattice"] == case.bravais_lattice,
                 joint_class_info(j)["crystal_system"] == case.crystal_system)
            )
    return metrics(np.array(probs), labels), rows


def eval_nickel_raw(model) -> tuple[dict, list]:
    import kikuchipy as kp

    s = kp.data.nickel_ebsd_small()
    p = _classify(s, model)
    rows = [(f"ni[{i // 3},{i % 3}]", "exp", "cF m-3m", JOINT_CLASSES[int(np.argmax(pi))],
             float(pi.max()), None, None) for i, pi in enumerate(p)]
    return metrics(p, ["cF m-3m"] * len(p)), rows


def dynamical_nickel_patterns(n: int = 600, seed: int = 0):
    """EMsoft Ni master pattern projected at random orientations, PCs,
    detector sizes 60-240 px and noise levels; yields EBSD signals."""
    import kikuchipy as kp
    from orix.quaternion import Rotation

    from kikuchipy_cnn.training.projection import random_quaternions

    rng = np.random.default_rng(seed)
    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
    sizes = (60, 80, 120, 160, 240)
    per = int(np.ceil(n / (len(sizes) * 3)))
    for size in sizes:
        for noise in ("none", "moderate", "strong"):
            pc = (rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.55), rng.uniform(0.5, 0.7))
            det = kp.detectors.EBSDDetector(
                shape=(size, size), pc=pc, sample_tilt=rng.uniform(68, 72),
                tilt=rng.uniform(0, 8),
            )
            rot = Rotation(random_quaternions(per, rng))
            s = mp.get_patterns(rot, det, energy=20, compute=True, show_progressbar=False, dtype_out=np.float32)
            data = s.data.astype(np.float64)
            data = (data - data.min()) / (data.max() - data.min())
            if noise != "none":
                counts = 200 if noise == "moderate" else 30
                data = rng.poisson(data * counts + 1.0).astype(np.float32)
            out = kp.signals.EBSD(data.astype(np.float32))
            out.detector = det  # the geometry the patterns were projected with
            out.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 20.0)
            yield f"{size}px/{noise}", out


def eval_dynamical_nickel(model, n=600) -> tuple[dict, list]:
    probs, rows = [], []
    for name, s in dynamical_nickel_patterns(n):
        p = _classify(s, model)
        probs.append(p)
        acc = float((p.argmax(axis=1) == JOINT_CLASSES.index("cF m-3m")).mean())
        rows.append((name, "dyn", "cF m-3m", f"{acc:.3f} correct", float(p.max(axis=1).mean()),
                     None, None))
    p = np.concatenate(probs)
    return metrics(p, ["cF m-3m"] * len(p)), rows


def eval_simulated_test(model, n=4000, seed=123, directory=None) -> dict:
    """Held-out simulated structures (test split, never seen in training),
    degraded and preprocessed by the data engine exactly as in training.
    ``directory``: the master patterns (default: the dynamical ones)."""
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.engine import get_session
    from kikuchipy_cnn.training.projection import MasterSet
    from kikuchipy_cnn.training.realism import make_batch
    from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE as DEFAULT_MASTERS

    card = resolve_model(model)
    masters = MasterSet(directory or DEFAULT_MASTERS, "test")
    if len(masters) == 0:
        raise FileNotFoundError("No test-split master patterns are cached")
    rng = np.random.default_rng(seed)
    session = get_session(card)
    probs, labels = [], []
    for start in range(0, n, 256):
        x, y, meta = make_batch(masters, min(256, n - start), rng, card.preprocessing)
        ok = np.asarray(meta["valid"])
        probs.append(session.run(x[ok])["probabilities"])
        labels += [JOINT_CLASSES[i] for i in y[ok]]
    m = metrics(np.concatenate(probs), labels)
    m["structures"] = len(masters)
    m["classes_present"] = int(len(np.unique(masters.labels)))
    return m


def _title(level: str) -> str:
    return {"bravais_lattice": "Bravais lattice", "laue_class": "Laue class"}.get(
        level, level.replace("_", " ")
    )


def _fmt_level_table(results: dict, key: str = "accuracy") -> list[str]:
    """One row per data set, one column per level, of ``accuracy`` or ``ece``."""
    cols = " | ".join(_title(l) for l in LEVELS)
    lines = [f"| data | n | {cols} |", "|---" * (len(LEVELS) + 2) + "|"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['n']} | " + " | ".join(f"{m[l][key]:.3f}" for l in LEVELS) + " |")
    return lines


def _fmt_coverage(m: dict) -> list[str]:
    """Coverage and accuracy per level as ``min_score`` (the level's top
    probability) rises."""
    head = " | ".join(_title(l) for l in LEVELS)
    lines = [f"| min_score | {head} |", "|---" * (len(LEVELS) + 1) + "|"]
    for i, t in enumerate(THRESHOLDS):
        cells = []
        for level in LEVELS:
            c = m[level]["coverage"][i]
            acc = "-" if c["accuracy"] is None else f"{c['accuracy']:.3f}"
            cells.append(f"{c['coverage']:.3f} / {acc}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def _fmt_confusion(m: dict, level: str) -> list[str]:
    names = m[level]["names"]
    cm = np.array(m[level]["confusion"])
    used = np.flatnonzero(cm.sum(axis=0) + cm.sum(axis=1))
    lines = ["| true \\ predicted | " + " | ".join(names[i] for i in used) + " |",
             "|---" * (len(used) + 1) + "|"]
    for i in used:
        if cm[i].sum():
            lines.append(f"| {names[i]} | " + " | ".join(str(cm[i, j]) for j in used) + " |")
    return lines


def write_report(results: dict, rows: dict, out: Path, model: str, seconds: float):
    lines = [f"# Evaluation of `{model}`", "",
             f"Produced by `python -m kikuchipy_cnn.training.evaluate --model {model}` "
             f"in {seconds:.0f} s.", "", "## Top-1 accuracy per level", ""]
    lines += _fmt_level_table(results)
    lines += ["", "## Expected calibration error per level", ""]
    lines += _fmt_level_table(results, "ece")
    for name, m in results.items():
        lines += ["", f"## {name}", "",
                  "Accuracy vs coverage per level (coverage / accuracy of the patterns whose "
                  "top probability at that level is at least min_score):", ""]
        lines += _fmt_coverage(m)
        for level in LEVELS:
            lines += ["", f"Confusion matrix ({_title(level)}):", ""]
            lines += _fmt_confusion(m, level)
        if name in rows:
            lines += ["", "| pattern | kind | true | predicted | score | lattice ok | system ok |",
                      "|---|---|---|---|---|---|---|"]
            for r in rows[name]:
                lines.append("| " + " | ".join("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in r) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))


def eval_band_sets_test(model, source: str = "rendered", directory=None) -> dict:
    """Held-out structures (test split) for a band model: the committed band
    sets of :mod:`kikuchipy_cnn.training.band_sets` (``rendered``: dynamical
    patterns through the band detector; ``reflectors``: reflector lists with
    the fitted error model), features by the inference function.
    ``directory`` (default the committed band sets) holds ``<source>_test.npz``."""
    from kikuchipy_cnn.bands import BandSet, pixel_angle
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.engine import get_session
    from kikuchipy_cnn.features import band_features
    from kikuchipy_cnn.training.band_sets import DEFAULT_OUT, load_band_sets

    card = resolve_model(model)
    a, _ = load_band_sets(Path(directory or DEFAULT_OUT) / f"{source}_test.npz")
    bs = BandSet(a["normals"], a["strength"], a["width"], a["contrast"], a["valid"])
    x = band_features(bs, a["wavelength"], pixel_angle(a["shape"], a["pc"]))
    p = get_session(card).run(x)["probabilities"]
    m = metrics(p, [JOINT_CLASSES[i] for i in a["label"]])
    m["structures"] = int(len(np.unique(a["structure_id"])))
    m["classes_present"] = int(len(np.unique(a["label"])))
    return m


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--parts", default="abcd", help="which of a, b, c, d to run")
    parser.add_argument("--n-dynamical", type=int, default=600)
    parser.add_argument("--n-simulated", type=int, default=4000)
    parser.add_argument("--fine-kinematical", type=Path, default=None,
                        help="pixel models: a folder of fine kinematical masters (test/ inside) "
                             "for one more held-out row")
    args = parser.parse_args(argv)
    t0 = time.time()
    results, rows = {}, {}
    from kikuchipy_cnn.classify import resolve_model

    bands = resolve_model(args.model).input_kind == "bands"
    if args.fine_kinematical is not None and bands:
        parser.error("--fine-kinematical is for pixel models; band models are scored on the committed "
                     "band sets in models/training-data/band-sets/kinematical-fine")
    if "a" in args.parts and bands:
        from kikuchipy_cnn.training.band_sets import KINEMATICAL_FINE as fine

        for source in ("rendered", "reflectors"):
            results[f"a. held-out structures, band sets ({source})"] = eval_band_sets_test(args.model, source)
        if (fine / "rendered_test.npz").exists():
            results["a. held-out structures, band sets (rendered, fine kinematical masters)"] = (
                eval_band_sets_test(args.model, "rendered", fine)
            )
    if "a" in args.parts and not bands:
        from kikuchipy_cnn.training.kinematical import DEFAULT_OUT, FITTED_OUT

        results["a. held-out structures, dynamical"] = eval_simulated_test(args.model, args.n_simulated)
        for name, directory in (("step", DEFAULT_OUT), ("fitted", FITTED_OUT)):
            if (directory / "test").is_dir():
                results[f"a. held-out structures, kinematical ({name} bands)"] = eval_simulated_test(
                    args.model, args.n_simulated, directory=directory
                )
        if args.fine_kinematical is not None:
            results["a. held-out structures, fine kinematical masters"] = eval_simulated_test(
                args.model, args.n_simulated, directory=args.fine_kinematical
            )
    if "b" in args.parts:
        results["b. ../shared/data"], rows["b. ../shared/data"] = eval_shared(args.model)
    if "c" in args.parts:
        results["c. kikuchipy Ni, 9 raw"], rows["c. kikuchipy Ni, 9 raw"] = eval_nickel_raw(args.model)
    if "d" in args.parts:
        key = "d. dynamical Ni projections"
        results[key], rows[key] = eval_dynamical_nickel(args.model, args.n_dynamical)
    write_report(results, rows, args.out, args.model or "default", time.time() - t0)
    print("Top-1 accuracy")
    for line in _fmt_level_table(results):
        print(line)
    print("Expected calibration error")
    for line in _fmt_level_table(results, "ece"):
        print(line)


if __name__ == "__main__":
    main()
