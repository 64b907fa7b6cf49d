"""Train a band model: band sets -> features -> MLP -> calibrated ONNX model.

Steps, each a subcommand (training extra only):

``featurize``
    Band sets written by :mod:`kikuchipy_cnn.training.band_sets` to feature
    matrices with :func:`kikuchipy_cnn.features.band_features` (the function
    inference uses), cached in an ``.npz`` per input file, resumable.
``train``
    A small MLP over the standardised features (balanced classes, weight decay,
    early stopping on the validation structures), then one temperature fitted on
    the validation split; writes the checkpoint and ``evaluation.json``.
``export``
    ONNX (opset 17, dynamic batch) with standardisation and temperature inside
    the graph, test tensors, and a card whose input kind is ``bands``.

Splits are by structure (the band sets' ``structure_id`` and the structure
files' splits), so validation and test structures are never trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from kikuchipy_cnn.bands import BandSet, pixel_angle
from kikuchipy_cnn.features import FEATURE_VERSION, band_features, feature_names
from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training.calibrate import expected_calibration_error

__all__ = ["featurize", "load_features", "train", "export"]


def featurize(band_set_path, out_path, chunk: int = 200, overwrite: bool = False) -> Path:
    """Features of every band set in ``band_set_path``; resumable by chunk."""
    from kikuchipy_cnn.training.band_sets import load_band_sets

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        return out_path
    arrays, _ = load_band_sets(band_set_path)
    n = len(arrays["normals"])
    parts_dir = out_path.with_name(out_path.stem + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        part = parts_dir / f"{start:07d}.npy"
        if part.exists():
            continue
        sl = slice(start, min(start + chunk, n))
        bs = BandSet(arrays["normals"][sl], arrays["strength"][sl], arrays["width"][sl],
                     arrays["contrast"][sl], arrays["valid"][sl])
        f = band_features(bs, arrays["wavelength"][sl], pixel_angle(arrays["shape"][sl], arrays["pc"][sl]))
        tmp = part.with_suffix(".tmp.npy")
        np.save(tmp, f)
        os.replace(tmp, part)
        done = min(start + chunk, n)
        print(f"  {band_set_path}: {done}/{n} ({done / (time.perf_counter() - t0):.1f}/s this run)", flush=True)
    feats = np.concatenate([np.load(parts_dir / f"{s:07d}.npy") for s in range(0, n, chunk)])
    tmp = out_path.with_name(out_path.stem + ".tmp.npz")
    np.savez_compressed(
        tmp, features=feats, label=arrays["label"], structure_id=arrays["structure_id"],
        source=arrays["source"], shape=arrays["shape"], feature_version=FEATURE_VERSION,
    )
    os.replace(tmp, out_path)
    return out_path


def load_features(paths) -> dict:
    """Concatenate feature files; refuses files of another feature version."""
    parts = []
    for p in paths:
        with np.load(p) as f:
            if str(f["feature_version"]) != FEATURE_VERSION:
                raise ValueError(f"{p} holds features {f['feature_version']}, not {FEATURE_VERSION}: rerun featurize")
            parts.append({k: f[k] for k in ("features", "label", "structure_id", "source", "shape")})
    return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


def _mlp(n_in: int, n_out: int, hidden: int, dropout: float):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )  # fmt: skip


def _levels_accuracy(probs: np.ndarray, labels: np.ndarray) -> dict:
    from kikuchipy_cnn.symmetry import LEVELS, joint_class_info, level_names, marginalise

    out = {"joint": float((probs.argmax(1) == labels).mean())}
    for level in LEVELS:
        names = level_names(level)
        p = marginalise(probs, JOINT_CLASSES, level)
        truth = np.array([names.index(joint_class_info(JOINT_CLASSES[i])[level]) for i in labels])
        out[level] = float((p.argmax(1) == truth).mean())
    return out


#: Feature groups by name prefix (for ablations)
GROUPS = {"lattice": ("ladder_", "cand_", "fit_"), "directions": ("dir_",), "geometry": ("geom_",),
          "detector": ("det_",)}


def group_mask(groups) -> np.ndarray:
    """Boolean mask of the feature columns in the named :data:`GROUPS`."""
    names = feature_names()
    prefixes = tuple(p for g in groups for p in GROUPS[g])
    return np.array([n.startswith(prefixes) for n in names])


def train_epoch(model, opt, loss_fn, x, y, batch: int = 256) -> None:
    """One pass over ``(x, y)`` in shuffled minibatches."""
    import torch

    model.train()
    perm = torch.randperm(len(x))
    for i in range(0, len(perm), batch):
        idx = perm[i : i + batch]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()


class EarlyStopping:
    """Keep the model state of the lowest validation loss; ``step`` says when
    ``patience`` epochs have passed without improvement."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.wait, self.history = patience, np.inf, None, 0, []

    def step(self, loss: float, model) -> bool:
        """Record one epoch's validation loss; True when training should stop."""
        self.history.append(loss)
        if loss < self.best - 1e-4:
            self.best, self.state, self.wait = loss, {k: v.clone() for k, v in model.state_dict().items()}, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, model) -> None:
        """Load the best state into ``model`` (an error if no loss was finite)."""
        if self.state is None:
            raise RuntimeError("the validation loss was never finite: no model to keep")
        model.load_state_dict(self.state)
        model.eval()


def fit_temperature(logits, y) -> float:
    """The temperature (0.3-5, log grid) minimising the NLL of ``logits``."""
    import torch

    temps = np.exp(np.linspace(np.log(0.3), np.log(5), 60))
    nll = [float(torch.nn.functional.cross_entropy(logits / T, y)) for T in temps]
    return float(temps[int(np.argmin(nll))])


def train(train_paths, val_paths, test_paths, out_dir, hidden: int = 256, dropout: float = 0.2,
          epochs: int = 200, lr: float = 2e-3, weight_decay: float = 1e-3, seed: int = 0,
          patience: int = 20, groups=tuple(GROUPS)) -> dict:
    """Train the MLP, calibrate it on validation, evaluate on test; write
    ``checkpoint.pt`` and ``evaluation.json`` into ``out_dir``. ``groups``
    keeps only those feature groups (the others are zeroed: ablations)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tr, va = load_features(train_paths), load_features(val_paths)
    te = load_features(test_paths) if test_paths else None
    overlap = set(tr["structure_id"]) & (set(va["structure_id"]) | (set(te["structure_id"]) if te else set()))
    if overlap:
        raise ValueError(f"{len(overlap)} structures are in train and val/test, e.g. {sorted(overlap)[:3]}")
    keep = group_mask(groups)
    for d in (tr, va) + ((te,) if te else ()):
        d["features"] = np.where(keep, d["features"], 0.0).astype(np.float32)
    mu = tr["features"].mean(0)
    sd = tr["features"].std(0) + 1e-3
    nc = len(JOINT_CLASSES)

    def t(x):
        return torch.as_tensor((x - mu) / sd, dtype=torch.float32)

    xtr, ytr = t(tr["features"]), torch.as_tensor(tr["label"])
    xva, yva = t(va["features"]), torch.as_tensor(va["label"])
    counts = np.bincount(tr["label"], minlength=nc).astype(np.float64)
    w = torch.as_tensor(np.where(counts > 0, counts.sum() / (nc * np.maximum(counts, 1)), 0.0), dtype=torch.float32)
    model = _mlp(xtr.shape[1], nc, hidden, dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    stop = EarlyStopping(patience)
    for ep in range(epochs):
        train_epoch(model, opt, loss_fn, xtr, ytr)
        sched.step()
        model.eval()
        with torch.no_grad():
            vl = float(torch.nn.functional.cross_entropy(model(xva), yva, weight=w))
        if stop.step(vl, model):
            break
    stop.restore(model)
    with torch.no_grad():
        logits_va = model(xva)
    # one temperature on validation (unweighted NLL: calibration on the natural mix)
    T = fit_temperature(logits_va, yva)
    result = {"temperature": T, "epochs": len(stop.history), "best_val_loss": stop.best, "n_train": len(xtr),
              "groups": list(groups),
              "n_val": len(xva), "feature_version": FEATURE_VERSION}

    def evaluate(d, name):
        with torch.no_grad():
            p = torch.softmax(model(t(d["features"])) / T, 1).numpy()
        res = {"n": int(len(p)), "accuracy": _levels_accuracy(p, d["label"]), "ece_joint": expected_calibration_error(p, d["label"])}
        by = {}
        for src in np.unique(d["source"]):
            m = d["source"] == src
            by[str(src)] = {"n": int(m.sum()), "accuracy": _levels_accuracy(p[m], d["label"][m])}
            small = m & (d["shape"].min(1) < 100)
            if small.any():
                by[str(src) + " <100 px"] = {"n": int(small.sum()), "accuracy": _levels_accuracy(p[small], d["label"][small])}
            big = m & (d["shape"].min(1) >= 100)
            if big.any():
                by[str(src) + " >=100 px"] = {"n": int(big.sum()), "accuracy": _levels_accuracy(p[big], d["label"][big])}
        res["by_source"] = by
        result[name] = res
        return p

    evaluate(va, "val")
    if te is not None:
        p = evaluate(te, "test")
        result["test"]["confusion_joint"] = np.bincount(
            te["label"] * nc + p.argmax(1), minlength=nc * nc).reshape(nc, nc).tolist()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state": stop.state, "mu": mu, "sd": sd, "temperature": T, "hidden": hidden,
                "dropout": dropout, "n_in": int(xtr.shape[1]), "feature_version": FEATURE_VERSION,
                "feature_names": feature_names()}, out_dir / "checkpoint.pt")
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=1))
    return result


def export_mlp(checkpoint, onnx_path, input_name: str, test_features=None, test_prefix: str = "test_") -> Path:
    """A checkpoint's MLP as ONNX (opset 17, dynamic batch; standardisation and
    temperature inside: ``input_name`` -> ``probabilities``), written
    atomically to ``onnx_path`` (never over an existing file); with
    ``test_features``, also ``<test_prefix>input.npy`` / ``<test_prefix>output.npy``
    beside it. Shared by the band model and the pooled model."""
    import torch

    ck = torch.load(checkpoint, weights_only=False)
    core = _mlp(ck["n_in"], len(JOINT_CLASSES), ck["hidden"], ck["dropout"])
    core.load_state_dict(ck["state"])
    core.eval()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.core = core
            self.register_buffer("mu", torch.as_tensor(ck["mu"], dtype=torch.float32))
            self.register_buffer("sd", torch.as_tensor(ck["sd"], dtype=torch.float32))
            self.t = float(ck["temperature"])

        def forward(self, features):
            return torch.softmax(self.core((features - self.mu) / self.sd) / self.t, dim=1)

    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    if onnx_path.exists():
        raise FileExistsError(f"{onnx_path} exists: remove it or export to another folder")
    model = Wrapped().eval()
    tmp = onnx_path.with_name(onnx_path.stem + ".tmp.onnx")
    torch.onnx.export(model, (torch.zeros(2, ck["n_in"]),), str(tmp), input_names=[input_name],
                      output_names=["probabilities"],
                      dynamic_axes={input_name: {0: "n"}, "probabilities": {0: "n"}}, opset_version=17,
                      dynamo=False)
    os.replace(tmp, onnx_path)
    if test_features is not None:
        tf = np.asarray(test_features, np.float32)
        with torch.no_grad():
            tp = model(torch.as_tensor(tf)).numpy()
        np.save(onnx_path.parent / f"{test_prefix}input.npy", tf)
        np.save(onnx_path.parent / f"{test_prefix}output.npy", tp)
    return onnx_path


def export(checkpoint, out_dir, name: str, version: str, test_features=None) -> Path:
    """ONNX model ``model.onnx`` (standardisation and temperature inside) with
    test tensors; returns the ONNX path. The card is written by the caller (it
    carries the evaluation)."""
    return export_mlp(checkpoint, Path(out_dir) / "model.onnx", "features", test_features)


#: The band sets the bundled band model is trained on (for its card)
BAND_SETS = "models/training-data/band-sets (rendered_train, reflectors_train)"


def write_card(run_dir, out_dir, name: str, version: str, command: str, test_features,
               band_sets: str = BAND_SETS) -> Path:
    """Export the run's model to ``out_dir`` (ONNX + test tensors) and write its
    card (input kind ``bands``, band saliency) with the run's evaluation;
    ``band_sets`` describes the training band sets."""
    from kikuchipy_cnn.card import sha256_of
    from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS
    from kikuchipy_cnn.symmetry import joint_class_info

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ev = json.loads((run_dir / "evaluation.json").read_text())
    onnx_path = export(run_dir / "checkpoint.pt", out_dir, name, version, test_features)
    acc = ev["test"]["accuracy"]
    card = {
        "format_version": 1, "name": name, "version": version,
        "description": (
            "MLP over orientation-invariant features of a pattern's Kikuchi bands (band normals "
            "on the sphere from the detector geometry, measured widths, two reciprocal-lattice "
            "reconstructions, with widths and from directions alone, with their metric-symmetry "
            "ladders), classifying into the 23 joint "
            "'<Bravais lattice> <Laue class>' classes. Trained only on simulations: band sets "
            "detected on rendered dynamical patterns and reflector-list band sets with the "
            "measured detection errors; temperature-calibrated on validation structures."
        ),
        "license": "GPL-3.0-or-later",
        "citation": f"kikuchipy-cnn developers. kikuchipy-cnn band model {name} {version}.",
        "authors": ["kikuchipy-cnn developers"],
        "weights": {"file": "model.onnx", "sha256": sha256_of(onnx_path)},
        "input": {"name": "features", "kind": "bands", "feature_version": FEATURE_VERSION,
                  "shape": [-1, len(feature_names())], "dtype": "float32", "axes": "bf"},
        "preprocessing": {"name": "kikuchipy_cnn.bands.v1", "n_bands": 24,
                          "note": "static background divided out; the signal's detector (PC, "
                                  "Bruker convention) and beam energy are required"},
        "outputs": {"probabilities": "probabilities"},
        "temperature": ev["temperature"],
        "classes": [{**joint_class_info(c), "colour": DEFAULT_COLOURS[c]} for c in JOINT_CLASSES],
        "saliency": ["bands"],
        "min_score": 0.0,
        "test": {"input": "test_input.npy", "output": "test_output.npy", "tolerance": 1e-4},
        "training_data": {
            "band_sets": band_sets,
            "n_train": ev["n_train"], "n_val": ev["n_val"],
            "splits": "by crystal structure (structures_seed1.json / master-pattern splits)",
        },
        "training": {"command": command, "epochs": ev["epochs"]},
        "evaluation": {
            "held-out band sets (test split), crystal system / Bravais / Laue / joint":
                f"{acc['crystal_system']:.3f} / {acc['bravais_lattice']:.3f} / "
                f"{acc['laue_class']:.3f} / {acc['joint']:.3f}",
            "ECE (joint, test)": round(ev["test"]["ece_joint"], 3),
            "report": "evaluation.md",
        },
        "limitations": [
            "Accuracy on held-out simulated structures is low (see evaluation): measured band "
            "widths on complex structures scatter by +-30 % and 10-40 % of detected bands are "
            "spurious, which the lattice reconstruction cannot overcome per pattern.",
            "Needs the true pattern centre and beam energy on the signal; kikuchipy's default "
            "detector gives wrong features (a warning is raised).",
            "Point groups within one Laue class are not separable; Laue subgroups (m-3 vs m-3m, "
            "-3 vs -3m, 4/m vs 4/mmm, 6/m vs 6/mmm) carry no geometric signature here.",
            "About 5-10 patterns/s per core: far slower than the pixel model.",
        ],
    }  # fmt: skip
    return write_card_yaml(out_dir / "card.yaml", card)


def write_card_yaml(path, card: dict) -> Path:
    """Write a card's YAML atomically (a temporary file renamed over it)."""
    import yaml

    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.yaml")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False))
    os.replace(tmp, path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("featurize", help="band sets -> feature files")
    f.add_argument("inputs", nargs="+", help="band-set .npz files")
    f.add_argument("--out-dir", required=True, help="folder for the feature files")
    t = sub.add_parser("train", help="train, calibrate and evaluate the MLP")
    t.add_argument("--train", nargs="+", required=True)
    t.add_argument("--val", nargs="+", required=True)
    t.add_argument("--test", nargs="*", default=[])
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS),
                   help="feature groups to use (ablations)")
    c = sub.add_parser("card", help="export a run to a model folder with its card")
    c.add_argument("run", help="run folder (checkpoint.pt, evaluation.json)")
    c.add_argument("--out", required=True, help="model folder, e.g. models/kcnn-bands-mlp")
    c.add_argument("--name", required=True)
    c.add_argument("--version", required=True)
    c.add_argument("--test-features", required=True, help="feature file; its first 8 rows are the test tensor")
    c.add_argument("--command", default="", help="the training command, for the card")
    c.add_argument("--band-sets", default=BAND_SETS, help="the training band sets, for the card")
    args = ap.parse_args(argv)
    if args.cmd == "card":
        x = load_features([args.test_features])["features"][:8]
        print(f"wrote {write_card(args.run, args.out, args.name, args.version, args.command, x, args.band_sets)}")
    if args.cmd == "featurize":
        for p in args.inputs:
            out = Path(args.out_dir) / (Path(p).stem + ".features.npz")
            featurize(p, out)
            print(f"wrote {out}")
    elif args.cmd == "train":
        res = train(args.train, args.val, args.test, args.out, hidden=args.hidden, epochs=args.epochs,
                    seed=args.seed, groups=args.groups)
        for split in ("val", "test"):
            if split in res:
                print(split, {k: round(v, 3) for k, v in res[split]["accuracy"].items()},
                      "ECE", round(res[split]["ece_joint"], 3))
                for src, r in res[split]["by_source"].items():
                    print("   ", src, r["n"], {k: round(v, 3) for k, v in r["accuracy"].items()})


if __name__ == "__main__":
    main()
