"""Band-model training: features from band sets, a short training run with
structure-disjoint splits, and an ONNX export that reproduces the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kikuchipy_cnn.features import FEATURE_VERSION, feature_names  # noqa: E402
from kikuchipy_cnn.training import band_model  # noqa: E402
from kikuchipy_cnn.training.band_sets import empty_arrays, save_band_sets  # noqa: E402
from test_lattice import LAMBDA, band_set  # noqa: E402


def _write_sets(path, names, rng, split):
    arrays = empty_arrays(len(names))
    for i, name in enumerate(names):
        n, w, d = band_set(name, rng, n_bands=14, noise_angle=0.2, noise_width=0.03)
        k = len(n)
        arrays["normals"][i, :k] = n
        arrays["width"][i, :k] = w
        arrays["strength"][i, :k] = d
        arrays["valid"][i, :k] = True
        arrays["normals"][i, k:] = 0
    from kikuchipy_cnn.symmetry import JOINT_CLASSES

    joint = {"cF": "cF m-3m", "hP": "hP 6/mmm", "tI": "tI 4/mmm", "oP": "oP mmm"}
    arrays["label"][:] = [JOINT_CLASSES.index(joint[x]) for x in names]
    arrays["wavelength"][:] = LAMBDA
    arrays["pc"][:] = (0.5, 0.3, 0.6)
    arrays["shape"][:] = (240, 240)
    arrays["structure_id"][:] = [f"{split}-{i}" for i in range(len(names))]
    arrays["source"][:] = "test"
    save_band_sets(path, arrays, {"split": split})


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bm")
    rng = np.random.default_rng(0)
    out = {}
    for split, per in (("train", 8), ("val", 3), ("test", 3)):
        names = [x for x in ("cF", "hP", "tI", "oP") for _ in range(per)]
        _write_sets(d / f"{split}.npz", names, rng, split)
        out[split] = band_model.featurize(d / f"{split}.npz", d / f"{split}.features.npz")
    return out


def test_featurize_writes_versioned_features(feature_files):
    f = band_model.load_features([feature_files["train"]])
    assert f["features"].shape == (32, len(feature_names()))
    with np.load(feature_files["train"]) as z:
        assert str(z["feature_version"]) == FEATURE_VERSION


def test_train_evaluate_and_export(feature_files, tmp_path):
    res = band_model.train([feature_files["train"]], [feature_files["val"]], [feature_files["test"]],
                           tmp_path / "run", hidden=32, epochs=60, patience=60)
    # four well-separated lattices from exact-ish band sets: learned
    assert res["test"]["accuracy"]["bravais_lattice"] >= 0.75
    assert 0.3 <= res["temperature"] <= 5
    x = band_model.load_features([feature_files["test"]])["features"][:4]
    onnx_path = band_model.export(tmp_path / "run" / "checkpoint.pt", tmp_path / "export", "t", "0", x)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    p = sess.run(["probabilities"], {"features": x})[0]
    np.testing.assert_allclose(p, np.load(tmp_path / "export" / "test_output.npy"), atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(FileExistsError):
        band_model.export(tmp_path / "run" / "checkpoint.pt", tmp_path / "export", "t", "0", x)
    # the card written beside a fresh export loads, verifies and offers band saliency
    from kikuchipy_cnn.card import ModelCard

    card = ModelCard.from_file(band_model.write_card(tmp_path / "run", tmp_path / "model", "t", "0", "cmd", x,
                                                     band_sets="test sets"))
    card.verify_weights()
    assert card.saliency_methods == ("bands",) and card.data["training_data"]["band_sets"] == "test sets"


def test_overlapping_structures_are_refused(feature_files, tmp_path):
    with pytest.raises(ValueError, match="in train and val"):
        band_model.train([feature_files["train"]], [feature_files["train"]], [], tmp_path / "x", epochs=1)


def test_ablation_groups_zero_the_other_columns():
    m = band_model.group_mask(["geometry"])
    names = feature_names()
    assert all(names[i].startswith("geom_") for i in np.flatnonzero(m))
    assert m.sum() < len(names)
