"""Throughput of make_batch from cached master patterns.

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_data_engine.py \
    [--cache /work/cache/kikuchipy_cnn/masters] [--split train] [--n 1024]

Falls back to kikuchipy's EMsoft Ni master pattern (downsampled to npx 64)
when the cache holds no master patterns of the split.
"""

import argparse
import os
import time

import numpy as np

from kikuchipy_cnn.training.projection import MasterSet
from kikuchipy_cnn.training.realism import make_batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default="/work/cache/kikuchipy_cnn/masters")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    ms = MasterSet(args.cache, args.split) if os.path.isdir(args.cache) else None
    if ms is None or len(ms) == 0:
        import kikuchipy as kp

        mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="both")
        d = mp.data.astype(np.float64)[:, ::3, ::3]
        ms = MasterSet.from_arrays([d], [22])
    print(f"{len(ms)} masters; classes: {sum(v > 0 for v in ms.class_counts().values())}")
    rng = np.random.default_rng(0)
    make_batch(ms, 32, rng)  # compile numba
    t = time.perf_counter()
    n = 0
    while n < args.n:
        x, y, meta = make_batch(ms, args.batch, rng)
        n += len(y)
    dt = time.perf_counter() - t
    print(f"make_batch: {n} patterns in {dt:.2f} s = {n / dt:.0f} patterns/s "
          f"(1 process, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
          f"x {x.shape} {x.dtype}, valid {meta['valid'].mean():.3f}")


if __name__ == "__main__":
    main()
