"""Throughput of make_batch from cached master patterns, against the old
(pure NumPy/SciPy, per-pattern kikuchipy projection) engine in the same run.

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_data_engine.py \
    [--cache models/training-data/masters] [--split train] [--n 512] [--rounds 3]

The old engine is read from git (``--old-rev``, the commit before the fast
engine; ``--old-rev ''`` skips it). Rounds alternate old and new so that the
ratio is measured under the same load. Falls back to kikuchipy's EMsoft Ni
master pattern (downsampled to npx 64) when the cache holds no master
patterns of the split.
"""

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from kikuchipy_cnn.training.projection import MasterSet
from kikuchipy_cnn.training.realism import make_batch

ROOT = Path(__file__).resolve().parent.parent
OLD_REV = "4b881c7"  # last commit with the old data engine


def load_old_engine(rev: str):
    """The old ``make_batch`` (with its own projection and preprocessing
    modules) from git revision ``rev``."""

    def module(name, path, replace=()):
        src = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        for a, b in replace:
            src = src.replace(a, b)
        mod = types.ModuleType(name)
        mod.__file__ = f"<{rev}:{path}>"
        sys.modules[name] = mod
        exec(compile(src, mod.__file__, "exec"), mod.__dict__)
        return mod

    module("_old_engine_preprocessing", "kikuchipy_cnn/preprocessing.py")
    module("_old_engine_projection", "kikuchipy_cnn/training/projection.py")
    realism = module(
        "_old_engine_realism",
        "kikuchipy_cnn/training/realism.py",
        replace=[
            ("import kikuchipy_cnn.preprocessing as _preprocessing",
             "import _old_engine_preprocessing as _preprocessing"),
            ("from kikuchipy_cnn.training.projection import", "from _old_engine_projection import"),
        ],
    )  # fmt: skip
    return realism.make_batch


def rate(fn, ms, n, batch, rng):
    """(patterns per wall-clock second, per CPU second of this process)."""
    t, c = time.perf_counter(), time.process_time()
    done = 0
    while done < n:
        x, y, meta = fn(ms, batch, rng)
        done += len(y)
    return done / (time.perf_counter() - t), done / (time.process_time() - c), x, meta


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default=str(ROOT / "models/training-data/masters"))
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=512, help="patterns per round and engine")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--old-rev", default=OLD_REV)
    args = p.parse_args()
    ms = MasterSet(args.cache, args.split) if os.path.isdir(args.cache) else None
    if ms is None or len(ms) == 0:
        import kikuchipy as kp

        mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
        d = mp.data.astype(np.float64)[:, ::3, ::3]
        ms = MasterSet.from_arrays([d], [22])
    print(f"{len(ms)} masters; classes: {sum(v > 0 for v in ms.class_counts().values())}")
    engines = {"new": make_batch}
    if args.old_rev:
        engines["old"] = load_old_engine(args.old_rev)
    rngs = {k: np.random.default_rng(0) for k in engines}
    for k, fn in engines.items():
        fn(ms, 32, rngs[k])  # compile numba / warm up
    rates = {k: [] for k in engines}
    cpu = {k: [] for k in engines}
    for _ in range(args.rounds):
        for k, fn in engines.items():
            r, c, x, meta = rate(fn, ms, args.n, args.batch, rngs[k])
            rates[k].append(r)
            cpu[k].append(c)
    threads = os.environ.get("OMP_NUM_THREADS")
    for k, r in rates.items():
        print(f"{k}: median {np.median(r):.0f} patterns/s wall clock (rounds: "
              f"{', '.join(f'{v:.0f}' for v in r)}; 1 process, OMP_NUM_THREADS={threads}); "
              f"{np.median(cpu[k]):.0f} patterns per CPU second")
    if "old" in rates:
        ratio = np.array(rates["new"]) / np.array(rates["old"])
        print(f"new/old: median {np.median(ratio):.2f}x (per round: "
              f"{', '.join(f'{v:.2f}' for v in ratio)})")
    print(f"x {x.shape} {x.dtype}, valid {meta['valid'].mean():.3f}")


if __name__ == "__main__":
    main()
