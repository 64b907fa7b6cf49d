"""Export a trained run to an ONNX model directory with its model card.

Usage::

    python -m kikuchipy_cnn.training.export --run-dir runs/NAME --out models/NAME/ \\
        [--evaluation models/NAME/evaluation.json] [--temperature T] [--benchmark]

Writes ``model.onnx`` (opset 17, TorchScript exporter, dynamic batch axis;
input ``patterns``; outputs ``probabilities`` = softmax(logits / T) with T in
the graph, ``features`` (n, C, 8, 8) and ``cam`` (n, 23, 8, 8) whose mean over
(h, w) equals the logits), ``test_input.npy`` (8 preprocessed patterns),
``test_output.npy`` (ONNX Runtime's probabilities for them),
``training_config.yaml`` (the run's resolved configuration; for a warm
start also ``training_config_init<i>.yaml``, the configurations of the runs
it started from, earliest first) and ``card.yaml`` per ``docs/card_schema.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from kikuchipy_cnn.card import sha256_of
from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS
from kikuchipy_cnn.preprocessing import Preprocessing, preprocess
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info
from kikuchipy_cnn.training.calibrate import fit_temperature
from kikuchipy_cnn.training.model import ExportWrapper, build_model, count_parameters

__all__ = ["benchmark_onnx", "export_onnx", "export_run", "load_run_model"]

OUTPUT_NAMES = ("probabilities", "features", "cam")
MAX_BYTES = 20 * 1024 * 1024
TOLERANCE = 1.0e-4



LIMITATIONS = [
    "Point groups within one Laue class cannot be distinguished from kinematical "
    "data: the model predicts the Bravais lattice and the Laue class only.",
    "Pseudo-symmetry: structures close to a higher symmetry (e.g. tetragonal with "
    "c/a near 1, orthorhombic with b/a near sqrt(3), rhombohedral near cubic "
    "angles) look like, and are often classified as, the higher-symmetry class.",
    "Lattice centring is read from systematically absent bands; weak or "
    "dynamically excited bands can make centring ambiguous.",
    "Trained only on simulated patterns; accuracy on experimental patterns, "
    "unusual detector geometries or strong artefacts may be lower than the "
    "reported simulation numbers.",
    "One pattern is classified at a time at 64 x 64 pixels: overlapping patterns "
    "from grain boundaries or several phases give mixed probabilities.",
]


def load_run_model(run_dir: str | Path):
    """Return ``(model in eval mode, checkpoint dict)`` of a run directory."""
    ck = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = build_model(ck["model_config"])
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def export_onnx(model, path: str | Path, temperature: float = 1.0) -> Path:
    """Write ``model`` (a :class:`KikuchiNet`) with the temperature in the
    graph to ``path``."""
    path = Path(path)
    wrapper = ExportWrapper(model.float().eval(), temperature).eval()
    wrapper = wrapper.to(memory_format=torch.contiguous_format)
    s = model.config.in_size
    dummy = torch.zeros(2, 1, s, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["patterns"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={k: {0: "n"} for k in ("patterns", *OUTPUT_NAMES)},
            do_constant_folding=True,
        )
    return path


def _session(path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def compare(model, onnx_path, x: np.ndarray, temperature: float) -> dict:
    """Max abs difference of each output between ONNX Runtime and PyTorch."""
    wrapper = ExportWrapper(model.eval(), temperature).eval()
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(torch.from_numpy(x))]
    got = _session(onnx_path).run(list(OUTPUT_NAMES), {"patterns": x})
    return {n: float(np.abs(a - b).max()) for n, a, b in zip(OUTPUT_NAMES, ref, got)}


def benchmark_onnx(path, batch: int = 256, threads: int = 1, seconds: float = 5.0) -> float:
    """Patterns per second of ``probabilities`` in ONNX Runtime (CPU)."""
    sess = _session(path, threads)
    x = np.random.default_rng(0).normal(size=(batch, 1, 64, 64)).astype(np.float32)
    sess.run(["probabilities"], {"patterns": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(["probabilities"], {"patterns": x})
        n += batch
    return n / (time.perf_counter() - t0)


def _test_patterns(run_dir: Path, recipe: Preprocessing, n: int = 8) -> np.ndarray:
    vpath = run_dir / "val_set.npz"
    if vpath.is_file():
        with np.load(vpath) as z:
            x, y = z["x"], z["y"]
        # Prefer distinct classes
        _, first = np.unique(y, return_index=True)
        idx = list(first[:n]) + [i for i in range(len(y)) if i not in set(first[:n])]
        return np.ascontiguousarray(x[np.sort(idx[:n])], dtype=np.float32)
    rng = np.random.default_rng(0)
    raw = rng.poisson(100, size=(n, 2 * recipe.size, 2 * recipe.size)).astype(np.float32)
    return preprocess(raw, recipe)[0]


def _source_summary(spec: dict) -> dict:
    keep = {
        "engine": ("source", "load_masters", "make_batch", "masters_args", "masters_kwargs", "make_batch_kwargs"),
        "callable": ("source", "fn", "kwargs"),
        "hdf5": ("source", "path"),
        "synthetic": ("source",),
    }.get(spec.get("source"), tuple(spec))
    return {k: spec[k] for k in (*keep, "n", "seed") if k in spec}


def headline_numbers(path: str | Path) -> dict:
    """Card ``evaluation`` from a JSON file.

    The JSON of ``kikuchipy_cnn.training.evaluate`` (``{data set: {level:
    {"accuracy", "ece", "confusion", ...}}}``) is reduced to the top-1
    accuracy per level and the joint ECE per data set, plus ``report``: the
    Markdown report beside it. Any other JSON object is taken as it is.
    """
    path = Path(path)
    ev = json.loads(path.read_text())
    if not isinstance(ev, dict):
        raise ValueError(f"{path} must hold a JSON object")
    levels = ("crystal_system", "bravais_lattice", "laue_class", "joint")
    if ev and all(
        isinstance(v, dict) and all(isinstance(v.get(lv), dict) for lv in levels) for v in ev.values()
    ):
        out = {}
        for name, m in ev.items():
            out[name] = {"n": m.get("n")}
            out[name].update({f"accuracy_{lv}": round(float(m[lv]["accuracy"]), 4) for lv in levels})
            if "ece" in m["joint"]:
                out[name]["ece_joint"] = round(float(m["joint"]["ece"]), 4)
        report = path.with_suffix(".md")
        if report.is_file():
            out["report"] = report.name
        return out
    return ev


def warm_start_chain(cfg: dict) -> list[tuple[Path, dict]]:
    """The runs a configuration warm-starts from (``init_from``), earliest
    first: ``[(run_dir, config), ...]``, read from each run's ``config.yaml``."""
    chain, seen = [], set()
    from kikuchipy_cnn.training.train import init_checkpoint

    while cfg.get("init_from"):
        path = Path(cfg["init_from"])
        run = init_checkpoint(path).parent
        if run.resolve() in seen:
            raise ValueError(f"init_from loops back to {run}")
        seen.add(run.resolve())
        cfg_path = run / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"init_from names {path}, but {cfg_path} is missing: the card could not "
                "say how the starting weights were trained"
            )
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        chain.append((run, cfg))
    return chain[::-1]


def _training_commands(cfg: dict, chain: list, name: str, version: str) -> list[str]:
    """Commands that rebuild the data, train (the runs of ``chain`` first,
    see :func:`warm_start_chain`) and export."""
    commands = list(cfg.get("data_commands", []))
    for i, (run, c) in enumerate(chain):
        commands += [x for x in c.get("data_commands", []) if x not in commands]
        commands.append(
            f"python -m kikuchipy_cnn.training.train --config "
            f"models/{name}/training_config_init{i}.yaml --run-dir {run.as_posix()}"
        )
    commands += [
        f"python -m kikuchipy_cnn.training.train --config "
        f"models/{name}/training_config.yaml --run-dir runs/{name}",
        f"python -m kikuchipy_cnn.training.export --run-dir runs/{name} "
        f"--out models/{name}/ --version {version}",
    ]
    return commands


def export_run(
    run_dir: str | Path,
    out: str | Path,
    name: str | None = None,
    version: str = "0.1.0",
    evaluation: dict | str | Path | None = None,
    temperature: float | None = None,
    description: str | None = None,
    license: str = "GPL-3.0-or-later",
) -> dict:
    """Export a run to ``out`` and return a summary (diffs, size, sha256)."""
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = name or out.resolve().name
    model, ck = load_run_model(run_dir)
    recipe = Preprocessing.from_dict(ck["preprocessing"])
    if list(ck.get("classes", JOINT_CLASSES)) != list(JOINT_CLASSES):
        raise ValueError("The run's classes differ from kikuchipy_cnn.symmetry.JOINT_CLASSES")

    cal_path = run_dir / "calibration.json"
    cal = json.loads(cal_path.read_text()) if cal_path.is_file() else None
    if temperature is None:
        if cal is not None:
            temperature = float(cal["temperature"])
        elif (run_dir / "val_set.npz").is_file():
            from kikuchipy_cnn.training.train import predict_logits

            with np.load(run_dir / "val_set.npz") as z:
                temperature = fit_temperature(predict_logits(model, z["x"]), z["y"])
        else:
            temperature = 1.0
    temperature = float(temperature)

    onnx_path = export_onnx(model, out / "model.onnx", temperature)
    size = onnx_path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{onnx_path} is {size / 2**20:.1f} MiB, more than 20 MiB")

    x = _test_patterns(run_dir, recipe)
    diffs = compare(model, onnx_path, x, temperature)
    print("max abs diff ONNX Runtime vs PyTorch:", diffs)
    bad = {k: v for k, v in diffs.items() if not v < TOLERANCE}
    if bad:
        raise AssertionError(f"ONNX Runtime differs from PyTorch by {bad}")
    probs = _session(onnx_path).run(["probabilities"], {"patterns": x})[0]
    np.save(out / "test_input.npy", x.astype(np.float32))
    np.save(out / "test_output.npy", probs.astype(np.float32))

    cfg_src = run_dir / "config.yaml"
    if cfg_src.is_file():
        shutil.copyfile(cfg_src, out / "training_config.yaml")
    cfg = ck["config"]
    chain = warm_start_chain(cfg)
    for i, (run, _) in enumerate(chain):
        shutil.copyfile(run / "config.yaml", out / f"training_config_init{i}.yaml")

    if isinstance(evaluation, (str, Path)):
        evaluation = headline_numbers(evaluation)
    if evaluation is None and cal is not None:
        c = cal["calibrated"]
        evaluation = {
            "split": "validation (simulated, structures disjoint from training)",
            "n": c["n"],
            **{k: round(float(v), 4) for k, v in c.items() if k != "n"},
        }

    data = cfg.get("data", {})
    classes = []
    for label in JOINT_CLASSES:
        classes.append({**joint_class_info(label), "colour": DEFAULT_COLOURS[label]})
    card = {
        "format_version": 1,
        "name": name,
        "version": str(version),
        "description": description
        or (
            f"Residual CNN ({count_parameters(model):,} parameters) with global average "
            "pooling and a linear head, classifying preprocessed 64 x 64 EBSD Kikuchi "
            "patterns into the 23 joint '<Bravais lattice> <Laue class>' classes. "
            "Trained only on simulated patterns (projections of dynamical and "
            "kinematical master patterns of random crystals) with realistic "
            "degradation; probabilities are temperature-calibrated on a validation "
            "split of structures disjoint from the training structures."
        ),
        "license": license,
        "citation": "kikuchipy-cnn developers. kikuchipy-cnn: crystal symmetry "
        f"classification of EBSD Kikuchi patterns with CNNs trained on simulations, model {name} {version}.",
        "authors": ["kikuchipy-cnn developers"],
        "weights": {"file": "model.onnx", "sha256": sha256_of(onnx_path)},
        "input": {
            "name": "patterns",
            "shape": [-1, 1, recipe.size, recipe.size],
            "dtype": "float32",
            "axes": "bcyx",
        },
        "preprocessing": recipe.to_dict(),
        "outputs": {"probabilities": "probabilities", "features": "features", "cam": "cam"},
        "temperature": temperature,
        "classes": classes,
        "saliency": ["cam", "occlusion"],
        "min_score": 0.5,
        "test": {"input": "test_input.npy", "output": "test_output.npy", "tolerance": TOLERANCE},
        "training_data": {
            "train": _source_summary(data.get("train", {})),
            "validation": _source_summary(data.get("val", {})),
            "steps": cfg.get("steps"),
            "batch_size": data.get("batch_size"),
            "seed": cfg.get("seed"),
        },
        "training": {
            "command": " && ".join(_training_commands(cfg, chain, name, version)),
            "config": "training_config.yaml",
            "steps_completed": int(ck["step"]),
            **(
                {
                    "warm_start": [
                        {"config": f"training_config_init{i}.yaml", "steps": c.get("steps")}
                        for i, (_, c) in enumerate(chain)
                    ]
                }
                if chain
                else {}
            ),
        },
        "evaluation": evaluation or {},
        "limitations": LIMITATIONS,
    }
    (out / "card.yaml").write_text(
        yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
    )
    return {"diffs": diffs, "bytes": size, "sha256": card["weights"]["sha256"], "temperature": temperature}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a training run to ONNX with a model card")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", required=True, help="models/<name>/")
    ap.add_argument("--name", default=None, help="registry name (default: the out dir's name)")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--license", default="GPL-3.0-or-later", help="licence of the weights")
    ap.add_argument("--evaluation", default=None, help="JSON file of headline numbers for the card")
    ap.add_argument("--temperature", type=float, default=None, help="override the fitted temperature")
    ap.add_argument("--benchmark", action="store_true", help="print ONNX Runtime CPU patterns/s")
    a = ap.parse_args(argv)
    summary = export_run(
        a.run_dir, a.out, name=a.name, version=a.version, evaluation=a.evaluation,
        temperature=a.temperature, license=a.license,
    )
    print(json.dumps(summary, indent=2))
    if a.benchmark:
        path = Path(a.out) / "model.onnx"
        for t in (1, 2):
            print(f"ONNX Runtime CPU, batch 256, {t} thread(s): {benchmark_onnx(path, 256, t):.0f} patterns/s")


if __name__ == "__main__":
    main()
