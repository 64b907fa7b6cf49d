"""Shared fixtures: small ONNX models built here, and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import kikuchipy_cnn
from kikuchipy_cnn import registry
from kikuchipy_cnn.card import sha256_of
from kikuchipy_cnn.symmetry import JOINT_CLASSES, joint_class_info

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def build_tiny_onnx(path: Path, size: int = 64, n_classes: int = 23, seed: int = 0,
                    with_cam: bool = True):
    """Write a small conv → GAP → linear ONNX model with the outputs of the
    card format (probabilities, features, cam)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k = size // 8
    w1 = rng.normal(0, 0.3, (8, 1, k, k)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (n_classes, 8, 1, 1)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (n_classes,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["patterns", "w1"], ["c1"], strides=[k, k]),
        helper.make_node("Relu", ["c1"], ["features"]),
        helper.make_node("Conv", ["features", "w2", "b2"], ["cam"]),
        helper.make_node("ReduceMean", ["cam"], ["logits"], axes=[2, 3], keepdims=0),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", n_classes])]
    if with_cam:
        outputs += [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 8, 8, 8]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["n", n_classes, 8, 8]),
        ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("patterns", TensorProto.FLOAT, ["n", 1, size, size])],
        outputs,
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b2, "b2"))],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def make_model_dir(directory: Path, name: str = "tiny-test", seed: int = 0,
                   classes=JOINT_CLASSES, with_cam: bool = True, min_score: float = 0.0) -> Path:
    """Create ``directory/card.yaml`` with a tiny ONNX model and test tensors;
    return the card path."""
    import onnxruntime as ort

    directory.mkdir(parents=True, exist_ok=True)
    build_tiny_onnx(directory / "model.onnx", n_classes=len(classes), seed=seed, with_cam=with_cam)
    rng = np.random.default_rng(seed)
    x, _ = kikuchipy_cnn.preprocess(rng.random((4, 60, 60)))
    sess = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(["probabilities"], {"patterns": x})[0]
    np.save(directory / "test_input.npy", x)
    np.save(directory / "test_output.npy", y)
    from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS

    colours = [DEFAULT_COLOURS[c] for c in classes]
    outputs = {"probabilities": "probabilities"}
    if with_cam:
        outputs.update(features="features", cam="cam")
    card = {
        "format_version": 1,
        "name": name,
        "version": "0.0.1",
        "description": "Tiny untrained test model built by the test suite.",
        "license": "CC0-1.0",
        "citation": "none",
        "weights": {"file": "model.onnx", "sha256": sha256_of(directory / "model.onnx")},
        "input": {"name": "patterns", "shape": [-1, 1, 64, 64], "dtype": "float32", "axes": "bcyx"},
        "preprocessing": kikuchipy_cnn.Preprocessing().to_dict(),
        "outputs": outputs,
        "temperature": 1.0,
        "classes": [
            {**joint_class_info(c), "colour": col} for c, col in zip(classes, colours)
        ],
        "saliency": ["cam", "occlusion"] if with_cam else ["occlusion"],
        "min_score": min_score,
        "test": {"input": "test_input.npy", "output": "test_output.npy", "tolerance": 1e-5},
        "training_data": "none (random weights)",
        "evaluation": {},
        "limitations": ["Untrained: for tests only."],
    }
    path = directory / "card.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


class _Plugin:
    def __init__(self, cards):
        self.cards = cards

    @kikuchipy_cnn.hookimpl
    def register_models(self, register):
        for c in self.cards:
            register(c)


@pytest.fixture(scope="session")
def tiny_card_path(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny-test")


@pytest.fixture
def register_plugin():
    """Register a plugin with the given card paths for one test."""
    names = []

    def register(cards, name="test-plugin"):
        registry._load_plugins()
        registry.plugin_manager.register(_Plugin(cards), name=name)
        names.append(name)
        registry.refresh()

    yield register
    for name in names:
        registry.plugin_manager.unregister(name=name)
    registry.refresh()


@pytest.fixture
def tiny_model(tiny_card_path, register_plugin) -> str:
    register_plugin([tiny_card_path])
    return "tiny-test"


def shared_data_dir() -> Path:
    """Return ../shared/data, or skip (fail when KIKUCHIPY_CNN_REQUIRE_SHARED=1)."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get("KIKUCHIPY_CNN_REQUIRE_SHARED") == "1":
        pytest.fail(f"{SHARED_DATA} is required (KIKUCHIPY_CNN_REQUIRE_SHARED=1) but absent")
    pytest.skip(f"{SHARED_DATA} (real EBSD validation data beside the repository) is absent")


def _linear_softmax_onnx(path: Path, input_name: str, n_in: int, n_out: int, rng) -> None:
    """An ONNX model ``input_name (n, n_in)`` -> linear -> softmax
    ``probabilities (n, n_out)`` with random weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = rng.normal(0, 0.3, (n_in, n_out)).astype(np.float32)
    b = rng.normal(0, 0.1, (n_out,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", [input_name, "w", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        path.stem,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["n", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", n_out])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))


def make_band_model_dir(directory: Path, name: str = "tiny-bands", seed: int = 0,
                        pooled: bool = False) -> Path:
    """A band model (input kind 'bands'): features -> linear -> softmax with
    random weights, its test tensors and card; with ``pooled``, also a pooled
    model (pooled features -> linear -> softmax) in the card's ``pooling:``.
    Return the card path."""
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from kikuchipy_cnn.crystal_map import DEFAULT_COLOURS
    from kikuchipy_cnn.features import FEATURE_VERSION, POOLED_VERSION, feature_names, pooled_feature_names

    nf, nc = len(feature_names()), len(JOINT_CLASSES)
    rng = np.random.default_rng(seed)
    _linear_softmax_onnx(directory / "model.onnx", "features", nf, nc, rng)
    x = rng.random((3, nf)).astype(np.float32)
    sess = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    np.save(directory / "test_input.npy", x)
    np.save(directory / "test_output.npy", sess.run(["probabilities"], {"features": x})[0])
    card = {
        "format_version": 1, "name": name, "version": "0.0.1",
        "description": "Tiny untrained band model built by the test suite.",
        "license": "CC0-1.0", "citation": "none",
        "weights": {"file": "model.onnx", "sha256": sha256_of(directory / "model.onnx")},
        "input": {"name": "features", "kind": "bands", "feature_version": FEATURE_VERSION,
                  "shape": [-1, nf], "dtype": "float32", "axes": "bf"},
        "preprocessing": {"name": "kikuchipy_cnn.bands.v1", "n_bands": 16},
        "outputs": {"probabilities": "probabilities"},
        "temperature": 1.0,
        "classes": [{**joint_class_info(c), "colour": DEFAULT_COLOURS[c]} for c in JOINT_CLASSES],
        "saliency": [],
        "min_score": 0.0,
        "test": {"input": "test_input.npy", "output": "test_output.npy", "tolerance": 1e-5},
        "training_data": "none (random weights)", "evaluation": {},
        "limitations": ["Untrained: for tests only."],
    }  # fmt: skip
    if pooled:
        _linear_softmax_onnx(directory / "pooled.onnx", "pooled_features", len(pooled_feature_names()), nc, rng)
        card["pooling"] = {"model": "pooled.onnx", "sha256": sha256_of(directory / "pooled.onnx"),
                           "version": POOLED_VERSION}
    path = directory / "card.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_band_card_path(tmp_path_factory) -> Path:
    return make_band_model_dir(tmp_path_factory.mktemp("models") / "tiny-bands")


@pytest.fixture(scope="session")
def tiny_pooled_band_card_path(tmp_path_factory) -> Path:
    """A tiny band model with a pooled model (``pooling: {model: ...}``)."""
    return make_band_model_dir(tmp_path_factory.mktemp("models") / "tiny-pooled-bands", name="tiny-pooled-bands",
                               seed=1, pooled=True)
