"""Classification vs conventional indexing, measured in one run on the same
patterns: patterns/s and peak memory (RSS) of

- ``s.classify_structure()`` (this package, CPU provider unless a GPU is usable),
- ``s.hough_indexing()`` (PyEBSDIndex through kikuchipy, Ni phase given),
- ``s.dictionary_indexing()`` (kikuchipy, dictionary from the EMsoft Ni master
  pattern; it must know the phase, the classifier does not).

kikuchipy's 9 experimental 60x60 Ni patterns are tiled to N patterns (default
10,000; background removed for the indexers, raw for the classifier). Each method
runs in its own process so that peak RSS is its own.

    python benchmarks/bench_vs_indexing.py [--n 10000] [--dictionary-n 2000]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
import kikuchipy as kp
method, n, dict_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s0 = kp.data.nickel_ebsd_small()
reps = int(np.ceil(n / 9))
data = np.tile(s0.data.reshape(9, 60, 60), (reps, 1, 1))[:n]
rows = int(np.sqrt(n)); data = data[: rows * (n // rows)].reshape(rows, n // rows, 60, 60)
s = kp.signals.EBSD(data)
s.static_background = s0.static_background
n = data.shape[0] * data.shape[1]
if method == "classify":
    import kikuchipy_cnn
    s.inav[:3, :1].classify_structure(verbose=0, show_progressbar=False)  # warm-up
    t = time.perf_counter()
    xmap = s.classify_structure(verbose=0, show_progressbar=False)
    dt = time.perf_counter() - t
    extra = {"fraction cF m-3m": float((kikuchipy_cnn.labels(xmap)["joint"] == "cF m-3m").mean())}
else:
    from orix.crystal_map import PhaseList
    s.remove_static_background(show_progressbar=False)
    s.remove_dynamic_background(show_progressbar=False)
    det = kp.detectors.EBSDDetector(shape=(60, 60), pc=(0.421, 0.7794, 0.5049), sample_tilt=70)
    if method == "hough":
        pl = PhaseList(names="ni", space_groups=225)
        indexer = det.get_indexer(pl, nBands=6)
        s.inav[:3, :1].hough_indexing(pl, indexer, verbose=0)  # warm-up: numba compilation
        t = time.perf_counter()
        xmap = s.hough_indexing(pl, indexer, verbose=0)
        dt = time.perf_counter() - t
    else:
        from orix.sampling import get_sample_fundamental
        mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert")
        # resolution giving about dict_n orientations
        res = 2.0
        while get_sample_fundamental(resolution=res, point_group=mp.phase.point_group).size > dict_n:
            res += 0.5
        rot = get_sample_fundamental(resolution=res, point_group=mp.phase.point_group)
        t = time.perf_counter()
        sim = mp.get_patterns(rot, det, energy=20, compute=False)
        xmap = s.dictionary_indexing(sim, keep_n=1)
        dt = time.perf_counter() - t
    extra = {}
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"method": method, "n": n, "seconds": dt, "patterns_per_s": n / dt, "peak_rss_mb": rss, **extra}))
"""


def run(method, n, dict_n):
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(n), str(dict_n)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dictionary-n", type=int, default=2_000,
                   help="approximate number of dictionary orientations")
    p.add_argument("--skip", default="", help="comma-separated methods to skip")
    args = p.parse_args()
    results = {}
    for method in ("classify", "hough", "dictionary"):
        if method in args.skip.split(","):
            continue
        results[method] = r = run(method, args.n, args.dictionary_n)
        print(f"{method:>10}: {r['n']} patterns, {r['patterns_per_s']:9.1f} patterns/s, "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    c = results.get("classify")
    if c:
        for other in ("hough", "dictionary"):
            if other in results:
                o = results[other]
                print(f"classify / {other}: speed x{c['patterns_per_s'] / o['patterns_per_s']:.2f}, "
                      f"peak RSS x{c['peak_rss_mb'] / o['peak_rss_mb']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
