"""Network, training loop (exact resume), calibration and ONNX export."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from kikuchipy_cnn.card import ModelCard  # noqa: E402
from kikuchipy_cnn.symmetry import JOINT_CLASSES  # noqa: E402
from kikuchipy_cnn.training.calibrate import (  # noqa: E402
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)
from kikuchipy_cnn.training.model import (  # noqa: E402
    ExportWrapper,
    ModelConfig,
    build_model,
    count_parameters,
)
from kikuchipy_cnn.training.train import (  # noqa: E402
    BatchStream,
    evaluate,
    make_sampler,
    synthetic_batch,
    train,
)

N_CLASSES = len(JOINT_CLASSES)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config(**over):
    cfg = {
        "seed": 3,
        "steps": 20,
        "checkpoint_every": 10,
        "val_every": 10,
        "log_every": 5,
        "optim": {"lr": 2e-3, "schedule": "onecycle"},
        "data": {
            "batch_size": 16,
            "train": {"source": "synthetic", "workers": 0},
            "val": {"source": "synthetic", "n": 48, "seed": 7},
        },
    }
    cfg.update(over)
    return cfg


# ----------------------------------------------------------------- model
def test_output_shapes_and_parameter_count():
    model = build_model().eval()
    assert 300_000 <= count_parameters(model) <= 1_500_000
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        logits = model(x)
        f = model.features(x)
        cam = model.cam(f)
    assert logits.shape == (3, N_CLASSES)
    assert f.shape == (3, model.n_features, 8, 8)
    assert cam.shape == (3, N_CLASSES, 8, 8)
    assert model.config.feature_size == 8


def test_cam_mean_equals_logits():
    torch.manual_seed(0)
    model = build_model().eval()
    # Non-trivial BN statistics and head
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        logits = model(x)
        cam = model.cam(model.features(x))
        p, f, cam2 = ExportWrapper(model, 1.7)(x)
    torch.testing.assert_close(cam.mean(dim=(2, 3)), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cam2, cam, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p, torch.softmax(logits / 1.7, 1), atol=1e-6, rtol=1e-5)


def test_channels_last_matches_contiguous():
    model = build_model().eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_model_config_roundtrip():
    c = ModelConfig(stage_channels=(16, 48), stage_blocks=(1, 1))
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"width": 3})


# ----------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """An uninterrupted 20-step run and one stopped at 10 and resumed."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    full, split = root / "full", root / "split"
    # The uninterrupted run prefetches with a background thread; the split run
    # draws in the loop: batches depend only on (seed, step)
    cfg_full = _config()
    cfg_full["data"]["train"].update(workers=2, worker_type="thread")
    m_full = train(cfg_full, full)
    train(_config(), split, stop_at=10)
    m_split = train(None, split, resume=True)
    return full, split, m_full, m_split


def test_resume_is_exact(trained_run):
    full, split, m_full, m_split = trained_run
    a = torch.load(full / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 20
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, st in a["optimizer"]["state"].items():
        for name, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][k][name]))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert m_full == m_split
    for key in ("acc_joint", "acc_crystal_system", "acc_bravais_lattice", "acc_laue_class"):
        assert 0 <= m_full[key] <= 1
    lines = (full / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [10, 20]
    assert "val step 20" in (full / "train.log").read_text()
    cal = json.loads((full / "calibration.json").read_text())
    assert cal["temperature"] > 0
    assert cal["calibrated"]["nll"] <= cal["uncalibrated"]["nll"] + 1e-9


def test_new_run_refuses_existing_checkpoint(trained_run):
    full = trained_run[0]
    with pytest.raises(FileExistsError):
        train(_config(), full)


def test_batch_sources_are_deterministic(tmp_path):
    h5py = pytest.importorskip("h5py")
    x, y = synthetic_batch(50, np.random.default_rng(0))
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
    fn = make_sampler({"source": "hdf5", "path": str(tmp_path / "d.h5")}, 8, seed=1)
    xb, yb = fn(7)
    assert xb.shape == (8, 1, 64, 64) and xb.dtype == np.float32 and yb.dtype == np.int64
    np.testing.assert_array_equal(fn(7)[1], yb)
    # Each epoch (6 batches of 8 out of 50) visits distinct patterns
    seen = np.concatenate([fn(k)[0][:, 0, 0, 0] for k in range(6)])
    assert len(np.unique(seen)) == 48
    # Engine-style callables get (masters, n, rng) and may return meta
    calls = []

    def load(split):
        calls.append(split)
        return {"split": split}

    def make(masters, n, rng):
        xx, yy = synthetic_batch(n, rng)
        return xx, yy, {"masters": masters}

    eng = make_sampler(
        {"source": "engine", "load_masters": load, "make_batch": make, "masters_kwargs": {"split": "train"}},
        4, seed=2,
    )
    s = BatchStream(eng, 0, 3, workers=0)
    got = [b[1] for b in s]
    assert len(got) == 3 and calls == ["train"]
    np.testing.assert_array_equal(got[2], eng(2)[1])


def test_evaluate_levels():
    y = np.array([JOINT_CLASSES.index("cF m-3m"), JOINT_CLASSES.index("cI m-3m")])
    logits = np.full((2, N_CLASSES), -10.0)
    # Both predicted as cF m-3m: joint 1/2, crystal system 2/2, Laue 2/2, Bravais 1/2
    logits[:, JOINT_CLASSES.index("cF m-3m")] = 10
    m = evaluate(logits, y)
    assert m["acc_joint"] == 0.5 and m["acc_bravais_lattice"] == 0.5
    assert m["acc_crystal_system"] == 1.0 and m["acc_laue_class"] == 1.0


# ----------------------------------------------------------------- calibration
def test_temperature_fit_reduces_nll():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    true = rng.normal(0, 1.5, (n, k))
    labels = np.array([rng.choice(k, p=p) for p in softmax(true)])
    over = 3.0 * true  # overconfident by a factor 3
    t = fit_temperature(over, labels)
    assert 2.4 < t < 3.6
    assert nll(over, labels, t) < nll(over, labels) - 0.1
    assert expected_calibration_error(softmax(over, t), labels) < expected_calibration_error(
        softmax(over), labels
    )


def test_ece_hand_computed():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bins: conf 0.9 (acc 0.5) and 0.6 (acc 1.0): 0.5 * 0.4 + 0.5 * 0.4
    assert expected_calibration_error(p, labels, 15) == pytest.approx(0.4)


# ----------------------------------------------------------------- export
def test_export_roundtrip(trained_run, tmp_path):
    import onnxruntime as ort

    from kikuchipy_cnn.training.export import export_run, load_run_model

    full = trained_run[0]
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"acc_joint_test": 0.5, "report": "eval.md"}))
    out = tmp_path / "models" / "kcnn-test"
    summary = export_run(full, out, evaluation=ev)
    assert max(summary["diffs"].values()) < 1e-4
    card = ModelCard.from_file(out / "card.yaml")
    card.verify_weights()
    assert card.classes == JOINT_CLASSES
    assert len(set(card.colours)) == N_CLASSES
    assert card.data["evaluation"]["acc_joint_test"] == 0.5
    assert any("Laue class cannot be distinguished" in s for s in card.data["limitations"])
    assert any("seudo-symmetry" in s for s in card.data["limitations"])
    assert (out / "training_config.yaml").is_file()
    assert "kikuchipy_cnn.training.train" in card.data["training"]["command"]
    assert card.weights_path.stat().st_size < 20 * 2**20
    x, expected, tol = card.test_tensors()
    assert x.shape == (8, 1, 64, 64) and x.dtype == np.float32
    sess = ort.InferenceSession(str(card.weights_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["patterns"]
    # Dynamic batch: run 3 and compare with the stored expectation
    p, f, cam = sess.run(["probabilities", "features", "cam"], {"patterns": x[:3]})
    np.testing.assert_allclose(p, expected[:3], atol=tol)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert f.shape[2:] == (8, 8) and cam.shape == (3, N_CLASSES, 8, 8)
    T = card.data["temperature"]
    np.testing.assert_allclose(softmax(cam.mean(axis=(2, 3)), T), p, atol=1e-5)
    # And PyTorch agrees
    model, _ = load_run_model(full)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(x[:3])) / T, 1).numpy()
    np.testing.assert_allclose(p, ref, atol=1e-4)


def test_headline_numbers_from_evaluate_json(tmp_path):
    from kikuchipy_cnn.training.export import headline_numbers

    lv = {"accuracy": 0.91234, "ece": 0.05, "confusion": [[1]], "names": ["x"]}
    ev = {"a. held-out": {"n": 10, "crystal_system": lv, "bravais_lattice": lv, "laue_class": lv, "joint": lv}}
    (tmp_path / "evaluation.json").write_text(json.dumps(ev))
    (tmp_path / "evaluation.md").write_text("# report\n")
    h = headline_numbers(tmp_path / "evaluation.json")
    assert h["a. held-out"] == {
        "n": 10, "accuracy_crystal_system": 0.9123, "accuracy_bravais_lattice": 0.9123,
        "accuracy_laue_class": 0.9123, "accuracy_joint": 0.9123, "ece_joint": 0.05,
    }
    assert h["report"] == "evaluation.md"


def test_dotted_import():
    from kikuchipy_cnn.training.train import _import

    assert _import("kikuchipy_cnn.training.model:ModelConfig.from_dict")({}) == ModelConfig()


def test_resume_refuses_changed_schedule(trained_run):
    split = trained_run[1]
    with pytest.raises(ValueError, match="steps"):
        train(_config(steps=40), split, resume=True)


def test_warm_start_loads_weights_and_checks_architecture(trained_run, tmp_path):
    full = trained_run[0]
    src = torch.load(full / "checkpoint.pt", weights_only=False)["model"]
    cfg = _config(steps=4, init_from=str(full))
    cfg["optim"] = {"lr": 1e-12, "weight_decay": 0.0, "schedule": "cosine"}
    train(cfg, tmp_path / "warm")
    warm = torch.load(tmp_path / "warm" / "checkpoint.pt", weights_only=False)
    assert warm["step"] == 4
    for k, v in src.items():
        if v.is_floating_point() and "running" not in k:  # BN statistics move in train mode
            torch.testing.assert_close(warm["model"][k], v, atol=1e-6, rtol=0, msg=k)
    # The card of a warm-started model says how the starting weights were trained
    from kikuchipy_cnn.training.export import export_run

    out = tmp_path / "models" / "kcnn-warm"
    export_run(tmp_path / "warm", out)
    card = ModelCard.from_file(out / "card.yaml")
    assert (out / "training_config_init0.yaml").read_text() == (full / "config.yaml").read_text()
    command = card.data["training"]["command"]
    first = f"--config models/kcnn-warm/training_config_init0.yaml --run-dir {full.as_posix()}"
    assert first in command
    assert command.index(first) < command.index("training_config.yaml --run-dir runs/kcnn-warm")
    assert card.data["training"]["warm_start"] == [{"config": "training_config_init0.yaml", "steps": 20}]
    with pytest.raises(ValueError, match="same architecture"):
        train(_config(init_from=str(full), model={"stem_channels": 8}), tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="init_from"):
        train(_config(init_from=str(tmp_path / "nowhere")), tmp_path / "none")
