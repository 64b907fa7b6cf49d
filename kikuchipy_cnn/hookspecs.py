"""Hook specifications for plugins that provide models.

A distribution provides models by declaring an entry point in the group
``kikuchipy_cnn`` that points to a module with a ``register_models`` hook::

    # pyproject.toml of the plugin
    [project.entry-points.kikuchipy_cnn]
    my_models = "my_package.kikuchipy_cnn_plugin"

    # my_package/kikuchipy_cnn_plugin.py
    import kikuchipy_cnn

    @kikuchipy_cnn.hookimpl
    def register_models(register):
        register("path/to/card.yaml")
"""

import pluggy

hookspec = pluggy.HookspecMarker("kikuchipy_cnn")
hookimpl = pluggy.HookimplMarker("kikuchipy_cnn")


@hookspec
def register_models(register):
    """Register models by calling ``register(card)`` once per model, where
    ``card`` is a path to a model card YAML file or a
    :class:`~kikuchipy_cnn.card.ModelCard`."""
