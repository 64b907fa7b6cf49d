"""The tutorial shows its figures and says what the model gets wrong."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    nxt = text.find("\n## ", start + 1)
    return text[start : nxt if nxt > 0 else None]


def test_tutorial_does_not_hide_its_figures():
    """Forcing the Agg backend and calling ``plt.show()`` left the executed
    notebook without any figure."""
    text = TUTORIAL.read_text()
    assert not re.search(r"matplotlib\.use\(|plt\.show\(\)|%matplotlib", text)
    assert "plot_maps(" in text and "plot_overlay(" in text


def test_tutorial_comments_on_wrong_candidates():
    """The "Known candidates" section put 8 of 9 Ni patterns in ``fe`` without a
    word; it must say that this is wrong."""
    known = _section(TUTORIAL.read_text(), "Known candidates")
    assert re.search(r"\bwrong\b", known)
    assert "fe" in known and "ni" in known


def test_executed_tutorial_contains_the_figures():
    """Execute the tutorial as the documentation build does (myst-nb's reader,
    a Jupyter kernel with the backend set by ``docs/conf.py``): the maps and
    both saliency overlays come out as images."""
    pytest.importorskip("myst_nb")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from myst_nb.core.read import read_myst_markdown_notebook

    nb = read_myst_markdown_notebook(TUTORIAL.read_text())
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(TUTORIAL.parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with_image = [
        "".join(c.source) for c in nb.cells if c.cell_type == "code"
        and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
    ]
    assert any("plot_maps(" in src for src in with_image)
    assert sum("plot_overlay(" in src for src in with_image) >= 2


def test_model_card_pages_render_for_every_registered_model(tmp_path):
    """The docs' model-card page is written for pixel and band models alike."""
    import runpy
    from types import SimpleNamespace

    conf = runpy.run_path(str(Path(__file__).resolve().parent.parent / "docs" / "conf.py"))
    conf["_write_model_cards"](SimpleNamespace(srcdir=str(tmp_path)))
    text = (tmp_path / "_generated" / "model_cards.md").read_text()
    import kikuchipy_cnn

    for name in kikuchipy_cnn.list_models():
        assert f"## {name} " in text
