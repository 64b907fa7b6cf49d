import numpy as np
import pytest

from kikuchipy_cnn import engine
from kikuchipy_cnn.card import ModelCard


def test_cpu_when_no_cuda_device(monkeypatch):
    monkeypatch.setattr(engine, "_cuda_device_count", lambda: 0)
    assert engine.choose_providers() == ["CPUExecutionProvider"]


def test_cuda_first_when_a_device_is_present(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(engine, "_cuda_device_count", lambda: 1)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    # TensorRT only on request
    assert engine.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert engine.choose_providers(["TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CPUExecutionProvider"]


def test_unknown_provider():
    with pytest.raises(ValueError, match="not available"):
        engine.choose_providers(["NoSuchExecutionProvider"])


def test_missing_cuda_libraries_fall_back_to_cpu_with_one_warning(tiny_card_path, monkeypatch, capfd):
    """With a CUDA device but without the CUDA libraries (this machine when
    onnxruntime-gpu is installed) the session runs on the CPU, with one
    warning and no wall of library errors."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider")
    if engine._cuda_device_count() > 0:
        pytest.skip("a CUDA device is present")
    engine.clear_sessions()
    engine._warned.discard("gpu-fallback")
    card = ModelCard.from_file(tiny_card_path)
    with pytest.warns(RuntimeWarning, match="running on the CPU") as record:
        s = engine.get_session(card, ["CUDAExecutionProvider"])
        engine.InferenceSession(card, ["CUDAExecutionProvider", "CPUExecutionProvider"], 1)
    assert len([r for r in record if "running on the CPU" in str(r.message)]) == 1
    assert s.provider == "CPUExecutionProvider"
    err = capfd.readouterr().err
    assert err.count("\n") < 3, err


def test_sessions_are_cached(tiny_card_path):
    card = ModelCard.from_file(tiny_card_path)
    a = engine.get_session(card, threads=1)
    assert engine.get_session(card, threads=1) is a
    assert engine.get_session(card, threads=2) is not a


def test_threads_share_cores_among_dask_worker_threads(monkeypatch):
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 8)
    monkeypatch.setenv("KIKUCHIPY_CNN_CONCURRENT_TASKS", "4")
    assert engine.default_threads() == 2


def test_out_of_memory_retries_smaller_batches(tiny_card_path):
    card = ModelCard.from_file(tiny_card_path)
    s = engine.InferenceSession(card, ["CPUExecutionProvider"], 1)
    real = s._session
    seen = []

    class Flaky:
        def run(self, names, feeds):
            n = next(iter(feeds.values())).shape[0]
            seen.append(n)
            if n > 2:
                raise RuntimeError("CUDA failure 2: out of memory")
            return real.run(names, feeds)

    s._session = Flaky()
    x, y, tol = card.test_tensors()
    x = np.concatenate([x, x])
    with pytest.warns(RuntimeWarning, match="out of memory"):
        got = s.run(x, batch_size=8)["probabilities"]
    np.testing.assert_allclose(got, np.concatenate([y, y]), atol=tol)
    assert seen[:3] == [8, 4, 2] and max(seen[3:]) <= 2
    seen.clear()
    s.run(x, batch_size=8)  # the next chunk does not run out of memory again
    assert max(seen) <= 2


def test_unknown_output_role(tiny_card_path):
    s = engine.get_session(ModelCard.from_file(tiny_card_path))
    with pytest.raises(ValueError, match="no 'logits' output"):
        s.run(np.zeros((1, 1, 64, 64), np.float32), ("logits",))


def test_garbage_onnx_file_gives_clear_error(tmp_path, tiny_card_path):
    import shutil

    import yaml

    from kikuchipy_cnn.card import ModelCardError, sha256_of

    d = tmp_path / "garbage"
    shutil.copytree(tiny_card_path.parent, d)
    (d / "model.onnx").write_bytes(b"not an onnx model")
    card = yaml.safe_load((d / "card.yaml").read_text())
    card["weights"]["sha256"] = sha256_of(d / "model.onnx")
    (d / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelCardError, match="could not load"):
        engine.get_session(ModelCard.from_file(d / "card.yaml"))
