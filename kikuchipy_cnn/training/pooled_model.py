"""Train a pooled band model: the band features of many patterns of one
phase, seen at several orientations, -> one class for the phase.

Pooling per-pattern *probabilities* plateaus (``../shared/notes/pooling-curve.md``,
``docs/phases.md``): a model blind to centring or Laue subgroup on one pattern
is blind on thirty. This model reads the pooled *evidence* instead: the
statistics over views (grains) of the per-pattern band features, among them
the metric-symmetry ladders of the reconstructed lattices
(:func:`kikuchipy_cnn.features.pooled_features`, the function inference
uses), so e.g. "a third of the views reach cF at 2 %, the rest cP" is an
input, not lost in a vote.

Data: ``reflectors`` band sets (:mod:`kikuchipy_cnn.training.band_sets`) of
many random orientations per structure (``--n 12`` for training, ``--n 20``
for testing), featurised with ``band_model featurize``. Bags of 1 to
:data:`MAX_BAG` views of one structure are drawn at random; training and
validation structures are split by structure (validation: a fraction of the
training file's structures), the test file's structures are never trained on.

Subcommands (training extra only): ``train`` (train, calibrate one
temperature on validation bags, evaluate on test bags of 1, 3, 10 and 20
views against pooling the per-pattern model's probabilities), ``export``
(ONNX with standardisation and temperature inside, test tensors, added to a
band model's card as ``pooling: {model, sha256, version}``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from kikuchipy_cnn.features import MAX_VIEWS, POOLED_VERSION, pooled_feature_names, pooled_features
from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training.band_model import (
    EarlyStopping,
    _levels_accuracy,
    _mlp,
    export_mlp,
    fit_temperature,
    load_features,
    train_epoch,
    write_card_yaml,
)
from kikuchipy_cnn.training.calibrate import expected_calibration_error

__all__ = ["add_to_card", "draw_bags", "evaluate_bags", "export", "train"]

#: Largest bag drawn for training (views per bag; where the view count of
#: the pooled features saturates)
MAX_BAG = MAX_VIEWS

#: Bag sizes reported on the test structures
TEST_SIZES = (1, 3, 10, 20)


def _keys(data: dict) -> np.ndarray:
    """Bag key of every band set: its source and structure (a bag never mixes
    rendered and reflector-list band sets)."""
    return np.char.add(np.char.add(data["source"].astype(str), ":"), data["structure_id"].astype(str))


def _by_structure(data: dict) -> dict:
    out: dict = {}
    for i, key in enumerate(_keys(data)):
        out.setdefault(str(key), []).append(i)
    return {k: np.asarray(v) for k, v in out.items()}


def draw_bags(data: dict, structures: list[str], n_bags, sizes, rng) -> tuple[np.ndarray, np.ndarray, list]:
    """``n_bags`` bags per structure (bag key ``"<source>:<structure id>"``;
    or a dict key -> count), each of a size drawn from ``sizes`` (views of
    one structure without replacement, capped by what exists). Returns
    pooled features ``(B, P)``, labels ``(B,)`` and each bag's rows."""
    rows_of = _by_structure(data)
    x, y, rows = [], [], []
    for sid in structures:
        r = rows_of[sid]
        for _ in range(n_bags[sid] if isinstance(n_bags, dict) else n_bags):
            m = min(int(rng.choice(sizes)), len(r))
            pick = rng.choice(r, size=m, replace=False)
            x.append(pooled_features(data["features"][pick]))
            y.append(int(data["label"][pick[0]]))
            rows.append(pick)
    return np.asarray(x, np.float32), np.asarray(y), rows


def _split_structures(data: dict, val_fraction: float, rng) -> tuple[list, list]:
    """Bag keys split in train / validation by structure (all sources of a
    structure on one side), stratified by class."""
    label_of = {}
    for sid, lab in zip(data["structure_id"], data["label"]):
        label_of[str(sid)] = int(lab)
    val_ids = set()
    for c in np.unique(list(label_of.values())):
        ids = sorted(s for s, lab in label_of.items() if lab == c)
        rng.shuffle(ids)
        val_ids |= set(ids[: max(1, int(round(val_fraction * len(ids))))])
    keys = sorted(_by_structure(data))
    val = [k for k in keys if k.split(":", 1)[1] in val_ids]
    return [k for k in keys if k.split(":", 1)[1] not in val_ids], val


def _pooled_baseline(per_pattern_probs: np.ndarray, rows: list, tempering: float = 0.0) -> np.ndarray:
    """Σ log p of the per-pattern model over each bag (the ``pool_probabilities`` baseline)."""
    from kikuchipy_cnn.phases import pool_probabilities

    out = np.empty((len(rows), per_pattern_probs.shape[1]))
    for i, r in enumerate(rows):
        out[i] = pool_probabilities(per_pattern_probs[r], np.zeros(len(r), int), tempering=tempering)[1][0]
    return out


def _per_pattern_probs(card_name: str, features: np.ndarray) -> np.ndarray:
    from kikuchipy_cnn.classify import resolve_model
    from kikuchipy_cnn.engine import get_session

    card = resolve_model(card_name)
    session = get_session(card, ["CPUExecutionProvider"])
    return session.run(np.asarray(features, np.float32), ("probabilities",), 1024)["probabilities"]


def evaluate_bags(predict, data: dict, rng, sizes=TEST_SIZES, n_bags: int = 5, baseline=None,
                  structures=None) -> dict:
    """Accuracy per level of ``predict(pooled features) -> probabilities`` on
    ``n_bags`` bags per structure (bag key) of each size; with ``baseline``
    (per-pattern probabilities of ``data``'s rows) also that of pooling them."""
    out = {}
    structures = sorted(_by_structure(data)) if structures is None else structures
    for m in sizes:
        x, y, rows = draw_bags(data, structures, n_bags, [m], rng)
        p = predict(x)
        res = {"n_bags": int(len(y)), "pooled_model": _levels_accuracy(p, y),
               "ece_joint": expected_calibration_error(p, y)}
        if baseline is not None:
            res["pooled_probabilities"] = _levels_accuracy(_pooled_baseline(baseline, rows), y)
        out[str(m)] = res
    return out


def train(train_paths, test_paths, out_dir, hidden: int = 256, dropout: float = 0.3, epochs: int = 300,
          lr: float = 1e-3, weight_decay: float = 1e-2, seed: int = 0, patience: int = 30,
          val_fraction: float = 0.15, bags_per_structure: int = 24, baseline_model: str = "kcnn-bands-mlp",
          stack: bool = False, rendered_weight: float = 1.0) -> dict:
    """Train the pooled MLP, calibrate on validation bags, evaluate on test
    bags; write ``checkpoint.pt`` and ``evaluation.json`` into ``out_dir``."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rng = np.random.default_rng(seed)
    train_paths = [train_paths] if isinstance(train_paths, (str, Path)) else list(train_paths)
    test_paths = [test_paths] if isinstance(test_paths, (str, Path)) else list(test_paths)
    data = load_features(train_paths)
    test = load_features(test_paths)
    if stack:  # experiment: the per-pattern model's centred log-probabilities as more features
        for dd in (data, test):
            lp = np.log(np.clip(_per_pattern_probs(baseline_model, dd["features"]), 1e-4, 1))
            dd["features"] = np.concatenate([dd["features"], lp - lp.mean(1, keepdims=True)], 1).astype(np.float32)
    overlap = set(map(str, data["structure_id"])) & set(map(str, test["structure_id"]))
    if overlap:
        raise ValueError(f"{len(overlap)} structures are in train and test, e.g. {sorted(overlap)[:3]}")
    tr_ids, va_ids = _split_structures(data, val_fraction, rng)
    sizes = np.arange(1, MAX_BAG + 1)

    def per_key(n):  # bags per key: rendered band sets weigh rendered_weight times more
        return {k: max(1, int(round(n * (rendered_weight if k.startswith("rendered:") else 1))))
                for k in tr_ids}

    xva, yva, _ = draw_bags(data, va_ids, 8, sizes, rng)
    xtr0, _, _ = draw_bags(data, tr_ids, 4, sizes, rng)
    mu = xtr0.mean(0)
    sd = xtr0.std(0) + 1e-3
    nc = len(JOINT_CLASSES)

    def t(x):
        return torch.as_tensor((x - mu) / sd, dtype=torch.float32)

    model = _mlp(len(mu), nc, hidden, dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    xv, yv = t(xva), torch.as_tensor(yva)
    stop = EarlyStopping(patience)
    # a fixed pool of training bags, redrawn in part every epoch
    xtr, ytr, _ = draw_bags(data, tr_ids, per_key(bags_per_structure), sizes, rng)
    for ep in range(epochs):
        if ep and ep % 10 == 0:
            xn, yn, _ = draw_bags(data, tr_ids, per_key(max(1, bags_per_structure // 4)), sizes, rng)
            k = rng.choice(len(xtr), size=len(xn), replace=False)
            xtr[k], ytr[k] = xn, yn
        train_epoch(model, opt, loss_fn, t(xtr), torch.as_tensor(ytr))
        sched.step()
        model.eval()
        with torch.no_grad():
            vl = float(torch.nn.functional.cross_entropy(model(xv), yv))
        if stop.step(vl, model):
            break
    stop.restore(model)
    best_epoch = int(np.argmin(stop.history)) + 1
    with torch.no_grad():
        logits_va = model(xv)
    T = fit_temperature(logits_va, yv)

    def predict(x):
        with torch.no_grad():
            return torch.softmax(model(t(x)) / T, 1).numpy()

    nf = len(pooled_feature_names()) // 3
    baseline = _per_pattern_probs(baseline_model, test["features"][:, :nf]) if baseline_model else None
    result = {
        "pooled_version": POOLED_VERSION, "temperature": T, "epochs": len(stop.history), "best_epoch": best_epoch,
        "best_val_loss": stop.best, "hidden": hidden, "dropout": dropout, "lr": lr, "weight_decay": weight_decay,
        "n_train_structures": len({k.split(":", 1)[1] for k in tr_ids}),
        "n_val_structures": len({k.split(":", 1)[1] for k in va_ids}), "n_train_bag_keys": len(tr_ids),
        "n_test_structures": len(set(test["structure_id"].astype(str))), "baseline_model": baseline_model, "stack": stack,
        "val": {"accuracy": _levels_accuracy(predict(xva), yva)},
        "rendered_weight": rendered_weight, "train_files": [str(p) for p in train_paths],
        "test": {src: evaluate_bags(predict, test, np.random.default_rng(seed + 1), baseline=baseline,
                                    structures=[k for k in sorted(_by_structure(test)) if k.startswith(src + ":")])
                 for src in sorted(set(test["source"].astype(str)))},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state": stop.state, "mu": mu, "sd": sd, "temperature": T, "hidden": hidden,
                "dropout": dropout, "n_in": int(len(mu)), "pooled_version": POOLED_VERSION, "stack": stack,
                "feature_names": pooled_feature_names()}, out_dir / "checkpoint.pt")
    tmp = out_dir / "evaluation.tmp.json"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out_dir / "evaluation.json")
    return result


def export(checkpoint, out_dir, test_features=None) -> Path:
    """``pooled.onnx`` (input ``pooled_features`` ``(b, P)``, output
    ``probabilities``; standardisation and temperature inside) and its test
    tensors ``pooled_test_input.npy`` / ``pooled_test_output.npy``."""
    import torch

    ck = torch.load(checkpoint, weights_only=False)
    if ck.get("stack") or ck["n_in"] != len(pooled_feature_names()):
        raise ValueError(f"{checkpoint} reads {ck['n_in']} inputs, not the {len(pooled_feature_names())} "
                         "pooled features (a --stack experiment cannot be exported)")
    return export_mlp(checkpoint, Path(out_dir) / "pooled.onnx", "pooled_features", test_features, "pooled_test_")


def add_to_card(run_dir, model_dir, version: str, command: str, test_features) -> Path:
    """Export a run's pooled model into a band model's folder (``pooled.onnx``
    and test tensors) and add it to the folder's card: ``pooling: {model,
    sha256, version}``, the card's ``version`` set to ``version``, the run's
    test numbers under ``evaluation`` and its command under ``training``.
    The card is rewritten atomically."""
    import yaml

    from kikuchipy_cnn.card import sha256_of

    run_dir, model_dir = Path(run_dir), Path(model_dir)
    card_path = model_dir / "card.yaml"
    card = yaml.safe_load(card_path.read_text())
    if card["input"]["kind"] != "bands":
        raise ValueError(f"{card_path} is not a band model's card")
    ev = json.loads((run_dir / "evaluation.json").read_text())
    onnx_path = export(run_dir / "checkpoint.pt", model_dir, test_features)
    card["version"] = version
    card["citation"] = f"kikuchipy-cnn developers. kikuchipy-cnn band model {card['name']} {version}."
    pooling = dict(card.get("pooling") or {})
    pooling.update({"model": onnx_path.name, "sha256": sha256_of(onnx_path), "version": POOLED_VERSION})
    card["pooling"] = pooling
    for src, by_m in ev["test"].items():
        for m, r in by_m.items():
            a = r["pooled_model"]
            card.setdefault("evaluation", {})[
                f"pooled evidence, {m} orientations of a held-out structure ({src} band sets), "
                "crystal system / Bravais / Laue / joint"] = (
                f"{a['crystal_system']:.3f} / {a['bravais_lattice']:.3f} / {a['laue_class']:.3f} / {a['joint']:.3f}")
    card.setdefault("training", {})["pooled_model"] = {"command": command, "epochs": ev["epochs"],
                                        "structures": ev["n_train_structures"]}
    return write_card_yaml(card_path, card)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train, calibrate and evaluate the pooled MLP")
    t.add_argument("--train", nargs="+", required=True, help="feature files of the training structures' bags")
    t.add_argument("--test", nargs="+", required=True, help="feature files of the test structures' bags")
    t.add_argument("--rendered-weight", type=float, default=1.0,
                   help="bags per rendered structure relative to a reflector-list structure")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--epochs", type=int, default=300)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dropout", type=float, default=0.3)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-2)
    t.add_argument("--patience", type=int, default=30)
    t.add_argument("--stack", action="store_true", help="experiment: add the per-pattern model's log-probabilities")
    e = sub.add_parser("export", help="add a run's pooled model to a band model's folder and card")
    e.add_argument("run", help="run folder (checkpoint.pt, evaluation.json)")
    e.add_argument("--out", required=True, help="model folder, e.g. models/kcnn-bands-mlp")
    e.add_argument("--version", required=True, help="the card's new version")
    e.add_argument("--command", default="", help="the training command, for the card")
    e.add_argument("--test-features", required=True, help="feature file; bags of a few structures are the test tensor")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        res = train(args.train, args.test, args.out, hidden=args.hidden, epochs=args.epochs, seed=args.seed,
                    stack=args.stack, dropout=args.dropout, lr=args.lr, weight_decay=args.weight_decay,
                    patience=args.patience, rendered_weight=args.rendered_weight)
        print("val", {k: round(v, 3) for k, v in res["val"]["accuracy"].items()}, "T", round(res["temperature"], 3),
              "epochs", res["epochs"], "best", res["best_epoch"], "val loss", round(res["best_val_loss"], 4))
        for src, by_m in res["test"].items():
            for m, r in by_m.items():
                print(f"test {src} {m:>2} views: pooled model",
                      {k: round(v, 3) for k, v in r["pooled_model"].items()}, "ECE", round(r["ece_joint"], 3))
                if "pooled_probabilities" in r:
                    print("           pooled probabilities",
                          {k: round(v, 3) for k, v in r["pooled_probabilities"].items()})
    else:
        data = load_features([args.test_features])
        sids = sorted(_by_structure(data))[::97][:4]
        x, _, _ = draw_bags(data, sids, 2, [1, 5, 12], np.random.default_rng(0))
        print(f"wrote {add_to_card(args.run, args.out, args.version, args.command, x)}")


if __name__ == "__main__":
    main()
