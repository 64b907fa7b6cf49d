"""Training loop.

Usage::

    nohup python -m kikuchipy_cnn.training.train --config CONFIG.yaml \\
        --run-dir runs/NAME > runs/NAME.out 2>&1 &
    # after an interruption:
    nohup python -m kikuchipy_cnn.training.train --config CONFIG.yaml \\
        --run-dir runs/NAME --resume > runs/NAME.out 2>&1 &

The run directory receives ``config.yaml`` (the resolved configuration),
``train.log``, ``metrics.jsonl`` (one JSON line per validation),
``checkpoint.pt`` (written atomically every ``checkpoint_every`` steps, on
SIGTERM/SIGINT and at the end), ``val_set.npz`` (the fixed validation set),
and at the end ``val_logits.npz`` and ``calibration.json`` (temperature fitted
on the validation split).

Batch sources (``data.train.source`` / ``data.val.source``):

``engine``
    The simulated-data engine: ``masters = load_masters(*masters_args,
    **masters_kwargs)`` once (default :func:`load_master_set`: the cached
    master patterns of one split), then ``make_batch(masters, n, rng,
    **make_batch_kwargs)`` → ``(x, y, meta)`` (default
    :func:`engine_make_batch`); a ``make_batch`` with a ``recipe`` parameter
    gets the configured :class:`Preprocessing`. Patterns flagged invalid in
    ``meta["valid"]`` are dropped. Both are given as ``"module:attribute"`` strings.
``callable``
    Any ``"module:function"`` ``fn(n, rng, **kwargs)`` returning ``(x, y)`` or
    ``(x, y, meta)``.
``hdf5``
    A file with datasets ``x`` ``(N, 1, s, s)`` float32 (preprocessed) and
    ``y`` ``(N,)`` int.
``synthetic``
    Random patterns whose class is encoded in stripe orientation; for
    development and tests only.

Exact resume: batch ``k`` is drawn with ``numpy.random.default_rng([seed,
k])`` (on-the-fly sources) or from the permutation of epoch ``k // (N //
batch)`` (HDF5), so it does not depend on what was prefetched; the
checkpoint holds the model, optimiser, scheduler and torch RNG states.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from kikuchipy_cnn.preprocessing import Preprocessing
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info, level_names, marginalise
from kikuchipy_cnn.training.calibrate import (
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)
from kikuchipy_cnn.training.model import ModelConfig, build_model, count_parameters

__all__ = ["DEFAULT_CONFIG", "engine_make_batch", "evaluate", "load_config", "load_master_set", "train"]

log = logging.getLogger("kikuchipy_cnn.training")

DEFAULT_CONFIG: dict = {
    "seed": 0,
    "threads": 1,
    # commands that build the data the run reads (the card's reproduction recipe)
    "data_commands": ["python -m kikuchipy_cnn.training.kinematical"],
    "model": {},  # ModelConfig fields
    "preprocessing": Preprocessing().to_dict(),
    "data": {
        "batch_size": 128,
        "train": {
            "source": "engine",
            "load_masters": "kikuchipy_cnn.training.train:load_master_set",
            "make_batch": "kikuchipy_cnn.training.train:engine_make_batch",
            "masters_args": [],
            "masters_kwargs": {"split": "train"},  # and directory, limit
            "make_batch_kwargs": {},
            "workers": 1,  # background producers; 0 = in the training loop
            "worker_type": "process",  # or "thread"
            "prefetch": 4,
        },
        "val": {
            "source": "engine",
            "load_masters": "kikuchipy_cnn.training.train:load_master_set",
            "make_batch": "kikuchipy_cnn.training.train:engine_make_batch",
            "masters_args": [],
            "masters_kwargs": {"split": "val"},  # and directory, limit
            "make_batch_kwargs": {},
            "n": 2048,
            "seed": 12345,
        },
    },
    "optim": {
        "lr": 3.0e-3,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "label_smoothing": 0.05,
        "schedule": "onecycle",  # or "cosine"
        "warmup_fraction": 0.05,
        "grad_clip": 5.0,
    },
    "steps": 20000,
    # warm start: model weights from another run's checkpoint.pt (same model
    # config); optimiser and schedule start afresh. Relative to the working dir.
    "init_from": None,
    "checkpoint_every": 500,
    "val_every": 1000,
    "log_every": 50,
}


# ---------------------------------------------------------------- config
def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path_or_dict) -> dict:
    """Return the default configuration updated with a YAML file or dict."""
    if isinstance(path_or_dict, (str, Path)):
        over = yaml.safe_load(Path(path_or_dict).read_text(encoding="utf-8")) or {}
    else:
        over = dict(path_or_dict or {})
    cfg = _merge(DEFAULT_CONFIG, over)
    ModelConfig.from_dict(cfg["model"])  # validate early
    Preprocessing.from_dict(cfg["preprocessing"])
    return cfg


def init_checkpoint(init_from) -> Path:
    """The checkpoint an ``init_from`` entry names: a run directory or its
    ``checkpoint.pt``; the run's ``config.yaml`` lies beside it."""
    path = Path(init_from)
    return path / "checkpoint.pt" if path.is_dir() else path


def _warm_start(model, cfg):
    """Load the model weights of ``cfg["init_from"]`` (a run's checkpoint)."""
    path = init_checkpoint(cfg["init_from"])
    if not path.is_file():
        raise FileNotFoundError(f"init_from: no checkpoint at {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck["config"]["model"] != cfg["model"]:
        raise ValueError(
            f"init_from: {path} holds model {ck['config']['model']!r}, this run builds "
            f"{cfg['model']!r}; warm starts need the same architecture"
        )
    model.load_state_dict(ck["model"])
    log.info("Warm start from %s (step %d of that run)", path, int(ck["step"]))


def _import(ref):
    if callable(ref):
        return ref
    module, _, name = str(ref).partition(":")
    if not name:
        raise ValueError(f"Expected 'module:function', got {ref!r}")
    obj = importlib.import_module(module)
    for part in name.split("."):  # "module:Class.classmethod" works too
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------- sources
def load_master_set(
    split: str = "train", directory=None, limit: int | None = None,
    dynamical_fraction: float | None = None,
):
    """Cached master patterns of one split (``projection.MasterSet``), by
    default from ``master_patterns.DEFAULT_CACHE``; ``directory`` may be a
    list (e.g. dynamical and kinematical masters), mixed with
    ``dynamical_fraction``."""
    from kikuchipy_cnn.training import master_patterns, projection

    directory = directory or master_patterns.DEFAULT_CACHE
    masters = projection.MasterSet(directory, split, limit=limit,
                                   dynamical_fraction=dynamical_fraction)
    if len(masters) == 0:
        raise FileNotFoundError(f"No cached master patterns of split {split!r} in {directory}")
    log.info("Loaded %d %s master patterns (%d dynamical) from %s", len(masters), split,
             int(masters.dynamical.sum()), directory)
    return masters


def engine_make_batch(masters, n, rng, recipe=None, **kwargs):
    """The data engine's ``make_batch`` (``dataset.make_batch`` where it
    exists, else ``realism.make_batch``)."""
    try:
        from kikuchipy_cnn.training.dataset import make_batch
    except ImportError:
        from kikuchipy_cnn.training.realism import make_batch
    return make_batch(masters, n, rng, recipe=recipe, **kwargs)


def synthetic_batch(n: int, rng: np.random.Generator, size: int = 64, n_classes: int = len(JOINT_CLASSES)):
    """Noisy stripe patterns whose orientation encodes the class (dev/tests)."""
    y = rng.integers(0, n_classes, n)
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - c
    theta = (y + rng.uniform(-0.25, 0.25, n)) * np.pi / n_classes
    u = xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None]
    x = np.cos(u * (2 * np.pi / 8) + rng.uniform(0, 2 * np.pi, n)[:, None, None])
    x = x + rng.normal(0, 1.0, x.shape)
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    return x[:, None].astype(np.float32), y.astype(np.int64)


def make_sampler(spec: dict, batch_size: int, seed: int, preprocessing: dict | None = None):
    """Return ``batch(step) -> (x, y)``: a deterministic function of the step.

    Master patterns are loaded once, here (forked workers share them); HDF5
    handles are opened lazily in each process.
    """
    source = spec.get("source", "engine")
    state: dict = {}

    if source == "hdf5":
        path = str(spec["path"])

        def batch(step: int):
            import h5py

            if "f" not in state:
                state["f"] = h5py.File(path, "r")
                state["n"] = len(state["f"]["y"])
            n = state["n"]
            per_epoch = n // batch_size
            if per_epoch == 0:
                raise ValueError(f"{path} holds {n} patterns, fewer than one batch")
            epoch, i = divmod(step, per_epoch)
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            idx = np.sort(perm[i * batch_size : (i + 1) * batch_size])
            x = state["f"]["x"][idx].astype(np.float32)
            y = state["f"]["y"][idx].astype(np.int64)
            return x, y

        return batch

    if source == "synthetic":
        size = int((preprocessing or {}).get("size", 64))

        def batch(step: int):
            return synthetic_batch(batch_size, np.random.default_rng([seed, step]), size)

        return batch

    if source == "engine":
        load = _import(spec["load_masters"])
        make = _import(spec["make_batch"])
        kwargs = dict(spec.get("make_batch_kwargs") or {})
        try:
            takes_recipe = "recipe" in inspect.signature(make).parameters
        except (TypeError, ValueError):
            takes_recipe = False
        if takes_recipe and preprocessing is not None and "recipe" not in kwargs:
            kwargs["recipe"] = Preprocessing.from_dict(dict(preprocessing))
        # Loaded here, before any worker forks, so workers share the memory
        masters = load(*list(spec.get("masters_args") or []), **dict(spec.get("masters_kwargs") or {}))

        def batch(step: int):
            out = make(masters, batch_size, np.random.default_rng([seed, step]), **kwargs)
            meta = out[2] if len(out) > 2 else None
            if isinstance(meta, dict) and meta.get("valid") is not None:
                valid = np.asarray(meta["valid"], dtype=bool)
                if not valid.all():
                    return out[0][valid], out[1][valid]
            if preprocessing is not None and isinstance(meta, dict) and "preprocessing" in meta:
                used = Preprocessing.from_dict(dict(meta["preprocessing"])).to_dict()
                want = Preprocessing.from_dict(dict(preprocessing)).to_dict()
                if used != want:
                    raise ValueError(
                        f"The data engine preprocessed with {used}, but the configuration "
                        f"says {want}: set 'preprocessing' to what the engine uses"
                    )
            return out[0], out[1]

        return batch

    if source == "callable":
        fn = _import(spec["fn"])
        kwargs = dict(spec.get("kwargs") or {})

        def batch(step: int):
            out = fn(batch_size, np.random.default_rng([seed, step]), **kwargs)
            return out[0], out[1]

        return batch

    raise ValueError(f"Unknown batch source {source!r}")


def _producer(batch_fn, start, stride, stop, q, stop_event, is_process=False):
    if is_process:  # Ctrl-C is the trainer's to handle (it checkpoints)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    step = start
    while step < stop and not stop_event.is_set():
        try:
            x, y = batch_fn(step)
            item = (step, np.ascontiguousarray(x, np.float32), np.asarray(y, np.int64))
        except BaseException as e:  # hand the error to the trainer
            item = (step, e, None)
        while not stop_event.is_set():
            try:
                q.put(item, timeout=0.5)
                break
            except queue.Full:
                continue
        if item[2] is None:
            return
        step += stride


class BatchStream:
    """Yield ``(x, y)`` for steps ``start, start + 1, ...`` in order, produced
    by ``workers`` background threads or processes (0: in the caller)."""

    def __init__(self, batch_fn, start: int, stop: int, workers: int = 1, worker_type: str = "process", prefetch: int = 4):
        self.batch_fn, self.step, self.stop = batch_fn, start, stop
        self.workers = int(workers)
        self._buffer: dict = {}
        self._procs = []
        if self.workers <= 0:
            return
        if worker_type == "process":
            import multiprocessing as mp

            ctx = mp.get_context("fork")
            self._q = ctx.Queue(maxsize=max(prefetch, self.workers))
            self._stop = ctx.Event()
            make = lambda **kw: ctx.Process(daemon=True, **kw)  # noqa: E731
        elif worker_type == "thread":
            self._q = queue.Queue(maxsize=max(prefetch, self.workers))
            self._stop = threading.Event()
            make = lambda **kw: threading.Thread(daemon=True, **kw)  # noqa: E731
        else:
            raise ValueError(f"worker_type must be 'process' or 'thread', not {worker_type!r}")
        for w in range(self.workers):
            p = make(
                target=_producer,
                args=(batch_fn, start + w, self.workers, stop, self._q, self._stop, worker_type == "process"),
            )
            p.start()
            self._procs.append(p)

    def __next__(self):
        if self.step >= self.stop:
            raise StopIteration
        if self.workers <= 0:
            out = self.batch_fn(self.step)
        else:
            t0 = time.monotonic()
            while self.step not in self._buffer:
                try:
                    s, x, y = self._q.get(timeout=1.0)
                except queue.Empty:
                    # A worker that was killed (exit code != 0), or all gone
                    failed = [p for p in self._procs if not p.is_alive() and getattr(p, "exitcode", 0)]
                    gone = all(not p.is_alive() for p in self._procs) and self._q.empty()
                    if failed or gone:
                        code = getattr(failed[0], "exitcode", None) if failed else None
                        raise RuntimeError(f"Data workers stopped early (exit code {code})") from None
                    if time.monotonic() - t0 > 1800:
                        raise RuntimeError("No batch from the data workers for 30 minutes") from None
                    continue
                if y is None:
                    raise RuntimeError(f"Data worker failed at step {s}") from x
                self._buffer[s] = (x, y)
            out = self._buffer.pop(self.step)
        self.step += 1
        return out

    def __iter__(self):
        return self

    def close(self):
        if not self._procs:
            return
        self._stop.set()
        # Keep reading while producers finish their batch and flush what they
        # have queued (a process cannot exit before its queue is flushed)
        deadline = time.monotonic() + 120
        while any(p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            try:
                self._q.get(timeout=0.2)
            except queue.Empty:
                pass
        for p in self._procs:
            p.join(timeout=1)
            if hasattr(p, "terminate") and p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self._procs = []


def make_val_set(spec: dict, batch_size: int, preprocessing: dict | None = None):
    """Fixed validation set ``(x, y)`` from an HDF5 file or ``n`` patterns of
    an on-the-fly source drawn with ``spec['seed']``."""
    if spec.get("source") == "hdf5" and "n" not in spec:
        import h5py

        with h5py.File(spec["path"], "r") as f:
            return f["x"][:].astype(np.float32), f["y"][:].astype(np.int64)
    n = int(spec.get("n", 2048))
    fn = make_sampler(spec, batch_size, int(spec.get("seed", 12345)), preprocessing)
    xs, ys = [], []
    for k in range(math.ceil(n / batch_size)):
        x, y = fn(k)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs)[:n].astype(np.float32), np.concatenate(ys)[:n].astype(np.int64)


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).contiguous(
            memory_format=torch.channels_last
        )
        out.append(model(xb).float().numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, len(JOINT_CLASSES)), np.float32)


def evaluate(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> dict:
    """Top-1 accuracy at the joint, crystal system, Bravais lattice and Laue
    class levels (coarser levels by marginalising joint probabilities), NLL
    and ECE."""
    p = softmax(logits, temperature)
    y = np.asarray(y, dtype=np.int64)
    out = {"n": int(len(y)), "acc_joint": float((p.argmax(1) == y).mean())}
    for level in ("crystal_system", "bravais_lattice", "laue_class"):
        names = level_names(level)
        true = np.array([names.index(joint_class_info(JOINT_CLASSES[i])[level]) for i in y])
        pm = marginalise(p, JOINT_CLASSES, level)
        out[f"acc_{level}"] = float((pm.argmax(1) == true).mean())
    out["nll"] = nll(logits, y, temperature)
    out["ece"] = expected_calibration_error(p, y, 15)
    return out


# ---------------------------------------------------------------- training
def _lr_lambda(kind: str, steps: int, warmup: int):
    def f(step):
        if kind != "cosine":
            raise ValueError(kind)
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def _make_optim(model, cfg):
    o = cfg["optim"]
    decay, no_decay = [], []
    for n_, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o["lr"],
        betas=tuple(o["betas"]),
    )
    steps = int(cfg["steps"])
    warmup = max(1, int(o["warmup_fraction"] * steps))
    if o["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=o["lr"], total_steps=steps, pct_start=min(0.5, max(o["warmup_fraction"], 2.0 / steps)),
            anneal_strategy="cos", cycle_momentum=False,
        )
    elif o["schedule"] == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda("cosine", steps, warmup))
    else:
        raise ValueError(f"Unknown schedule {o['schedule']!r}")
    return opt, sched


def _save_atomic(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _setup_logging(run_dir: Path):
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    log.addHandler(fh)
    log.addHandler(sh)
    log.propagate = False


def train(
    config,
    run_dir: str | Path,
    resume: bool = False,
    stop_at: int | None = None,
    train_batch_fn=None,
    val_set: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Train (or resume) a run; return the last validation metrics.

    Parameters
    ----------
    config
        Path to a YAML file or a dict, merged over :data:`DEFAULT_CONFIG`.
    run_dir
        Output directory.
    resume
        Continue from ``run_dir/checkpoint.pt``.
    stop_at
        Stop (with a checkpoint) after this many steps although the schedule
        has more; for tests of resumption.
    train_batch_fn, val_set
        Override the configured sources: ``train_batch_fn(step) -> (x, y)``
        and a fixed ``(x, y)``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"No checkpoint to resume in {run_dir}")
        cfg = load_config(config) if config is not None else load_config(run_dir / "config.yaml")
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)["config"]
        for key in ("seed", "steps", "model", "optim", "preprocessing"):
            if cfg.get(key) != saved.get(key):
                raise ValueError(
                    f"Cannot resume exactly: {key!r} is {cfg.get(key)!r} now but was "
                    f"{saved.get(key)!r}; resume without --config or start a new run"
                )
        if cfg["data"]["batch_size"] != saved["data"]["batch_size"]:
            raise ValueError("Cannot resume exactly: data.batch_size changed")
    else:
        if ckpt_path.exists():
            raise FileExistsError(f"{ckpt_path} exists: pass --resume or choose a new run dir")
        cfg = load_config(config)
    _setup_logging(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    torch.set_num_threads(int(cfg.get("threads", 1)))
    seed = int(cfg["seed"])
    torch.manual_seed(seed)

    model = build_model(cfg["model"]).to(memory_format=torch.channels_last)
    opt, sched = _make_optim(model, cfg)
    step = 0
    if resume:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        step = int(ck["step"])
        log.info("Resumed from %s at step %d", ckpt_path, step)
    elif cfg.get("init_from"):
        _warm_start(model, cfg)
    steps = int(cfg["steps"])
    stop = min(steps, stop_at) if stop_at is not None else steps
    log.info(
        "Model %s: %d parameters; %d steps of batch %d; run dir %s",
        ModelConfig.from_dict(cfg["model"]).to_dict(), count_parameters(model), steps,
        cfg["data"]["batch_size"], run_dir,
    )

    # Fixed validation set, cached in the run dir
    bs = int(cfg["data"]["batch_size"])
    if val_set is None:
        vpath = run_dir / "val_set.npz"
        if vpath.is_file():
            with np.load(vpath) as z:
                val_set = (z["x"], z["y"])
        else:
            t0 = time.perf_counter()
            val_set = make_val_set(cfg["data"]["val"], bs, cfg["preprocessing"])
            np.savez(vpath, x=val_set[0], y=val_set[1])
            log.info("Validation set: %d patterns in %.1f s", len(val_set[1]), time.perf_counter() - t0)
    xv, yv = val_set

    tspec = cfg["data"]["train"]
    batch_fn = train_batch_fn or make_sampler(tspec, bs, seed, cfg["preprocessing"])
    stream = BatchStream(
        batch_fn, step, stop,
        workers=0 if train_batch_fn is not None else int(tspec.get("workers", 1)),
        worker_type=tspec.get("worker_type", "process"),
        prefetch=int(tspec.get("prefetch", 4)),
    )
    mcfg = ModelConfig.from_dict(cfg["model"])
    in_shape, n_classes = (1, mcfg.in_size, mcfg.in_size), mcfg.n_classes
    if mcfg.in_size != int(cfg["preprocessing"]["size"]):
        raise ValueError("model.in_size differs from preprocessing.size")
    criterion = nn.CrossEntropyLoss(label_smoothing=float(cfg["optim"]["label_smoothing"]))
    grad_clip = cfg["optim"].get("grad_clip")

    def checkpoint():
        _save_atomic(
            {
                "step": step,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": cfg,
                "model_config": ModelConfig.from_dict(cfg["model"]).to_dict(),
                "preprocessing": cfg["preprocessing"],
                "classes": list(JOINT_CLASSES),
            },
            ckpt_path,
        )

    def validate():
        logits = predict_logits(model, xv)
        m = evaluate(logits, yv)
        m["step"] = step
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")
        log.info(
            "val step %d: joint %.4f  system %.4f  Bravais %.4f  Laue %.4f  nll %.4f  ece %.4f",
            step, m["acc_joint"], m["acc_crystal_system"], m["acc_bravais_lattice"],
            m["acc_laue_class"], m["nll"], m["ece"],
        )
        return logits, m

    interrupted = {"flag": False}

    def _handler(signum, frame):
        interrupted["flag"] = True
        log.info("Signal %d: checkpointing and stopping", signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            old[s] = signal.signal(s, _handler)

    model.train()
    last_metrics: dict = {}
    t_log, n_log, loss_sum, wait = time.perf_counter(), 0, 0.0, 0.0
    try:
        while step < stop and not interrupted["flag"]:
            t0 = time.perf_counter()
            x, y = next(stream)
            wait += time.perf_counter() - t0
            if x.ndim != 4 or x.shape[1:] != in_shape or len(y) != len(x) or y.min() < 0 or y.max() >= n_classes:
                raise ValueError(
                    f"Batch of step {step} has x {x.shape} and y in [{y.min()}, {y.max()}]; "
                    f"expected x (n, {', '.join(map(str, in_shape))}) and y in [0, {n_classes - 1}]"
                )
            xb = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            yb = torch.from_numpy(y)
            loss = criterion(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item()
            n_log += 1
            if step % int(cfg["log_every"]) == 0 or step == stop:
                dt = time.perf_counter() - t_log
                log.info(
                    "step %d/%d loss %.4f lr %.2e  %.0f img/s (data wait %.0f%%)",
                    step, steps, loss_sum / n_log, sched.get_last_lr()[0],
                    n_log * bs / dt, 100 * wait / dt,
                )
                t_log, n_log, loss_sum, wait = time.perf_counter(), 0, 0.0, 0.0
            if step % int(cfg["val_every"]) == 0 and step < steps:
                _, last_metrics = validate()
            if step % int(cfg["checkpoint_every"]) == 0:
                checkpoint()
    finally:
        stream.close()
        for s, h in old.items():
            signal.signal(s, h)
    checkpoint()
    if step < steps:
        log.info("Stopped at step %d of %d; continue with --resume", step, steps)
        return last_metrics

    # End of schedule: final validation and temperature
    logits, last_metrics = validate()
    np.savez(run_dir / "val_logits.npz", logits=logits, y=yv)
    t = fit_temperature(logits, yv)
    cal = {"temperature": t, "uncalibrated": last_metrics, "calibrated": evaluate(logits, yv, t)}
    (run_dir / "calibration.json").write_text(json.dumps(cal, indent=2))
    log.info(
        "Temperature %.4f: val nll %.4f -> %.4f, ece %.4f -> %.4f",
        t, cal["uncalibrated"]["nll"], cal["calibrated"]["nll"],
        cal["uncalibrated"]["ece"], cal["calibrated"]["ece"],
    )
    return last_metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="YAML configuration (default on --resume: the run's config.yaml)")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--stop-at", type=int, default=None, help="stop (checkpointed) after this step")
    a = ap.parse_args(argv)
    if a.config is None and not a.resume:
        ap.error("--config is required unless --resume")
    train(a.config, a.run_dir, resume=a.resume, stop_at=a.stop_at)


if __name__ == "__main__":
    main()
