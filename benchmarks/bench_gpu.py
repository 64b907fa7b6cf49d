"""Throughput on a GPU (CUDA provider) against the CPU provider, measured in
one run on the same 60x60 patterns (kikuchipy's 9 experimental Ni patterns
tiled): the model alone (preprocessed input, several batch sizes) and
``classify_structure()`` end to end (preprocessing on the CPU cores,
inference on the device).

Runs anywhere: without a usable CUDA device it says so and measures the CPU
provider only. Target: >= 20,000 patterns/s end to end on one H100.

    python benchmarks/bench_gpu.py [--n 200000] [--model-n 65536]
"""

import argparse
import json
import os
import time

import numpy as np

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def patterns(n):
    import kikuchipy as kp

    s0 = kp.data.nickel_ebsd_small()
    data = np.tile(s0.data.reshape(9, 60, 60), (int(np.ceil(n / 9)), 1, 1))[:n]
    s = kp.signals.EBSD(data.reshape(1, n, 60, 60))
    s.static_background = s0.static_background
    return s


def time_model(card, provider, x, batch_size, repeat=3):
    from kikuchipy_cnn.engine import InferenceSession, default_threads

    session = InferenceSession(card, [provider], default_threads())
    if session.provider != provider:
        raise RuntimeError(f"{provider} did not load (ONNX Runtime fell back to {session.provider})")
    session.run(x[:batch_size], batch_size=batch_size)  # warm-up (CUDA kernels, arena)
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        session.run(x, batch_size=batch_size)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="patterns for the end-to-end run")
    p.add_argument("--model-n", type=int, default=65_536, help="patterns for the model-alone runs")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    p.add_argument("--model", default=None)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args(argv)

    import onnxruntime as ort

    import kikuchipy_cnn
    from kikuchipy_cnn.engine import _cuda_device_count, default_batch_size
    from kikuchipy_cnn.preprocessing import preprocess

    card = kikuchipy_cnn.get_model(a.model)
    providers = [CPU]
    if CUDA in ort.get_available_providers() and _cuda_device_count() > 0:
        providers.insert(0, CUDA)
    else:
        print("No usable CUDA device (or onnxruntime-gpu without CUDA libraries): "
              "measuring the CPU provider only.")
    print(f"model {card.name} {card.version}; providers measured: {providers}; "
          f"CPU cores: {os.cpu_count()}; onnxruntime {ort.__version__}")

    s = patterns(max(a.model_n, 9))
    x, _ = preprocess(s.data.reshape(-1, 60, 60)[: a.model_n], card.preprocessing,
                      static_background=s.static_background)
    rows = []
    for prov in providers:
        for bs in a.batch_sizes:
            if prov == CPU and bs > 1024:
                continue
            rate = time_model(card, prov, x, bs)
            rows.append({"what": "model alone", "provider": prov, "batch_size": bs, "patterns_per_s": rate})
            print(json.dumps(rows[-1]), flush=True)

    s = patterns(a.n)
    n = int(np.prod(s.data.shape[:2]))
    for prov in providers:
        s.inav[:10, :1].classify_structure(model=card, providers=[prov], verbose=0,
                                           show_progressbar=False)  # warm-up
        t = time.perf_counter()
        xmap = s.classify_structure(model=card, providers=[prov], verbose=0, show_progressbar=False)
        dt = time.perf_counter() - t
        assert xmap.size == n
        rows.append({"what": "classify_structure", "provider": prov,
                     "batch_size": default_batch_size(prov), "n": n, "patterns_per_s": n / dt})
        print(json.dumps(rows[-1]), flush=True)

    print()
    print("| what | provider | batch | patterns/s | ratio to CPU |")
    print("|---|---|---:|---:|---:|")
    cpu = {r["what"]: max(q["patterns_per_s"] for q in rows if q["what"] == r["what"]
                          and q["provider"] == CPU) for r in rows}
    for r in rows:
        print(f"| {r['what']} | {r['provider'].replace('ExecutionProvider', '')} | {r['batch_size']} "
              f"| {r['patterns_per_s']:,.0f} | {r['patterns_per_s'] / cpu[r['what']]:.1f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
