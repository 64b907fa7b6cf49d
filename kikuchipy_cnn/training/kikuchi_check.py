"""Train the learned pattern check: a small CNN that tells Kikuchi patterns
from other images (:mod:`kikuchipy_cnn.pattern_check`).

Positives are the data engine's realistic raw patterns of the *training*
structures (cached master patterns, random orientations and detectors,
backgrounds, noise, defects; :func:`kikuchipy_cnn.training.realism.make_batch`),
half of them divided by their exact static background as kikuchipy users
usually do. Negatives are images of many kinds that are not Kikuchi patterns
(:mod:`kikuchipy_cnn.training.non_kikuchi`, natural images from
:data:`~kikuchipy_cnn.training.non_kikuchi.TRAIN_PHOTOS` only), the ones the
check's rules (too small, blank, saturated) already reject left out. Both go
through :func:`kikuchipy_cnn.pattern_check.check_input`, the function the
check calls at inference.

Never used in training: kikuchipy's Ni master pattern and experimental
patterns, ``../shared/data``, validation/test structures, and the held-out
natural images; ``benchmarks/ood_rejection.py`` measures on those.

    python -m kikuchipy_cnn.training.kikuchi_check data  --out cache/kikuchi-check
    python -m kikuchipy_cnn.training.kikuchi_check train --data cache/kikuchi-check \\
        --out models/kikuchi-check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from kikuchipy_cnn.pattern_check import CHECK_INPUT_SIZE, check_input, check_rules

log = logging.getLogger(__name__)

#: Negative kinds left out together in the leave-one-group-out evaluation
GROUPS = {
    "lines": ("random thin lines", "random straight bands", "grid", "stripes", "checkerboard"),
    "diffraction": ("diffraction spots", "ring pattern"),
    "noise": ("white noise (Gaussian)", "white noise (uniform)", "Poisson noise",
              "pink noise 1/f", "brown noise 1/f^2", "phase-scrambled Kikuchi"),
    "photos": ("natural image",),
}


def _masters(split: str, directory=None):
    from kikuchipy_cnn.training.train import load_master_set

    return load_master_set(split, directory)


def positives(n: int, seed: int, split: str = "train", directory=None):
    """``n`` check inputs of degraded raw patterns of one split's structures;
    every second batch divided by its exact static background."""
    from kikuchipy_cnn.training.realism import degrade, make_batch

    masters = _masters(split, directory)
    rng = np.random.default_rng(seed)
    xs, n_done, b = [], 0, 0
    while n_done < n:
        k = min(64, n - n_done)
        _, _, meta = make_batch(masters, k, rng, return_raw=True)
        raws = meta["raw"]
        shapes = {r.shape for r in raws}
        for shape in shapes:
            idx = [i for i, r in enumerate(raws) if r.shape == shape]
            raw = np.stack([raws[i] for i in idx])
            if b % 2:
                flat = np.full_like(raw, 0.5)
                params = [meta["realism"][i] for i in idx]
                bgs = degrade(flat, params, rng, noise=False)
                x = np.concatenate([check_input(r[None], g) for r, g in zip(raw, bgs)])
            else:
                x = check_input(raw)
            keep = check_rules(raw) == 0
            xs.append(x[keep])
        n_done += k
        b += 1
    return np.concatenate(xs)[:n]


def _training_kikuchi(directory=None, seed=0):
    """``f(rng, shape)``: a clean pattern of a random training structure (for
    the saturated, tiny and phase-scrambled negatives)."""
    from kikuchipy_cnn.training.projection import (
        DetectorGeometry, detector_directions, project, random_quaternions,
    )

    masters = _masters("train", directory)

    def f(rng, shape):
        i = int(rng.integers(len(masters)))
        geom = DetectorGeometry(
            shape=tuple(int(s) for s in shape), pcx=float(rng.uniform(0.4, 0.6)),
            pcy=float(rng.uniform(0.2, 0.5)), pcz=float(rng.uniform(0.5, 0.7)),
            sample_tilt=70.0, tilt=float(rng.uniform(0, 8)),
        )
        dc = detector_directions(geom, tuple(shape))
        p = project(masters.masters[i], random_quaternions(1, rng), dc, tuple(shape))[0]
        return (p - p.min()) / max(np.ptp(p), 1e-12)

    return f


def _train_size(rng):
    from kikuchipy_cnn.training.non_kikuchi import SIZES

    sizes = [s for s in SIZES if max(s) <= 256]
    return sizes[rng.integers(len(sizes))]


def negatives(rounds: int, seed: int, directory=None):
    """Check inputs of non-Kikuchi images that pass the check's rules, and
    their kinds."""
    from kikuchipy_cnn.training.non_kikuchi import non_kikuchi

    xs, kinds = [], []
    gen = non_kikuchi(seed, rounds, photos="train", kikuchi=_training_kikuchi(directory),
                      size=_train_size)
    for kind, img in gen:
        if min(img.shape) < 2 or check_rules(img[None])[0] != 0:
            continue
        xs.append(check_input(img[None]))
        kinds.append(kind)
    return np.concatenate(xs), np.array(kinds)


def make_data(out, n_pos: int = 16000, rounds: int = 900, seed: int = 0, directory=None):
    """Write ``train.npz`` and ``val.npz`` (positives of the train and val
    structures, negatives of disjoint seeds) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for split, npos, nround, s in (("train", n_pos, rounds, seed),
                                   ("val", n_pos // 4, rounds // 4, seed + 1000)):
        t0 = time.perf_counter()
        xp = positives(npos, s, split, directory)
        xn, kinds = negatives(nround, s + 1, directory)
        log.info("%s: %d positives, %d negatives (%.0f s)", split, len(xp), len(xn),
                 time.perf_counter() - t0)
        tmp = out / f".{split}.npz.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, pos=xp.astype(np.float16), neg=xn.astype(np.float16), kinds=kinds)
        tmp.replace(out / f"{split}.npz")


def _group(kind: str) -> str:
    for g, kinds in GROUPS.items():
        if any(kind.startswith(k) for k in kinds):
            return g
    return "other"


def build_model():
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    class CheckNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                *block(32, 48), nn.MaxPool2d(2), *block(48, 64),
            )
            self.head = nn.Linear(128, 1)

        def forward(self, x):
            import torch

            f = self.features(x)
            f = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            return torch.sigmoid(self.head(f))[:, 0]

    return CheckNet()


def _augment(x, rng):
    """Random flips and 90° rotations (a turned or mirrored Kikuchi pattern
    is still one). Adding correlated noise as well (Gaussian-blurred, up to
    the image's RMS) was tried and was worse on validation and on the
    benchmark (docs/performance.md)."""
    k = int(rng.integers(4))
    x = np.rot90(x, k, axes=(2, 3))
    if rng.random() < 0.5:
        x = x[:, :, :, ::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def train(data, epochs: int = 8, seed: int = 0, exclude_group: str | None = None,
          batch: int = 128):
    """Train the check on ``data`` (folder of :func:`make_data`); returns the
    model and the validation scores (positives, negatives, negative kinds)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    tr = np.load(Path(data) / "train.npz")
    va = np.load(Path(data) / "val.npz")
    neg, kinds = tr["neg"], tr["kinds"]
    if exclude_group:
        keep = np.array([_group(k) != exclude_group for k in kinds])
        neg = neg[keep]
    x = np.concatenate([tr["pos"], neg])
    y = np.concatenate([np.ones(len(tr["pos"])), np.zeros(len(neg))]).astype(np.float32)
    # balance the classes in the loss
    w = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (1 - y).sum())).astype(np.float32)
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for ep in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(x))
        model.train()
        tot = 0.0
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            xb = torch.from_numpy(_augment(x[idx].astype(np.float32), rng))
            p = model(xb).clamp(1e-6, 1 - 1e-6)
            yb, wb = torch.from_numpy(y[idx]), torch.from_numpy(w[idx])
            loss = -(wb * (yb * p.log() + (1 - yb) * (1 - p).log())).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        pv, nv = predict(model, va["pos"]), predict(model, va["neg"])
        log.info("epoch %d: loss %.4f; val: positives < 0.5 %.4f, negatives >= 0.5 %.4f (%.0f s)",
                 ep, tot / len(x), (pv < 0.5).mean(), (nv >= 0.5).mean(), time.perf_counter() - t0)
    return model, predict(model, va["pos"]), predict(model, va["neg"]), va["kinds"]


def predict(model, x, batch: int = 512) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[s : s + batch].astype(np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def export(model, out) -> Path:
    """Write ``model.onnx`` (input ``x`` (n, 1, 64, 64), output
    ``p_kikuchi`` (n,)) atomically; return its path."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.onnx.tmp.onnx"
    model.eval()
    torch.onnx.export(
        model, torch.zeros(2, 1, CHECK_INPUT_SIZE, CHECK_INPUT_SIZE), str(tmp),
        input_names=["x"], output_names=["p_kikuchi"],
        dynamic_axes={"x": {0: "n"}, "p_kikuchi": {0: "n"}}, opset_version=17,
        dynamo=False,
    )
    path = out / "model.onnx"
    tmp.replace(path)
    return path


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: Fraction of validation Kikuchi patterns the threshold may reject
TARGET_FALSE_REJECT = 0.005


def calibrate(folder, data, epochs: int) -> dict:
    """Choose the decision threshold on the validation set with the exported
    ONNX model (what users run) and write ``check.json`` beside it: the
    largest threshold (at most 0.5) that rejects at most
    :data:`TARGET_FALSE_REJECT` of the validation Kikuchi patterns."""
    from kikuchipy_cnn.engine import run_auxiliary

    folder = Path(folder)
    digest = sha256(folder / "model.onnx")
    va = np.load(Path(data) / "val.npz")
    pv = run_auxiliary(folder / "model.onnx", digest, va["pos"].astype(np.float32))
    nv = run_auxiliary(folder / "model.onnx", digest, va["neg"].astype(np.float32))
    t = float(min(0.5, np.quantile(pv, TARGET_FALSE_REJECT)))
    kinds = va["kinds"]
    meta = {
        "name": "kikuchi-check",
        "description": "Is this image a Kikuchi pattern? A small CNN used by "
                       "kikuchipy_cnn.pattern_check after its rules (too small, blank, "
                       "saturated).",
        "input": {"name": "x", "shape": [-1, 1, CHECK_INPUT_SIZE, CHECK_INPUT_SIZE],
                  "preprocessing": "kikuchipy_cnn.pattern_check.check_input"},
        "output": {"name": "p_kikuchi", "meaning": "probability of a Kikuchi pattern"},
        "sha256": digest,
        "min_probability": round(t, 6),
        "training": {
            "recipe": "python -m kikuchipy_cnn.training.kikuchi_check data && "
                      f"python -m kikuchipy_cnn.training.kikuchi_check train --epochs {epochs}",
            "positives": "realistic raw patterns of the training structures' dynamical "
                         "master patterns (data engine), half divided by their static "
                         "background",
            "negatives": "kikuchipy_cnn.training.non_kikuchi, natural images of "
                         "TRAIN_PHOTOS only",
        },
        "validation": {
            "positives": int(len(pv)),
            "positives_rejected": float((pv < t).mean()),
            "negatives": int(len(nv)),
            "negatives_accepted": float((nv >= t).mean()),
            "negatives_accepted_by_group": {
                g: float((nv[np.array([_group(k) == g for k in kinds])] >= t).mean())
                for g in sorted(set(_group(k) for k in kinds))
            },
        },
        "limitations": "Trained on simulated patterns and synthetic non-Kikuchi images; "
                       "see docs/performance.md (Rejection of non-Kikuchi inputs) for "
                       "rates measured on real patterns and held-out kinds.",
    }
    tmp = folder / ".check.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(folder / "check.json")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="generate the training and validation inputs")
    d.add_argument("--out", default="cache/kikuchi-check")
    d.add_argument("--n-pos", type=int, default=16000)
    d.add_argument("--rounds", type=int, default=900)
    d.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train, report on validation, export")
    t.add_argument("--data", default="cache/kikuchi-check")
    t.add_argument("--out", default="models/kikuchi-check")
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--exclude-group", choices=sorted(GROUPS), default=None,
                   help="leave these negative kinds out of training (ablation; not exported)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.cmd == "data":
        make_data(args.out, args.n_pos, args.rounds, args.seed)
        return
    model, pv, nv, kinds = train(args.data, args.epochs, exclude_group=args.exclude_group)
    report = {
        "exclude_group": args.exclude_group,
        "val_positives": int(len(pv)),
        "val_positive_quantiles": {q: float(np.quantile(pv, q)) for q in (0.001, 0.005, 0.01, 0.05)},
        "val_negatives_by_group": {},
    }
    for g in sorted(set(_group(k) for k in kinds)):
        sel = np.array([_group(k) == g for k in kinds])
        report["val_negatives_by_group"][g] = {
            "n": int(sel.sum()),
            **{f"accepted_at_{t}": float((nv[sel] >= t).mean()) for t in (0.1, 0.3, 0.5)},
        }
    print(json.dumps(report, indent=1))
    if args.exclude_group is None:
        path = export(model, args.out)
        print(json.dumps(calibrate(path.parent, args.data, args.epochs)["validation"], indent=1))


if __name__ == "__main__":
    main()
