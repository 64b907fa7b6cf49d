"""The models bundled with kikuchipy-cnn, registered through the same hook as
any plugin's."""

from pathlib import Path

from kikuchipy_cnn.hookspecs import hookimpl


def bundled_models_dir() -> Path:
    """Return the folder of the bundled models: ``kikuchipy_cnn/_models`` in
    an installed wheel, ``models/`` beside the package in a source
    checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_models", package.parent / "models"):
        if candidate.is_dir():
            return candidate
    return package / "_models"


@hookimpl
def register_models(register):
    for card in sorted(bundled_models_dir().glob("*/card.yaml")):
        register(card)
