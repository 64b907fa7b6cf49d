"""Write a fixed dataset of degraded, preprocessed patterns to chunked HDF5.

Command line (resumable: an interrupted file is extended chunk by chunk; a
chunk's patterns depend only on the seed and the chunk index)::

    python -m kikuchipy_cnn.training.dataset --split val --n 20000 --out val.h5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE

from kikuchipy_cnn.symmetry import JOINT_CLASSES

__all__ = ["write_dataset"]

CHUNK = 256


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("kikuchipy-cnn", "kikuchipy", "de-ebsd", "orix", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "?"
    return out


def write_dataset(
    out, split: str, n: int, cache, seed: int = 0, recipe=None, masters=None
) -> None:
    """Write (or complete) an HDF5 dataset with datasets ``x`` (n, 1, 64, 64)
    float32, ``y`` int64, ``valid``, ``structure_id``, ``geometry`` (JSON
    strings), ``quaternion``; attributes ``seed``, ``split``,
    ``joint_classes``, ``versions`` and ``masters``."""
    import h5py

    from kikuchipy_cnn.preprocessing import Preprocessing
    from kikuchipy_cnn.training.projection import MasterSet
    from kikuchipy_cnn.training.realism import make_batch

    recipe = recipe or Preprocessing()
    masters = masters if masters is not None else MasterSet(cache, split)
    if len(masters) == 0:
        raise ValueError(f"No cached master patterns of split {split!r} in {cache}")
    size = recipe.size
    str_dt = h5py.string_dtype()
    with h5py.File(out, "a") as f:
        if "x" not in f:
            f.create_dataset("x", (n, 1, size, size), "f4", chunks=(CHUNK, 1, size, size),
                             compression="gzip", compression_opts=1)  # fmt: skip
            f.create_dataset("y", (n,), "i8")
            f.create_dataset("valid", (n,), "?")
            f.create_dataset("quaternion", (n, 4), "f8")
            f.create_dataset("structure_id", (n,), str_dt)
            f.create_dataset("geometry", (n,), str_dt)
            f.attrs.update(
                n_done=0, seed=seed, split=split, n=n,
                joint_classes=json.dumps(JOINT_CLASSES),
                versions=json.dumps(_versions()),
                recipe=json.dumps(recipe.to_dict()),
                masters=json.dumps([m.get("id") for m in masters.meta]),
            )  # fmt: skip
        if f.attrs["seed"] != seed or f.attrs["n"] != n or f.attrs["split"] != split:
            raise ValueError("Existing file was written with other settings")
        done = int(f.attrs["n_done"])
        for start in range(done, n, CHUNK):
            stop = min(start + CHUNK, n)
            rng = np.random.default_rng([seed, start // CHUNK])
            x, y, meta = make_batch(masters, stop - start, rng, recipe)
            f["x"][start:stop] = x
            f["y"][start:stop] = y
            f["valid"][start:stop] = meta["valid"]
            f["quaternion"][start:stop] = meta["quaternion"]
            f["structure_id"][start:stop] = [str(i) for i in meta["id"]]
            f["geometry"][start:stop] = [json.dumps(g) for g in meta["geometry"]]
            f.attrs["n_done"] = stop
            f.flush()
            print(f"{stop}/{n}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write_dataset(Path(args.out), args.split, args.n, args.cache, args.seed)


if __name__ == "__main__":
    main()
