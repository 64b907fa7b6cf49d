"""Project cached master patterns onto random detectors at orientations
uniform in SO(3).

The projection is kikuchipy's own (the Numba kernels behind
:meth:`kikuchipy.signals.EBSDMasterPattern.get_patterns`), called directly so
that many orientations share one detector without dask overhead. Detector
geometry uses kikuchipy's Bruker PC convention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import math

import numba as nb
import numpy as np

from kikuchipy_cnn.symmetry import JOINT_CLASSES

__all__ = [
    "DetectorGeometry",
    "MasterSet",
    "detector_directions",
    "project",
    "project_many",
    "random_geometry",
    "random_quaternions",
]

#: Patterns are rendered at most this many pixels along the shorter side;
#: bigger detectors are rendered coarser with the same geometry, and the
#: realism parameters are scaled to the native pixel size (see realism.py)
MAX_RENDER = 96


@dataclass(frozen=True)
class DetectorGeometry:
    """One detector: shape (rows, cols), Bruker PC, tilts in degrees."""

    shape: tuple
    pcx: float
    pcy: float
    pcz: float
    sample_tilt: float
    tilt: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def render_shape(self) -> tuple:
        """Shape the pattern is rendered at (at most MAX_RENDER on the
        shorter side)."""
        rows, cols = self.shape
        f = max(1.0, min(rows, cols) / MAX_RENDER)
        return (max(2, int(round(rows / f))), max(2, int(round(cols / f))))

    @property
    def binning(self) -> float:
        """Native pixels per rendered pixel along one axis."""
        return self.shape[0] / self.render_shape[0]


def random_geometry(rng: np.random.Generator) -> DetectorGeometry:
    """Draw a random detector: 60-240 px per side (rectangular in half of
    the draws), PCx 0.35-0.65, PCy 0.2-0.6, PCz 0.45-0.8, sample tilt 65-75
    degrees, detector tilt 0-10 degrees."""
    rows = int(rng.integers(60, 241))
    if rng.random() < 0.5:
        cols = rows
    else:
        cols = int(np.clip(round(rows * rng.choice([4 / 3, 5 / 4, 3 / 2, 3 / 4])), 60, 320))
    return DetectorGeometry(
        shape=(rows, cols),
        pcx=float(rng.uniform(0.35, 0.65)),
        pcy=float(rng.uniform(0.2, 0.6)),
        pcz=float(rng.uniform(0.45, 0.8)),
        sample_tilt=float(rng.uniform(65, 75)),
        tilt=float(rng.uniform(0, 10)),
    )


def detector_directions(geometry: DetectorGeometry, shape: tuple | None = None) -> np.ndarray:
    """Unit vectors (rows * cols, 3) from the source point to every detector
    pixel, in the sample frame (kikuchipy's convention)."""
    from kikuchipy.detectors import EBSDDetector
    from kikuchipy.signals.util._master_pattern import (
        _get_direction_cosines_from_detector,
    )

    shape = shape or geometry.render_shape
    det = EBSDDetector(
        shape=tuple(shape),
        pc=(geometry.pcx, geometry.pcy, geometry.pcz),
        convention="bruker",
        tilt=geometry.tilt,
        sample_tilt=geometry.sample_tilt,
    )
    return np.ascontiguousarray(_get_direction_cosines_from_detector(det))


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit quaternions (n, 4), (a, b, c, d) = (w, x, y, z), uniform in SO(3)
    with a >= 0."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1, 1)
    return q


def project(
    master: np.ndarray, quaternions: np.ndarray, directions: np.ndarray, shape: tuple
) -> np.ndarray:
    """Project one square Lambert master pattern (2, n, n) (north first) at
    the given orientations (kikuchipy's convention: crystal to sample), to
    patterns of ``shape``, float32."""
    from kikuchipy.signals.util._master_pattern import (
        _project_patterns_from_master_pattern_with_fixed_pc,
    )

    upper = np.ascontiguousarray(master[0], dtype=np.float64)
    lower = np.ascontiguousarray(master[1], dtype=np.float64)
    npx = upper.shape[1]
    npy = upper.shape[0]
    out = _project_patterns_from_master_pattern_with_fixed_pc(
        rotations=np.ascontiguousarray(quaternions, dtype=np.float64),
        direction_cosines=directions,
        master_upper=upper,
        master_lower=lower,
        npx=int(npx),
        npy=int(npy),
        scale=float((npx - 1) / 2),
        rescale=False,
        out_min=0.0,
        out_max=1.0,
        dtype_out=np.float32,
    )
    return out.reshape((-1, *shape))


_SQRT_PI = math.sqrt(math.pi)
_SQRT_PI_HALF = math.sqrt(math.pi / 2)
_SQRT_PI_OVER_2 = _SQRT_PI / 2
_TWO_OVER_SQRT_PI = 2 / _SQRT_PI

#: atan(t) = t * P(t^2) on [-1, 1], P a degree-13 polynomial (Chebyshev
#: least-squares fit; max error 3.6e-12 rad, i.e. 1e-10 master pixels)
_ATAN_COEF = np.array([
    0.999999999994901, -0.33333333222387096, 0.19999994019935313,
    -0.14285573005602914, 0.11109273545396384, -0.09076058059911164,
    0.07612031313549902, -0.06361939865782573, 0.050410823072616406,
    -0.03525078858150214, 0.019957520128830626, -0.0082727994784662,
    0.002179454933006922, -0.00026999392756478003,
])  # fmt: skip


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _atan_unit(t):  # pragma: no cover
    """atan(t) for |t| <= 1 (a polynomial, ~20% faster than libm here)."""
    u = t * t
    c = _ATAN_COEF
    r = c[13]
    for i in range(12, -1, -1):
        r = r * u + c[i]
    return t * r


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _project_many_kernel(quats, master_index, stack, dc, out):  # pragma: no cover
    """Fused version of kikuchipy's
    ``_project_patterns_from_master_pattern_with_fixed_pc`` (rotate the
    direction cosines, square Lambert projection, bilinear interpolation in
    the hemisphere the rotated vector points to), one master per
    orientation, in two passes (vectorised geometry, then gathers). Same
    arithmetic as kikuchipy,
    except that the rotated unit vectors are not renormalised and atan is a
    polynomial (3.6e-12 rad): patterns agree to ~1 float32 ulp."""
    npy = stack.shape[2]
    npx = stack.shape[3]
    scale = (npx - 1) / 2
    f = scale / _SQRT_PI_HALF
    m = dc.shape[0]
    flat = stack.reshape(-1)
    dcx = np.ascontiguousarray(dc[:, 0])
    dcy = np.ascontiguousarray(dc[:, 1])
    dcz = np.ascontiguousarray(dc[:, 2])
    wi = np.empty(m)
    wj = np.empty(m)
    i00 = np.empty(m, dtype=np.int64)
    di_ = np.empty(m, dtype=np.int64)
    dj_ = np.empty(m, dtype=np.int64)
    for k in range(quats.shape[0]):
        a = quats[k, 0]
        b = quats[k, 1]
        c = quats[k, 2]
        d = quats[k, 3]
        aa = a * a
        bb = b * b
        cc = c * c
        dd = d * d
        ac = a * c
        ab = a * b
        ad = a * d
        bc = b * c
        bd = b * d
        cd = c * d
        base_u = master_index[k] * 2 * npy * npx
        base_l = base_u + npy * npx
        # pass 1 (branch-free, vectorised): rotation, square Lambert
        # coordinates, interpolation indices and weights
        for p in range(m):
            x = dcx[p]
            y = dcy[p]
            z = dcz[p]
            rx = (aa + bb - cc - dd) * x + 2 * ((ac + bd) * z + (bc - ad) * y)
            ry = (aa - bb + cc - dd) * y + 2 * ((ad + bc) * x + (cd - ab) * z)
            rz = (aa - bb - cc + dd) * z + 2 * ((ab + cd) * y + (bd - ac) * x)
            # unit quaternion and unit direction: already unit length
            sqrt_z = math.sqrt(max(2 * (1 - abs(rz)), 0.0))
            xbig = abs(ry) <= abs(rx)
            num = ry if xbig else rx
            den = rx if xbig else ry
            sgn = 1.0 if den > 0 else -1.0
            den = den if den != 0 else 1.0  # then num = 0 and sqrt_z = 0
            side = sgn * sqrt_z * _SQRT_PI_OVER_2
            ang = sgn * sqrt_z * _TWO_OVER_SQRT_PI * _atan_unit(num / den)
            lx = side if xbig else ang
            ly = ang if xbig else side
            i_this = f * ly
            j_this = f * lx
            nii = np.int32(i_this + scale)
            nij = np.int32(j_this + scale)
            niip = nii + 1
            nijp = nij + 1
            niip = nii if niip >= npx else niip
            nijp = nij if nijp >= npy else nijp
            nii = niip if nii < 0 else nii
            nij = nijp if nij < 0 else nij
            wi[p] = i_this - nii + scale
            wj[p] = j_this - nij + scale
            base = base_u if rz >= 0 else base_l
            i00[p] = base + nii * npx + nij
            di_[p] = (niip - nii) * npx
            dj_[p] = nijp - nij
        # pass 2: bilinear interpolation (gathers)
        for p in range(m):
            r0 = i00[p]
            r1 = r0 + di_[p]
            e = dj_[p]
            di = wi[p]
            dj = wj[p]
            dim = 1 - di
            djm = 1 - dj
            out[k, p] = (
                flat[r0] * dim * djm
                + flat[r1] * di * djm
                + flat[r0 + e] * dim * dj
                + flat[r1 + e] * di * dj
            )


def project_many(
    stack: np.ndarray,
    master_index: np.ndarray,
    quaternions: np.ndarray,
    directions: np.ndarray,
    shape: tuple,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Project many orientations, each from its own master of a stack of
    equally sized square Lambert master patterns (n_masters, 2, n, n), onto
    one detector: the same result as :func:`project` per pattern (float32,
    ``(len(quaternions), *shape)``), in one fused Numba loop."""
    q = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    # the kernel relies on unit quaternions and unit directions (kikuchipy
    # normalises every rotated vector instead: the same to rounding)
    q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True))
    directions = np.asarray(directions, dtype=np.float64)
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    mi = np.ascontiguousarray(master_index, dtype=np.int64).reshape(-1)
    if out is None:
        out = np.empty((len(q), int(np.prod(shape))), dtype=np.float32)
    _project_many_kernel(q, mi, stack, np.ascontiguousarray(directions, dtype=np.float64), out.reshape(len(q), -1))
    return out.reshape((-1, *shape))


class MasterSet:
    """Cached master patterns of one split, all in memory.

    Parameters
    ----------
    directory
        Cache directory (the one written by
        ``python -m kikuchipy_cnn.training.master_patterns``).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    limit
        Load at most this many (for tests).

    Attributes
    ----------
    masters
        List of float64 arrays (2, n, n).
    labels
        Joint class index per master, int64.
    meta
        Metadata dictionary per master.
    """

    def __init__(
        self, directory, split: str = "train", limit: int | None = None,
        dynamical_fraction: float | None = None,
    ):
        from kikuchipy_cnn.training.master_patterns import load_master

        dirs = [directory] if isinstance(directory, (str, Path)) else list(directory)
        files = []
        for d in dirs:
            found = sorted(Path(d, split).glob("*.npz"))
            files += [f for f in found if not f.name.endswith(".tmp.npz")][:limit]
        self.masters, self.meta = [], []
        for f in files:
            data, meta = load_master(f)
            # normalise each master to mean 1: realism sets the contrast
            data = data / max(float(data.mean()), 1e-12)
            self.masters.append(np.ascontiguousarray(data, dtype=np.float64))
            self.meta.append(meta)
        self.labels = np.array(
            [JOINT_CLASSES.index(m["joint_class"]) for m in self.meta], dtype=np.int64
        )
        self.split = split
        self.dynamical_fraction = dynamical_fraction

    @property
    def dynamical(self) -> np.ndarray:
        """Whether each master is dynamical (de-ebsd) rather than
        kinematical."""
        return np.array([m.get("source", "dynamical") == "dynamical" for m in self.meta], bool)

    @classmethod
    def from_arrays(cls, masters, labels, meta=None, split="train") -> "MasterSet":
        """Build a set from arrays (2, n, n) and joint class indices."""
        obj = cls.__new__(cls)
        obj.masters = [np.ascontiguousarray(m, dtype=np.float64) for m in masters]
        obj.labels = np.asarray(labels, dtype=np.int64)
        obj.meta = meta or [{"id": f"m{i}"} for i in range(len(obj.masters))]
        obj.split = split
        obj.dynamical_fraction = None
        return obj

    def stacks(self) -> dict:
        """Masters grouped by shape for :func:`project_many`: ``{shape:
        (stack (k, 2, n, n) float64, position in the stack of every master
        (-1 if of another shape))}``. Built once; afterwards ``masters``
        holds views into the stacks (no extra memory)."""
        cached = getattr(self, "_stacks", None)
        if cached is not None and cached[0] == len(self.masters):
            return cached[1]
        shapes = sorted({m.shape for m in self.masters})
        stacks = {}
        for shape in shapes:
            sel = [i for i, m in enumerate(self.masters) if m.shape == shape]
            stack = np.ascontiguousarray(np.stack([self.masters[i] for i in sel]), dtype=np.float64)
            pos = np.full(len(self.masters), -1, dtype=np.int64)
            pos[sel] = np.arange(len(sel))
            for j, i in enumerate(sel):
                self.masters[i] = stack[j]
            stacks[shape] = (stack, pos)
        self._stacks = (len(self.masters), stacks)
        return stacks

    def __len__(self) -> int:
        return len(self.masters)

    def class_counts(self) -> dict:
        """Number of masters per joint class."""
        return {jc: int((self.labels == i).sum()) for i, jc in enumerate(JOINT_CLASSES)}

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw master indices with every present class equally likely;
        within a class that has both sources, a dynamical master with
        probability ``dynamical_fraction`` (if set)."""
        present = np.unique(self.labels)
        classes = rng.choice(present, size=n)
        idx = np.empty(n, dtype=np.int64)
        dyn = self.dynamical if self.dynamical_fraction is not None else None
        for c in present:
            sel = np.flatnonzero(classes == c)
            pool = np.flatnonzero(self.labels == c)
            if dyn is not None and dyn[pool].any() and not dyn[pool].all():
                use_dyn = rng.random(sel.size) < self.dynamical_fraction
                for flag, part in ((True, sel[use_dyn]), (False, sel[~use_dyn])):
                    sub = pool[dyn[pool] == flag]
                    idx[part] = rng.choice(sub, size=part.size)
            else:
                idx[sel] = rng.choice(pool, size=sel.size)
        return idx
