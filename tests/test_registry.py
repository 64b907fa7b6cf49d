import numpy as np
import pytest

import kikuchipy as kp
import kikuchipy_cnn
from kikuchipy_cnn import registry
from kikuchipy_cnn.registry import DuplicateModelError, UnknownModelError

from conftest import make_model_dir


def test_plugin_model_classifies(tiny_model):
    assert tiny_model in kikuchipy_cnn.list_models()
    s = kp.data.nickel_ebsd_small()
    xmap = s.classify_structure(model=tiny_model, verbose=0, show_progressbar=False)
    assert xmap.size == 9
    assert "test-plugin" in registry.model_source(tiny_model)


def test_unknown_model_lists_available(tiny_model):
    with pytest.raises(UnknownModelError, match="Registered models: .*'tiny-test'"):
        kikuchipy_cnn.get_model("no-such-model")


def test_duplicate_names_name_both_sources(tmp_path, tiny_card_path, register_plugin):
    other = make_model_dir(tmp_path / "dup", name="tiny-test", seed=3)
    register_plugin([tiny_card_path], name="plugin-a")
    register_plugin([other], name="plugin-b")
    with pytest.raises(DuplicateModelError, match="plugin-a.*plugin-b|plugin-b.*plugin-a"):
        kikuchipy_cnn.list_models()


def test_bundled_models_register_through_the_hook():
    impls = [i.plugin_name for i in registry.plugin_manager.hook.register_models.get_hookimpls()]
    registry._load_plugins()
    impls = [i.plugin_name for i in registry.plugin_manager.hook.register_models.get_hookimpls()]
    assert "kikuchipy_cnn.default_plugins.bundled_models" in impls


def test_allowlist_controls_entry_points(monkeypatch):
    """KIKUCHIPY_CNN_PLUGINS restricts which entry points load."""
    loaded = []

    class EP:
        name = "fake"
        group = "kikuchipy_cnn"

        def load(self):
            loaded.append(self.name)

            class P:
                @kikuchipy_cnn.hookimpl
                def register_models(self, register):
                    pass

            return P()

    import importlib.metadata as md

    monkeypatch.setattr(md, "entry_points", lambda group=None: [EP()] if group == "kikuchipy_cnn" else [])
    for allow, expected in (("", []), ("other", []), ("fake", ["fake"])):
        monkeypatch.setenv(registry.ENV_ALLOWLIST, allow)
        monkeypatch.setattr(registry, "_loaded", False)
        loaded.clear()
        try:
            registry._load_plugins()
            assert loaded == expected
        finally:
            if registry.plugin_manager.get_plugin("fake") is not None:
                registry.plugin_manager.unregister(name="fake")
    registry.refresh()


def test_loading_is_idempotent():
    registry._load_plugins()
    n = len(registry.plugin_manager.get_plugins())
    registry._load_plugins()
    assert len(registry.plugin_manager.get_plugins()) == n
    assert kikuchipy_cnn.list_models() == kikuchipy_cnn.list_models()
