import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPO_URL = "https://github.com/kikuchipy-cnn/kikuchipy-cnn"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
    )
    (path,) = out.glob("kikuchipy_cnn-*.whl")
    return path


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(z.read(name).decode())


def test_wheel_contains_bundled_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    cards = sorted((ROOT / "models").glob("*/card.yaml"))
    assert cards, "no bundled model in models/"
    for card in cards:
        rel = card.parent.relative_to(ROOT / "models")
        for f in ("card.yaml", "model.onnx", "test_input.npy", "test_output.npy"):
            assert f"kikuchipy_cnn/_models/{rel.as_posix()}/{f}" in names, f
    assert any(n.endswith("entry_points.txt") for n in names)
    # the learned pattern check (not a structure model: no card.yaml)
    for f in ("model.onnx", "check.json"):
        assert f"kikuchipy_cnn/_models/kikuchi-check/{f}" in names, f


def test_inference_never_imports_training_packages():
    code = (
        "import sys, kikuchipy as kp, kikuchipy_cnn\n"
        "s = kp.data.nickel_ebsd_small()\n"
        "s.classify_structure(verbose=0, show_progressbar=False)\n"
        "bad = [m for m in ('torch', 'onnx', 'pyxtal', 'spglib', 'de_ebsd', 'kikuchipy_cnn.training') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_warns_when_both_runtimes_installed(monkeypatch):
    from kikuchipy_cnn import _attach

    monkeypatch.setattr(_attach, "_installed", lambda name: True)
    monkeypatch.setattr(_attach, "_warned_both", False)
    with pytest.warns(RuntimeWarning, match="overwrite each other"):
        _attach.warn_if_both_runtimes()
    _attach.warn_if_both_runtimes()  # once only: no second warning


def test_wheel_metadata_ready_for_pypi(wheel):
    """Project URLs, classifiers and the README as a Markdown description."""
    md = _metadata(wheel)
    urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL") or [])
    for key in ("Homepage", "Documentation", "Source", "Issues"):
        assert urls.get(key, "").startswith("https://"), (key, urls)
    assert urls["Source"] == REPO_URL and urls["Issues"] == f"{REPO_URL}/issues"
    classifiers = md.get_all("Classifier")
    for prefix in ("Development Status ::", "Intended Audience ::", "Operating System ::",
                   "Programming Language :: Python :: 3.", "Topic :: Scientific/Engineering"):
        assert any(c.startswith(prefix) for c in classifiers), prefix
    assert md["License-Expression"] == "GPL-3.0-or-later"
    assert md["Description-Content-Type"] == "text/markdown"
    assert md.get_payload().startswith("# kikuchipy-cnn")


def _links(markdown: str) -> list[str]:
    inline = re.findall(r"\]\(\s*<?([^)\s>]+)", markdown)
    reference = re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", markdown, flags=re.M)
    html = re.findall(r"(?:href|src)=[\"']([^\"']+)", markdown)
    return inline + reference + html


def test_readme_links_are_absolute():
    """The README is the PyPI description: a relative link (a file of the
    repository, or a heading anchor) is broken there."""
    links = _links((ROOT / "README.md").read_text())
    assert links
    relative = [link for link in links if not re.match(r"https?://", link)]
    assert not relative, relative


def test_readme_opens_with_the_commands_ci_runs():
    """The README opens with exactly two commands, install + demo and the tests,
    and .ci/run runs them and the release check verbatim."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert blocks[0].strip() == 'pip install -e ".[test]" && python -m kikuchipy_cnn demo'
    assert blocks[1].strip() == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    release = [b for b in blocks if "twine check" in b or "dist/*.whl" in b]
    assert len(release) == 2
    for block in blocks[:2] + release:
        for line in block.strip().splitlines():
            assert line in ci.splitlines(), line
    assert "pip install kikuchipy-cnn" in readme
