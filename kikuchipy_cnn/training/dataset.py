"""Write a fixed dataset of degraded, preprocessed patterns to chunked HDF5.

Command line (resumable: an interrupted file is extended chunk by chunk; a
chunk's patterns depend only on the master patterns, the seed and the chunk
index, and a file is only extended with the settings and master patterns it was
started with)::

    python -m kikuchipy_cnn.training.dataset --split train --n 200000 --out train.h5 \
        --cache models/training-data/masters models/training-data/kinematical-fitted

Every master pattern of the split is used (dynamical and kinematical
together, ``--dynamical-fraction`` of the patterns of a class from dynamical
masters where the class has any); the space groups and joint classes
covered are printed at the end and stored as attributes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kikuchipy_cnn.symmetry import JOINT_CLASSES
from kikuchipy_cnn.training.kinematical import FITTED_OUT as KINEMATICAL
from kikuchipy_cnn.training.master_patterns import DEFAULT_CACHE

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
    out, split: str, n: int, cache, seed: int = 0, recipe=None, masters=None,
    dynamical_fraction: float | None = 0.5, log=print,
) -> dict:
    """Write (or complete) an HDF5 dataset with datasets ``x`` (n, 1, 64, 64)
    float32, ``y`` int64, ``valid``, ``structure_id``, ``geometry`` (JSON
    strings), ``quaternion``; attributes ``seed``, ``split``,
    ``joint_classes``, ``versions`` and ``masters``.

    Returns
    -------
    coverage
        ``{"n": ..., "space_groups": ..., "joint_classes": ...}`` of the
        finished file.
    """
    import h5py

    from kikuchipy_cnn.preprocessing import Preprocessing
    from kikuchipy_cnn.training.projection import MasterSet
    from kikuchipy_cnn.training.realism import make_batch

    recipe = recipe or Preprocessing()
    if masters is None:
        masters = MasterSet(cache, split, dynamical_fraction=dynamical_fraction)
    if len(masters) == 0:
        raise ValueError(f"No cached master patterns of split {split!r} in {cache}")
    size = recipe.size
    str_dt = h5py.string_dtype()
    # what a file's patterns depend on: written once, checked on resume
    settings = {
        "seed": seed, "n": n, "split": split, "recipe": json.dumps(recipe.to_dict()),
        "masters": json.dumps([m.get("id") for m in masters.meta]),
        "dynamical_fraction": json.dumps(masters.dynamical_fraction),
    }  # fmt: skip
    with h5py.File(out, "a") as f:
        if "x" not in f:
            f.create_dataset("x", (n, 1, size, size), "f4", chunks=(CHUNK, 1, size, size),
                             compression="gzip", compression_opts=1)  # fmt: skip
            f.create_dataset("y", (n,), "i8")
            f.create_dataset("valid", (n,), "?")
            f.create_dataset("quaternion", (n, 4), "f8")
            f.create_dataset("structure_id", (n,), str_dt)
            f.create_dataset("space_group", (n,), "i2")
            f.create_dataset("geometry", (n,), str_dt)
            f.attrs.update(
                n_done=0, joint_classes=json.dumps(JOINT_CLASSES),
                versions=json.dumps(_versions()), **settings,
            )  # fmt: skip
        other = [k for k, v in settings.items() if k not in f.attrs or f.attrs[k] != v]
        if other or "space_group" not in f:
            raise ValueError(
                f"Existing file {out} was written with other settings ({', '.join(other) or 'an older version'}): "
                "write to a new file, or run with the same settings and master patterns"
            )
        done = int(f.attrs["n_done"])
        sg_of = {str(m.get("id")): int(m.get("space_group", 0)) for m in masters.meta}
        for start in range(done, n, CHUNK):
            stop = min(start + CHUNK, n)
            rng = np.random.default_rng([seed, start // CHUNK])
            x, y, meta = make_batch(masters, stop - start, rng, recipe)
            f["x"][start:stop] = x
            f["y"][start:stop] = y
            f["valid"][start:stop] = meta["valid"]
            f["quaternion"][start:stop] = meta["quaternion"]
            f["structure_id"][start:stop] = [str(i) for i in meta["id"]]
            f["space_group"][start:stop] = [sg_of[str(i)] for i in meta["id"]]
            f["geometry"][start:stop] = [json.dumps(g) for g in meta["geometry"]]
            f.attrs["n_done"] = stop
            f.flush()
            if (start // CHUNK) % 40 == 0 or stop == n:
                log(f"{stop}/{n}")
        sg = f["space_group"][:]
        y = f["y"][:]
        coverage = {
            "n": int(n),
            "space_groups": int(np.unique(sg[sg > 0]).size),
            "joint_classes": int(np.unique(y).size),
        }
        f.attrs.update(coverage)
    return coverage


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", nargs="+", default=[str(DEFAULT_CACHE), str(KINEMATICAL)])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dynamical-fraction", type=float, default=0.5)
    args = p.parse_args(argv)
    t0 = time.time()
    cov = write_dataset(
        Path(args.out), args.split, args.n, args.cache, args.seed,
        dynamical_fraction=args.dynamical_fraction,
        log=lambda m: print(m, flush=True),
    )  # fmt: skip
    print(
        f"{args.out}: {cov['n']} patterns, {cov['joint_classes']} joint classes, "
        f"{cov['space_groups']} space groups ({time.time() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
