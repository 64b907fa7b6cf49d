"""The model registry: plugins register models through the
``register_models`` hook; :func:`list_models` and :func:`get_model` read it.

Plugins are loaded lazily, once, on first use. External plugins come from the
``kikuchipy_cnn`` entry-point group; the environment variable
``KIKUCHIPY_CNN_PLUGINS`` (comma-separated entry-point names) restricts which
of them load (set it empty to load none). The bundled models always load.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pluggy

from kikuchipy_cnn import hookspecs
from kikuchipy_cnn.card import ModelCard

__all__ = [
    "DEFAULT_MODEL",
    "get_model",
    "list_models",
    "plugin_manager",
    "UnknownModelError",
]

#: Name of the model used when none is given
DEFAULT_MODEL = "kcnn-resnet-s"

ENV_ALLOWLIST = "KIKUCHIPY_CNN_PLUGINS"
DEFAULT_PLUGINS = ("kikuchipy_cnn.default_plugins.bundled_models",)

plugin_manager = pluggy.PluginManager("kikuchipy_cnn")
plugin_manager.add_hookspecs(hookspecs)

_loaded = False
_models: dict[str, tuple[ModelCard, str]] | None = None


class UnknownModelError(KeyError):
    """No registered model has the requested name."""

    def __str__(self):
        return str(self.args[0])


class DuplicateModelError(ValueError):
    """Two plugins registered models with the same name."""


def _load_plugins():
    global _loaded
    if _loaded:
        return
    _loaded = True
    allow = os.environ.get(ENV_ALLOWLIST)
    if allow is None:
        plugin_manager.load_setuptools_entrypoints("kikuchipy_cnn")
    else:
        from importlib.metadata import entry_points

        names = {n.strip() for n in allow.split(",") if n.strip()}
        for ep in entry_points(group="kikuchipy_cnn"):
            if ep.name in names and plugin_manager.get_plugin(ep.name) is None:
                plugin_manager.register(ep.load(), name=ep.name)
    for module in DEFAULT_PLUGINS:
        if plugin_manager.get_plugin(module) is None:
            plugin_manager.register(importlib.import_module(module), name=module)


def _source_of(plugin_name: str) -> str:
    for plugin, dist in plugin_manager.list_plugin_distinfo():
        if plugin_manager.get_name(plugin) == plugin_name:
            return f"{dist.project_name} {dist.version} (plugin {plugin_name!r})"
    if plugin_name in DEFAULT_PLUGINS:
        return "kikuchipy-cnn (bundled)"
    return f"plugin {plugin_name!r}"


def _collect() -> dict[str, tuple[ModelCard, str]]:
    global _models
    if _models is not None:
        return _models
    _load_plugins()
    models: dict[str, tuple[ModelCard, str]] = {}
    for impl in plugin_manager.hook.register_models.get_hookimpls():
        source = _source_of(impl.plugin_name)

        def register(card, source=source):
            if not isinstance(card, ModelCard):
                card = ModelCard.from_file(Path(card))
            if card.name in models:
                other = models[card.name][1]
                raise DuplicateModelError(
                    f"Two models are named {card.name!r}: one from {other}, one from "
                    f"{source}. Uninstall one of them, or exclude a plugin with the "
                    f"{ENV_ALLOWLIST} environment variable"
                )
            models[card.name] = (card, source)

        impl.function(register=register)
    _models = models
    return models


def refresh():
    """Forget the registered models so that they are collected again from the
    plugins (call after registering a plugin at run time)."""
    global _models
    _models = None


def list_models() -> list[str]:
    """Return the names of all registered models, the default first."""
    names = sorted(_collect())
    if DEFAULT_MODEL in names:
        names.remove(DEFAULT_MODEL)
        names.insert(0, DEFAULT_MODEL)
    return names


def get_model(name: str | None = None) -> ModelCard:
    """Return the card of a registered model.

    Parameters
    ----------
    name
        Model name. If not given, the default model.

    Returns
    -------
    card
        The model's card.
    """
    models = _collect()
    name = DEFAULT_MODEL if name is None else name
    if name not in models:
        available = ", ".join(repr(n) for n in list_models()) or "none"
        raise UnknownModelError(
            f"Unknown model {name!r}. Registered models: {available}. List them "
            "with kikuchipy_cnn.list_models() or `kikuchipy-cnn models`"
        )
    return models[name][0]


def model_source(name: str) -> str:
    """Return which distribution registered a model."""
    get_model(name)
    return _collect()[name][1]
