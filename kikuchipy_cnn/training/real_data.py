"""Load the real validation patterns of ``../shared/data`` listed in
``cases.tsv``, with their labels. For validation only, never training."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Case", "default_shared_data", "load_cases", "load_pattern_file"]


@dataclass
class Case:
    """One file of real patterns and its labels."""

    path: Path
    signal: object  # kikuchipy EBSD
    phase: str
    crystal_system: str
    bravais_lattice: str
    laue_class: str
    kind: str

    @property
    def joint_class(self) -> str:
        return f"{self.bravais_lattice} {self.laue_class}"


def default_shared_data() -> Path:
    """``../shared/data`` beside the repository root."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def load_pattern_file(path: str | Path, invert: bool = False):
    """Load one pattern file (kikuchipy format, TIFF or PNG) as an EBSD
    signal; ``invert`` for images stored WhiteIsZero."""
    import kikuchipy as kp

    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        return kp.load(path)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
    else:
        from PIL import Image

        im = Image.open(path)
        a = np.asarray(im) if im.mode.startswith("I") else np.asarray(im.convert("L"))
    if a.ndim == 3:
        a = a[..., :3].mean(-1).astype(np.uint8)
    if invert:
        a = np.iinfo(a.dtype).max - a
    return kp.signals.EBSD(a)


def load_cases(data_dir: str | Path | None = None) -> list[Case]:
    """Load every file matched by ``cases.tsv``.

    Parameters
    ----------
    data_dir
        Folder with ``cases.tsv``; by default ``../shared/data``.

    Returns
    -------
    cases
        One :class:`Case` per file, in ``cases.tsv`` order then file name
        order.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_shared_data()
    table = data_dir / "cases.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found: the shared validation data is absent")
    cases = []
    with open(table, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            files = sorted(data_dir.glob(row["glob"]))
            if not files:
                raise FileNotFoundError(f"No file matches {row['glob']!r} in {data_dir}")
            for p in files:
                cases.append(
                    Case(
                        path=p,
                        signal=load_pattern_file(p, invert=row["invert"] == "1"),
                        phase=row["phase"],
                        crystal_system=row["system"],
                        bravais_lattice=row["bravais"],
                        laue_class=row["laue"],
                        kind=row["kind"],
                    )
                )
    return cases
