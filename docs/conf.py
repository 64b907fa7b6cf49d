"""Sphinx configuration of the kikuchipy-cnn documentation."""

import os
from datetime import date
from pathlib import Path

import kikuchipy_cnn

project = "kikuchipy-cnn"
author = "kikuchipy-cnn developers"
copyright = f"{date.today().year}, {author}"
release = kikuchipy_cnn.__version__
version = release

extensions = [
    "myst_nb",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
]
exclude_patterns = ["_build", "card_schema.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
html_theme = "alabaster"
html_static_path = ["_static"]
numpydoc_show_class_members = False
numpydoc_validation_checks = set()
autosummary_generate = False
# The executed tutorial shows its figures: the kernel (which inherits this
# environment) draws them with the inline backend, whatever MPLBACKEND says
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
myst_enable_extensions = ["colon_fence"]
suppress_warnings = ["mystnb.unknown_mime_type"]
intersphinx_mapping = {}


def _write_model_cards(app):
    """Render every registered model's card as a page."""
    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    lines = ["# Model cards", ""]
    for name in kikuchipy_cnn.list_models():
        card = kikuchipy_cnn.get_model(name)
        d = card.data
        lines += [f"## {name} {card.version}", "", d["description"].strip(), ""]
        lines += ["| | |", "|---|---|"]
        lines += [f"| Licence | {d['license']} |",
                  f"| Input | {list(card.input_shape)} {d['input']['dtype']} |",
                  (f"| Preprocessing | `{card.preprocessing.to_dict()}` |" if card.input_kind == "pixels"
                   else f"| Band features | `{card.band_settings}` |"),
                  f"| Weights sha256 | `{card.sha256}` |",
                  f"| Recommended min_score | {card.min_score} |",
                  f"| Saliency | {', '.join(card.saliency_methods) or 'none'} |", ""]
        lines += ["### Classes", "", "| class | crystal system | Bravais lattice | Laue class | representative space group |",
                  "|---|---|---|---|---|"]
        for c in d["classes"]:
            lines.append(f"| {c['label']} | {c.get('crystal_system', '')} | {c.get('bravais_lattice', '')} | "
                         f"{c.get('laue_class', '')} | {c.get('representative_space_group', '')} |")
        ev = d.get("evaluation") or {}
        if ev:
            lines += ["", "### Evaluation", "", "| | |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in ev.items()]
        report = card.directory / "evaluation.md"
        if report.is_file():
            lines += ["", f"The full evaluation report is `models/{name}/evaluation.md`."]
        lines += ["", "### Limitations", ""] + [f"- {item}" for item in d["limitations"]]
        if d.get("training"):
            lines += ["", "### Training", "", f"```bash\n{d['training'].get('command', '')}\n```"]
        lines.append("")
    (out / "model_cards.md").write_text("\n".join(lines))


def setup(app):
    app.connect("builder-inited", _write_model_cards)
