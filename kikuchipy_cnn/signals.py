"""Signal types of kikuchipy-cnn, registered with hyperspy through
``hyperspy_extension.yaml``."""

from __future__ import annotations

import numpy as np
from hyperspy._signals.lazy import LazySignal
from hyperspy.signals import Signal2D

__all__ = ["EBSDSaliency", "LazyEBSDSaliency"]


class EBSDSaliency(Signal2D):
    """Saliency (class-activation) heatmaps of EBSD patterns.

    One heatmap per pattern, of the pattern's shape, normalised to [0, 1]:
    where the model looked to decide on its target class. Created by
    :meth:`~kikuchipy.signals.EBSD.get_saliency`; ``metadata.Saliency``
    names the model, method and target class.
    """

    _signal_type = "EBSDSaliency"
    _alias_signal_types = ["ebsd_saliency"]

    def plot_overlay(
        self,
        patterns,
        alpha: float = 0.45,
        cmap: str = "inferno",
        markers=None,
        **kwargs,
    ):
        """Plot the heatmaps over their patterns, navigable like any
        hyperspy signal.

        Parameters
        ----------
        patterns
            The EBSD signal the heatmaps were computed from (same navigation
            and signal shapes).
        alpha
            Opacity of the heatmap, in [0, 1].
        cmap
            Matplotlib colormap of the heatmap.
        markers
            Optional markers to add to the pattern plot, e.g. zone axes from
            kikuchipy's geometrical simulation:
            ``sim.as_markers(lines=False, zone_axes=True,
            zone_axes_labels=True)``.
        **kwargs
            Passed to ``patterns.plot()``.

        Returns
        -------
        image
            The matplotlib image of the overlay, updated on navigation.
        """
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], not {alpha}")
        sig = tuple(self.axes_manager.signal_shape)
        if tuple(patterns.axes_manager.signal_shape) != sig or tuple(
            patterns.axes_manager.navigation_shape
        ) != tuple(self.axes_manager.navigation_shape):
            raise ValueError(
                f"Patterns {patterns.axes_manager.shape} and heatmaps "
                f"{self.axes_manager.shape} must have the same shape"
            )
        patterns.plot(**kwargs)
        ax = patterns._plot.signal_plot.ax
        extent = patterns._plot.signal_plot._extent
        am = patterns.axes_manager

        def current():
            data = self.data[tuple(am.indices[::-1])]
            return np.asarray(data.compute() if hasattr(data, "compute") else data)

        image = ax.imshow(
            current(), cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=extent,
            interpolation="bilinear", zorder=2,
        )

        def update(*args, **kw):
            image.set_data(current())
            ax.figure.canvas.draw_idle()

        am.events.indices_changed.connect(update, [])
        if markers is not None:
            patterns.add_marker(markers, plot_marker=True, permanent=False)
        return image


class LazyEBSDSaliency(LazySignal, EBSDSaliency):
    """Lazy :class:`EBSDSaliency`."""

    _lazy = True
