"""Cost of the pattern check against classification, in one run on the same
patterns: kikuchipy's 9 experimental 60x60 Ni patterns tiled to N (default
3,000), raw with their static background.

Prints patterns/s of ``check_patterns`` alone, of ``classify_structure()``
with the check (default) and without (``check=False``), and the ratio of the
classification speeds.

    python benchmarks/bench_pattern_check.py [--n 3000]
"""

import argparse
import time

import numpy as np


def main():
    import kikuchipy as kp

    import kikuchipy_cnn  # noqa: F401
    from kikuchipy_cnn.pattern_check import check_patterns

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    n = p.parse_args().n
    reps = p.parse_args().repeats
    s0 = kp.data.nickel_ebsd_small()
    data = np.tile(s0.data.reshape(9, 60, 60), (int(np.ceil(n / 9)), 1, 1))[:n]
    s = kp.signals.EBSD(data)
    s.static_background = s0.static_background
    s.inav[:9].classify_structure(verbose=0, show_progressbar=False)  # warm-up

    def best(f):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return n / min(times)

    v_check = best(lambda: check_patterns(data, s0.static_background))
    v_off = best(lambda: s.classify_structure(verbose=0, show_progressbar=False, check=False))
    v_on = best(lambda: s.classify_structure(verbose=0, show_progressbar=False))
    print(f"check_patterns alone:                 {v_check:8.0f} patterns/s")
    print(f"classify_structure(check=False):      {v_off:8.0f} patterns/s")
    print(f"classify_structure() (check, default): {v_on:8.0f} patterns/s")
    print(f"speed with check / without:           {v_on / v_off:8.2f}")


if __name__ == "__main__":
    main()
