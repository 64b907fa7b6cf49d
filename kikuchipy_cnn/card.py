"""Model cards: load, validate, check the weights' sha256 and the test tensor.

The format is described in ``docs/card_schema.md``. A card is a YAML file
beside the model's ONNX weights.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from kikuchipy_cnn.preprocessing import Preprocessing
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info

__all__ = ["ModelCard", "ModelCardError", "WeightsError"]

_REQUIRED = (
    "format_version",
    "name",
    "version",
    "description",
    "license",
    "weights",
    "input",
    "preprocessing",
    "outputs",
    "classes",
    "test",
    "limitations",
    "min_score",
)


class ModelCardError(ValueError):
    """A model card is invalid or does not match its weights."""


class WeightsError(ValueError):
    """A model's weights file is missing, corrupted or swapped."""


def sha256_of(path: str | Path) -> str:
    """Return the hex sha256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelCard:
    """A model card: what a model expects, returns, and how good it is.

    Create it with :meth:`from_file`.
    """

    path: Path
    data: dict = field(repr=False)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelCard":
        """Load and validate a card from a YAML file.

        Parameters
        ----------
        path
            Path to ``card.yaml``.

        Returns
        -------
        card
            The validated card.
        """
        path = Path(path).resolve()
        if not path.is_file():
            raise ModelCardError(f"Model card {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ModelCardError(f"Model card {path} is not valid YAML: {e}") from e
        card = cls(path=path, data=data if isinstance(data, dict) else {})
        card.validate()
        return card

    # ---------------------------------------------------------------- fields
    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def weights_path(self) -> Path:
        return self.directory / self.data["weights"]["file"]

    @property
    def sha256(self) -> str:
        return str(self.data["weights"]["sha256"]).lower()

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c["label"] for c in self.data["classes"])

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(c["colour"] for c in self.data["classes"])

    @property
    def input_kind(self) -> str:
        """``"pixels"`` (preprocessed patterns) or ``"bands"`` (features of the
        bands, :func:`kikuchipy_cnn.features.band_features`)."""
        return str(self.data["input"].get("kind", "pixels"))

    @property
    def preprocessing(self) -> Preprocessing:
        """Pixel preprocessing recipe (pixel models only)."""
        if self.input_kind != "pixels":
            raise ModelCardError(f"Model {self.name!r} reads band features, not preprocessed pixels")
        return Preprocessing.from_dict(self.data["preprocessing"])

    @property
    def band_settings(self) -> dict:
        """Band extraction settings of a band model: ``n_bands`` and the
        feature version."""
        if self.input_kind != "bands":
            raise ModelCardError(f"Model {self.name!r} reads pixels, not band features")
        return {"n_bands": int(self.data["preprocessing"]["n_bands"]),
                "feature_version": str(self.data["input"]["feature_version"])}

    @property
    def input_name(self) -> str:
        return self.data["input"]["name"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.data["input"]["shape"])

    @property
    def outputs(self) -> dict[str, str]:
        return dict(self.data["outputs"])

    @property
    def min_score(self) -> float:
        return float(self.data["min_score"])

    @property
    def has_pooling(self) -> bool:
        """Whether the card has a ``pooling:`` entry (settings of
        ``classify_structure(pool="phases")`` fitted for the model); without
        one, the module defaults fitted for ``kcnn-resnet-s`` are used."""
        return bool(self.data.get("pooling"))

    @property
    def pool_tempering(self) -> float:
        """Tempering β with which ``classify_structure(pool="phases")`` pools
        the probabilities of a phase's patterns
        (:func:`~kikuchipy_cnn.phases.pool_probabilities`): the card's optional
        ``pooling: {tempering: β}``, fitted for the model on validation
        structures, else :data:`kikuchipy_cnn.phases.POOL_TEMPERING`."""
        from kikuchipy_cnn.phases import POOL_TEMPERING

        pooling = self.data.get("pooling") or {}
        return float(pooling.get("tempering", POOL_TEMPERING))

    @property
    def pool_split_r2(self) -> tuple[float, float]:
        """``(a, b)`` of the bar ``a + b / n`` that a split of ``n`` grains
        into two phases must pass in ``classify_structure(pool="phases")``
        (:func:`~kikuchipy_cnn.phases.discover_phases`): the card's optional
        ``pooling: {split_r2: [a, b]}``, calibrated for the model on
        single-phase scans, else :data:`kikuchipy_cnn.phases.SPLIT_R2`."""
        from kikuchipy_cnn.phases import SPLIT_R2

        pooling = self.data.get("pooling") or {}
        a, b = pooling.get("split_r2", SPLIT_R2)
        return float(a), float(b)

    @property
    def pool_signatures(self) -> tuple[str, ...]:
        """The grain signatures by which ``classify_structure(pool="phases")``
        tells phases apart (:func:`~kikuchipy_cnn.phases.discover_phases`,
        names of :data:`kikuchipy_cnn.phases.SIGNATURES`): the card's optional
        ``pooling: {signatures: [...]}``, chosen for the model with its split
        bar, else :data:`kikuchipy_cnn.phases.DEFAULT_SIGNATURES`."""
        from kikuchipy_cnn.phases import DEFAULT_SIGNATURES

        pooling = self.data.get("pooling") or {}
        return tuple(str(x) for x in pooling.get("signatures", DEFAULT_SIGNATURES))

    @property
    def pooled_model(self) -> "Path | None":
        """Path of the card's pooled-evidence model (``pooling: {model: file,
        sha256: ..., version: ...}``; band models only), or None. With one,
        ``classify_structure(pool="phases")`` gives each discovered phase the
        class this model reads from the pooled band features of all its
        patterns (:func:`~kikuchipy_cnn.phases.pool_evidence`) instead of
        pooling the per-pattern probabilities."""
        pooling = self.data.get("pooling") or {}
        return self.path.parent / pooling["model"] if "model" in pooling else None

    @property
    def pooled_sha256(self) -> str | None:
        """sha256 of :attr:`pooled_model` (checked when it is loaded)."""
        sha = (self.data.get("pooling") or {}).get("sha256")
        return None if sha is None else str(sha).lower()

    @property
    def unfitted_pooling(self) -> tuple[str, ...]:
        """The ``pooling:`` settings that ``classify_structure(pool="phases")``
        takes from the defaults fitted for ``kcnn-resnet-s`` because the card
        lacks them: ``"tempering"`` (unless given, or a pooled model makes it
        unused) and ``"split_r2"`` (the phase split bar)."""
        pooling = self.data.get("pooling") or {}
        return tuple(k for k in ("tempering", "split_r2")
                     if k not in pooling and not (k == "tempering" and "model" in pooling))

    @property
    def pooling_fitted(self) -> bool:
        """Whether every ``pooling:`` setting ``pool="phases"`` uses was fitted
        for this model (:attr:`unfitted_pooling` is empty); otherwise
        ``classify_structure(pool="phases")`` warns."""
        return not self.unfitted_pooling

    def verify_pooled_model(self):
        """Raise :class:`WeightsError` unless the pooled model (if any) exists,
        has the card's sha256 and gives one probability per class of the
        card, so a bad file is found before a scan is classified."""
        path = self.pooled_model
        if path is None:
            return
        digest = self._verify_file("Pooled model", path, self.pooled_sha256, ", or pass pool='none'")
        from kikuchipy_cnn.engine import auxiliary_session

        width = auxiliary_session(path, digest).get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.classes):
            raise WeightsError(
                f"Pooled model {path} of model {self.name!r} gives {width} outputs per phase, but the "
                f"card has {len(self.classes)} classes"
            )

    @property
    def saliency_methods(self) -> tuple[str, ...]:
        return tuple(self.data.get("saliency", ["occlusion"]))

    # ------------------------------------------------------------ validation
    def validate(self):
        """Check that the card has every field, in the right form."""
        d = self.data
        where = f"Model card {self.path}"
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ModelCardError(f"{where} lacks the fields {missing}")
        if d["format_version"] != 1:
            raise ModelCardError(
                f"{where} has format_version {d['format_version']!r}; this version "
                "of kikuchipy-cnn reads format 1: upgrade kikuchipy-cnn"
            )
        for key in ("file", "sha256"):
            if key not in (d["weights"] or {}):
                raise ModelCardError(f"{where}: weights lacks {key!r}")
        for key in ("name", "shape", "dtype"):
            if key not in (d["input"] or {}):
                raise ModelCardError(f"{where}: input lacks {key!r}")
        shape = self.input_shape
        kind = self.input_kind
        if kind == "pixels":
            p = self.preprocessing
            if len(shape) != 4 or shape[1] != 1 or shape[2:] != (p.size, p.size):
                raise ModelCardError(
                    f"{where}: input shape {list(shape)} must be [-1, 1, {p.size}, "
                    f"{p.size}] for preprocessing size {p.size}"
                )
        elif kind == "bands":
            from kikuchipy_cnn.features import FEATURE_VERSION, feature_names

            version = d["input"].get("feature_version")
            if version != FEATURE_VERSION:
                raise ModelCardError(
                    f"{where}: the model reads band features {version!r}, but this version of "
                    f"kikuchipy-cnn computes {FEATURE_VERSION!r}: install the kikuchipy-cnn "
                    "version the model was trained with, or a model for this one"
                )
            n = len(feature_names())
            if list(shape) != [-1, n]:
                raise ModelCardError(f"{where}: input shape {list(shape)} must be [-1, {n}] for {version}")
            if "n_bands" not in (d["preprocessing"] or {}):
                raise ModelCardError(f"{where}: preprocessing of a band model lacks 'n_bands'")
        else:
            raise ModelCardError(f"{where}: input kind {kind!r} is not 'pixels' or 'bands'")
        if "probabilities" not in d["outputs"]:
            raise ModelCardError(f"{where}: outputs must name 'probabilities'")
        labels = []
        for c in d["classes"]:
            for key in ("label", "colour"):
                if key not in c:
                    raise ModelCardError(f"{where}: class {c} lacks {key!r}")
            if c["label"] not in JOINT_CLASSES:
                raise ModelCardError(
                    f"{where}: class label {c['label']!r} is not a joint class "
                    f"'<Bravais lattice> <Laue class>'; known are {list(JOINT_CLASSES)}"
                )
            info = joint_class_info(c["label"])
            for key in ("crystal_system", "bravais_lattice", "laue_class"):
                if key in c and c[key] != info[key]:
                    raise ModelCardError(
                        f"{where}: class {c['label']!r} has {key} {c[key]!r}, "
                        f"but it is {info[key]!r}"
                    )
            labels.append(c["label"])
        if len(set(labels)) != len(labels) or not labels:
            raise ModelCardError(f"{where}: class labels must be unique and non-empty")
        for key in ("input", "output", "tolerance"):
            if key not in (d["test"] or {}):
                raise ModelCardError(f"{where}: test lacks {key!r}")
        if not 0 <= float(d["min_score"]) <= 1:
            raise ModelCardError(f"{where}: min_score must be in [0, 1]")
        pooling = d.get("pooling")
        if pooling is not None:
            self._validate_pooling(pooling, where)

    def _validate_pooling(self, pooling, where):
        """The optional ``pooling`` mapping: ``tempering`` (a number >= 0)
        and/or ``split_r2`` (two numbers), ``signatures`` (names of
        :data:`kikuchipy_cnn.phases.SIGNATURES`; ``d_spacings`` for band
        models only), and for band models a pooled
        model (``model``: ONNX file, ``sha256``, ``version``:
        :data:`kikuchipy_cnn.features.POOLED_VERSION`); nothing else."""
        from kikuchipy_cnn.features import POOLED_VERSION
        from kikuchipy_cnn.phases import SIGNATURES

        keys = {"tempering", "split_r2", "signatures", "model", "sha256", "version"}
        bad = not isinstance(pooling, dict) or not pooling or set(pooling) - keys
        try:
            if not bad and "tempering" in pooling:
                beta = float(pooling["tempering"])
                bad = not (np.isfinite(beta) and beta >= 0)
            if not bad and "split_r2" in pooling:
                ab = np.asarray(pooling["split_r2"], dtype=np.float64)
                bad = ab.shape != (2,) or not np.isfinite(ab).all()
            if not bad and "signatures" in pooling:
                sig = pooling["signatures"]
                bad = (not isinstance(sig, list) or not sig or len(set(sig)) != len(sig)
                       or not set(sig) <= set(SIGNATURES))
            if not bad and {"model", "sha256", "version"} & set(pooling):
                bad = not (isinstance(pooling.get("model"), str)
                           and isinstance(pooling.get("sha256"), str)
                           and re.fullmatch(r"[0-9a-fA-F]{64}", pooling["sha256"]) is not None
                           and isinstance(pooling.get("version"), str))
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise ModelCardError(
                f"{where}: pooling must be a mapping with 'tempering' (a finite number >= 0, the "
                "beta of kikuchipy_cnn.phases.pool_probabilities) and/or 'split_r2' (two numbers "
                "[a, b], see kikuchipy_cnn.phases.SPLIT_R2) and/or 'signatures' (a list of distinct "
                f"names of {list(SIGNATURES)}) and/or, for band models, a pooled "
                "model: 'model' (ONNX file), 'sha256' and 'version' (all three), "
                f"not {pooling!r}"
            )
        if "signatures" in pooling and "split_r2" not in pooling:
            raise ModelCardError(
                f"{where}: pooling names signatures but no split_r2; the split bar depends on the "
                "signatures: fit both (python -m kikuchipy_cnn.training.pooling_fit fit ... --signatures ...)"
            )
        if "d_spacings" in pooling.get("signatures", ()) and self.input_kind != "bands":
            raise ModelCardError(
                f"{where}: the 'd_spacings' signature reads the widths of detected bands; "
                f"this card's input kind is {self.input_kind!r}, not 'bands'"
            )
        if "model" in pooling:
            if self.input_kind != "bands":
                raise ModelCardError(
                    f"{where}: a pooled model (pooling: model) reads pooled band features; "
                    f"this card's input kind is {self.input_kind!r}, not 'bands'"
                )
            if pooling["version"] != POOLED_VERSION:
                raise ModelCardError(
                    f"{where}: its pooled model was trained on pooled features "
                    f"{pooling['version']!r}, but this kikuchipy-cnn computes {POOLED_VERSION!r}: "
                    "use a kikuchipy-cnn version that matches the model, or retrain it"
                )

    def verify_weights(self):
        """Raise :class:`WeightsError` unless the weights file exists and its
        sha256 equals the card's."""
        self._verify_file("Weights file", self.weights_path, self.sha256, "")

    def _verify_file(self, what: str, path: Path, sha256: str, fallback: str) -> str:
        """Raise :class:`WeightsError` unless ``path`` exists with ``sha256``
        (the fix named, with ``fallback`` appended); return its digest."""
        if not path.is_file():
            raise WeightsError(
                f"{what} {path} of model {self.name!r} is missing: reinstall "
                f"kikuchipy-cnn or the package that provides the model{fallback}"
            )
        digest = sha256_of(path)
        if digest != sha256:
            raise WeightsError(
                f"{what} {path} of model {self.name!r} is corrupted or was "
                f"replaced: its sha256 is {digest}, the card expects {sha256}. "
                f"Reinstall the package that provides the model{fallback}"
            )
        return digest

    def test_tensors(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Return the card's test input, expected probabilities and
        tolerance."""
        t = self.data["test"]
        x = np.load(self.directory / t["input"])
        y = np.load(self.directory / t["output"])
        return x, y, float(t["tolerance"])

    def summary(self) -> str:
        """Return a human-readable summary of the card."""
        d = self.data
        lines = [
            f"{self.name} {self.version}",
            f"  {d['description'].strip()}",
            f"  Input: {list(self.input_shape)} {d['input']['dtype']}, "
            + (f"preprocessing {self.preprocessing.to_dict()}" if self.input_kind == "pixels"
               else f"band features {self.band_settings}"),
            f"  Classes ({len(self.classes)}): {', '.join(self.classes)}",
            f"  Recommended min_score: {self.min_score}",
            f"  Saliency: {', '.join(self.saliency_methods)}",
            f"  Licence: {d['license']}",
        ]
        ev = d.get("evaluation")
        if isinstance(ev, dict) and ev:
            lines.append("  Evaluation:")
            for k, v in ev.items():
                lines.append(f"    {k}: {v}")
        lines.append("  Limitations:")
        lines += [f"    - {item}" for item in d["limitations"]]
        return "\n".join(lines)
