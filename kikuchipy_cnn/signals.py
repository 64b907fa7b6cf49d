"""Signal types of kikuchipy-cnn, registered with hyperspy through
``hyperspy_extension.yaml``."""

from __future__ import annotations

import numpy as np
from hyperspy._signals.lazy import LazySignal
from hyperspy.signals import Signal2D

__all__ = ["EBSDSaliency", "LazyEBSDSaliency"]


#: _ClassLabel._classify's score where the saliency's stored PCs do not
#: match its (sliced) navigation shape
_SLICED = object()


class _ClassLabel:
    """Title of the overlay at a navigation position: the heatmap's class
    and the model's probability of it, computed for one pattern at a time
    (cached), so navigating a lazy scan stays cheap."""

    def __init__(self, saliency, patterns):
        md = saliency.metadata
        self.model = md.get_item("Saliency.model")
        self.method = md.get_item("Saliency.method", "saliency")
        self.target = md.get_item("Saliency.target", "predicted")
        self.patterns = patterns
        self.pc = md.get_item("Saliency.pc")  # band models
        self.wavelength = md.get_item("Saliency.wavelength")
        self.nav_shape = tuple(saliency.axes_manager.navigation_shape[::-1])
        self._cache = {}

    def _classify(self, indices):
        from kikuchipy_cnn.classify import resolve_model, static_background_of
        from kikuchipy_cnn.engine import get_session
        from kikuchipy_cnn.preprocessing import preprocess

        card = resolve_model(self.model)
        data = self.patterns.data[tuple(indices[::-1])]
        data = np.asarray(data.compute() if hasattr(data, "compute") else data)
        bg = static_background_of(self.patterns, "auto")
        from kikuchipy_cnn.pattern_check import check_patterns

        if check_patterns(data[None], bg)[0][0] != 0:  # get_saliency gives no heatmap
            return None, None
        if card.input_kind == "bands":  # the band input with the PC get_saliency used
            from kikuchipy_cnn.classify import _band_input

            pcs = np.asarray(self.pc, np.float64).reshape(-1, 3)
            nav = self.nav_shape
            if len(pcs) not in (1, int(np.prod(nav)) if nav else 1):
                # a sliced saliency (hyperspy does not slice its metadata): which
                # pattern's PC it used is not known here, so no class is named
                return None, _SLICED
            i = int(np.ravel_multi_index(tuple(indices[::-1]), nav)) if nav and len(pcs) > 1 else 0
            x, valid, *_ = _band_input(data[None], pcs[i : i + 1], self.wavelength, card, bg)
        else:
            x, valid = preprocess(data[None], card.preprocessing, bg)
        if not valid[0]:
            return None, None
        probs = get_session(card, None).run(x[valid], ("probabilities",), 1)["probabilities"][0]
        if self.target == "predicted" or self.target not in card.classes:
            i = int(np.argmax(probs))
        else:
            i = card.classes.index(self.target)
        return card.classes[i], float(probs[i])

    def __call__(self, indices) -> str:
        if self.model is None:
            return f"Saliency ({self.method})"
        if indices not in self._cache:
            self._cache[indices] = self._classify(indices)
        name, score = self._cache[indices]
        if score is _SLICED:
            return f"{self.model}, {self.method} saliency (class not recomputed for a sliced saliency)"
        if name is None:
            return "Not a usable Kikuchi pattern: no saliency"
        kind = "predicted" if self.target == "predicted" else "target"
        return f"{name} ({kind}, score {score:.2f})\n{self.model}, {self.method} saliency"


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
        colorbar: bool = True,
        **kwargs,
    ):
        """Plot the heatmaps over their patterns, navigable like any
        hyperspy signal.

        The heatmap is drawn above the pattern both on screen and when the
        figure is saved, with its own colour bar; the title names the
        heatmap's class and the model's probability of it for the pattern
        shown, and follows navigation.

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
        colorbar
            Whether to add a colour bar of the heatmap (default True).
        **kwargs
            Passed to ``patterns.plot()``. The pattern's intensity colour bar
            is off unless ``pattern_colorbar=True`` is passed.

        Returns
        -------
        figure
            The matplotlib figure of the overlay (``figure.savefig(...)``
            saves what is shown). The heatmap image is
            ``figure.saliency_image``, updated on navigation.

        Notes
        -----
        The class and score in the title are those of the model named in
        ``metadata.Saliency`` on the pattern shown (preprocessed with the
        signal's own static background, as ``get_saliency()`` does by
        default): the predicted class for ``target="predicted"``, otherwise
        the target class. For band models, the band features are computed
        with the pattern centres and wavelength that ``get_saliency()`` used
        (``metadata.Saliency.pc`` and ``.wavelength``).
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
        kwargs["colorbar"] = bool(kwargs.pop("pattern_colorbar", False))
        patterns.plot(**kwargs)
        plot = patterns._plot.signal_plot
        ax = plot.ax
        fig = ax.figure
        pattern_image = ax.images[0]
        am = patterns.axes_manager
        label = _ClassLabel(self, patterns)

        def current():
            data = self.data[tuple(am.indices[::-1])]
            return np.asarray(data.compute() if hasattr(data, "compute") else data)

        # hyperspy draws the pattern as an "animated" artist when the canvas
        # can blit: it is drawn after (above) every ordinary artist, on
        # screen and in savefig. The heatmap is drawn the same way, just
        # above the pattern, so it stays visible in both.
        image = ax.imshow(
            current(), cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=plot._extent,
            interpolation="bilinear", zorder=pattern_image.get_zorder() + 0.5,
            animated=pattern_image.get_animated(),
        )
        ax.set_title(label(tuple(am.indices)), fontsize="medium")
        if colorbar:
            fig.colorbar(image, ax=ax, label=f"{label.method} saliency (normalised per pattern)")
            try:
                fig.tight_layout()
            except Exception:  # tight_layout is brittle; the plot stays usable
                pass

        def update(*args, **kw):
            if plot.figure is None:  # the plot was closed
                return
            image.set_data(current())
            ax.set_title(label(tuple(am.indices)), fontsize="medium")
            # The title is not animated: redraw the whole figure
            fig.canvas.draw_idle()

        am.events.indices_changed.connect(update, [])

        def disconnect(*args, **kw):
            if update in am.events.indices_changed.connected:
                am.events.indices_changed.disconnect(update)

        plot.events.closed.connect(disconnect, [])
        if markers is not None:
            patterns.add_marker(markers, plot_marker=True, permanent=False)
        fig.saliency_image = image
        fig.canvas.draw_idle()
        return fig


class LazyEBSDSaliency(LazySignal, EBSDSaliency):
    """Lazy :class:`EBSDSaliency`."""

    _lazy = True
