"""Scaling of ``classify_structure`` on lazy on-disk scans: time and peak
memory for scans of 10k, 100k and 1M 60x60 patterns, each classified from
disk in its own process.

Each scan is written once (kikuchipy h5ebsd, 1000 patterns per row) from
kikuchipy's 9 experimental Ni patterns with a little random noise, with the
static background stored, and reused by later runs. The peer measured in the
same run is a plain lazy read of the same file (sum of every pattern), so the
printed ratio ``classify / read`` is the cost of classification over the cost
of streaming the data off the disk; ``us/pattern`` must stay constant (linear
time) and peak RSS flat.

    python benchmarks/bench_scaling.py [--sizes 10000 100000 1000000] [--dir /tmp/kcnn-scaling]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import kikuchipy as kp
path, what = sys.argv[1], sys.argv[2]
s = kp.load(path, lazy=True)
n = int(s.axes_manager.navigation_size)
t = time.perf_counter()
if what == "read":
    s.data.sum(axis=(-2, -1)).compute()
    extra = {}
else:
    import kikuchipy_cnn
    xmap = s.classify_structure(verbose=0, show_progressbar=False)
    extra = {"map_size": int(xmap.size), "above_min_score": int((xmap.phase_id >= 0).sum())}
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"what": what, "n": n, "seconds": dt, "peak_rss_mb": rss, **extra}))
"""


def write_scan(path: Path, n: int, cols: int = 1000) -> None:
    """Write a lazy scan of ``n`` 60x60 patterns to ``path`` (h5ebsd)."""
    import dask.array as da
    import kikuchipy as kp

    s0 = kp.data.nickel_ebsd_small()
    base = s0.data.reshape(9, 60, 60).astype(np.int16)
    rows = n // cols
    step = max(1, min(rows, 20))

    def block(block_info=None):
        (r0, r1) = block_info[None]["array-location"][0]
        rng = np.random.default_rng(r0)
        idx = rng.integers(0, 9, (r1 - r0, cols))
        noise = rng.integers(-4, 5, (r1 - r0, cols, 60, 60), dtype=np.int16)
        return np.clip(base[idx] + noise, 0, 255).astype(np.uint8)

    chunks = (tuple([step] * (rows // step) + ([rows % step] if rows % step else [])), (cols,), (60,), (60,))
    arr = da.map_blocks(block, chunks=chunks, dtype=np.uint8)
    s = kp.signals.LazyEBSD(arr)
    s.static_background = s0.static_background
    tmp = path.with_name(path.stem + ".tmp.h5")
    s.save(tmp, overwrite=True)
    tmp.replace(path)


def measure(path: Path, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), what], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{what} {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dir", type=Path, default=Path("/tmp/kcnn-scaling"))
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = p.parse_args(argv)
    a.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in a.sizes:
        path = a.dir / f"scan_{n}.h5"
        if not path.exists():
            t = time.perf_counter()
            write_scan(path, n)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s")
        read = measure(path, "read")
        cls = measure(path, "classify")
        if cls["map_size"] != cls["n"]:
            raise RuntimeError(f"The map has {cls['map_size']} points for {cls['n']} patterns")
        rows.append({"n": n, "read": read, "classify": cls})
        print(json.dumps(rows[-1]), flush=True)
    first = rows[0]["classify"]
    us0 = first["seconds"] / first["n"] * 1e6
    print()
    print("| patterns | classify (s) | patterns/s | us/pattern (ratio to smallest) | peak RSS classify (MB) | read (s) | classify / read |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        c, rd = r["classify"], r["read"]
        us = c["seconds"] / c["n"] * 1e6
        print(
            f"| {c['n']:,} | {c['seconds']:.1f} | {c['n'] / c['seconds']:,.0f} | {us:.0f} ({us / us0:.2f}) "
            f"| {c['peak_rss_mb']:,.0f} | {rd['seconds']:.1f} | {c['seconds'] / rd['seconds']:.1f} |"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
