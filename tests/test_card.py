import shutil

import numpy as np
import pytest
import yaml

import kikuchipy_cnn
from kikuchipy_cnn.card import ModelCard, ModelCardError, WeightsError
from kikuchipy_cnn.engine import clear_sessions, get_session
from kikuchipy_cnn.registry import get_model, list_models

from conftest import make_model_dir


@pytest.fixture
def model_copy(tmp_path, tiny_card_path):
    d = tmp_path / "copy"
    shutil.copytree(tiny_card_path.parent, d)
    return d / "card.yaml"


def _edit(path, **changes):
    d = yaml.safe_load(path.read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    path.write_text(yaml.safe_dump(d))


def test_every_registered_model_reproduces_its_test_tensor():
    names = list_models()
    assert kikuchipy_cnn.DEFAULT_MODEL in names, "the default model must be bundled"
    for name in names:
        card = get_model(name)
        x, y, tol = card.test_tensors()
        got = get_session(card, ["CPUExecutionProvider"]).run(x)["probabilities"]
        np.testing.assert_allclose(got, y, atol=tol, err_msg=name)
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)


def test_tiny_test_tensor(tiny_card_path):
    card = ModelCard.from_file(tiny_card_path)
    x, y, tol = card.test_tensors()
    got = get_session(card, ["CPUExecutionProvider"]).run(x)["probabilities"]
    np.testing.assert_allclose(got, y, atol=tol)
    assert "cF m-3m" in card.summary()


def test_corrupted_weights(model_copy):
    clear_sessions()
    w = model_copy.parent / "model.onnx"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    card = ModelCard.from_file(model_copy)
    with pytest.raises(WeightsError, match="corrupted or was replaced"):
        get_session(card)


def test_truncated_and_missing_weights(model_copy):
    w = model_copy.parent / "model.onnx"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(WeightsError, match="sha256"):
        ModelCard.from_file(model_copy).verify_weights()
    w.unlink()
    with pytest.raises(WeightsError, match="missing"):
        ModelCard.from_file(model_copy).verify_weights()


def test_swapped_weights(tmp_path, model_copy):
    other = make_model_dir(tmp_path / "other", name="other", seed=5)
    shutil.copy(other.parent / "model.onnx", model_copy.parent / "model.onnx")
    with pytest.raises(WeightsError, match="sha256"):
        get_session(ModelCard.from_file(model_copy))


def test_card_not_matching_graph(model_copy):
    _edit(model_copy, outputs={"probabilities": "probs"})
    with pytest.raises(ModelCardError, match="names output 'probs'"):
        get_session(ModelCard.from_file(model_copy))


def test_card_with_wrong_class_count(tmp_path):
    path = make_model_dir(tmp_path / "m", classes=kikuchipy_cnn.JOINT_CLASSES)
    d = yaml.safe_load(path.read_text())
    d["classes"] = d["classes"][:5]
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ModelCardError, match="lists 5 classes"):
        get_session(ModelCard.from_file(path))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"weights": None}, "lacks the fields"),
        ({"format_version": 2}, "format_version"),
        ({"min_score": 3}, "min_score"),
        ({"input": {"name": "patterns", "shape": [-1, 1, 32, 32], "dtype": "float32"}}, "input shape"),
        ({"classes": [{"label": "cF 6/mmm", "colour": "red"}]}, "not a joint class"),
        ({"classes": [{"label": "cF m-3m", "colour": "red", "laue_class": "m-3"}]}, "laue_class"),
    ],
)
def test_invalid_cards(model_copy, changes, match):
    _edit(model_copy, **changes)
    with pytest.raises(ModelCardError, match=match):
        ModelCard.from_file(model_copy)


def test_not_yaml_and_missing(tmp_path):
    p = tmp_path / "card.yaml"
    p.write_text("a: [")
    with pytest.raises(ModelCardError, match="not valid YAML"):
        ModelCard.from_file(p)
    with pytest.raises(ModelCardError, match="does not exist"):
        ModelCard.from_file(tmp_path / "nope.yaml")
