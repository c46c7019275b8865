"""Figures of per-player Shapley values: the image with one heatmap per explained class.

:func:`plot_class_grid` draws the image and one overlay per explained class with a shared colour
scale and a colour bar, :func:`plot_explanation` runs a model and draws its top classes, and
:func:`save_figure` writes a figure; the heatmaps themselves come from ``heatmap.py``
(:func:`overlay_heatmap`, :func:`attribution_to_image_grid`, re-exported here).

No pyplot: figures are ``matplotlib.figure.Figure`` objects with their own ``FigureCanvasAgg``,
so nothing here selects or changes the global matplotlib backend of a user's session.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .models.heatmap import (
    _get_cmap,
    _matplotlib_norm,
    _to_numpy,
    attribution_to_image_grid,
    overlay_heatmap,
)
from .models.image_loading import to_rgb

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "attribution_to_image_grid",
    "overlay_heatmap",
    "plot_class_grid",
    "plot_explanation",
    "plot_faithfulness_curves",
    "save_figure",
]


# ------------------------------------------------------------------------------ figures
def _label_of(id2label: Mapping[Any, str] | Sequence[str] | None, k: int) -> str:
    if id2label is None:
        return str(k)
    if isinstance(id2label, Mapping):
        for key in (k, str(k)):
            if key in id2label:
                return str(id2label[key])
        return str(k)
    return str(id2label[k]) if k < len(id2label) else str(k)


def _squeeze_batch(array: np.ndarray | None, ndim: int, name: str) -> np.ndarray | None:
    if array is None:
        return None
    if array.ndim == ndim + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != ndim:
        raise ValueError(
            f"{name} must be for one image ({ndim}-D, or a batch of one); got shape {array.shape}."
        )
    return array


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def plot_class_grid(
    image: Image.Image,
    shapley_values: Any,
    players_grid: Sequence[int],
    id2label: Mapping[Any, str] | Sequence[str] | None,
    *,
    classes: Sequence[int] | None = None,
    logits: Any = None,
    base_values: Any = None,
    image_processor: Any = None,
    top_k: int = 3,
    cmap: str = "RdBu_r",
    alpha: float = 0.5,
    panel_size: float = 3.0,
) -> Figure:
    """The image and one overlay per explained class, with a shared colour scale and bar.

    Args:
        image: The original image.
        shapley_values: ``(P, K)`` values of one image (``(1, P, K)`` is accepted), players
            flattened row-major over ``players_grid``.
        players_grid: ``(h, w)`` with ``h * w == P``.
        id2label: Class names (``config.id2label``, int or str keys, or a list); ``None``
            shows class indices.
        classes: Class indices to show, in order. Default: the ``top_k`` classes by logit
            (logits taken from ``logits``, else ``base_values + sum``, else ranked by the sum
            of the values alone).
        logits, base_values: ``(K,)`` for the titles ``"label: logit = base + sum"`` (on two lines). Missing
            parts are derived by efficiency (``logit = base + sum``) when the other is given.
        image_processor: Inverted as in :func:`attribution_to_image_grid`; pixels it crops
            away are hatched.
        top_k: Number of classes when ``classes`` is not given.
        cmap, alpha: As in :func:`overlay_heatmap`.
        panel_size: Size of each panel in inches.

    Returns:
        A ``matplotlib.figure.Figure`` (Agg canvas, no pyplot) with ``1 + len(classes)`` image
        axes and a colour bar axes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    values = _squeeze_batch(_to_numpy(shapley_values), 2, "shapley_values")
    grid_h, grid_w = (int(s) for s in players_grid)
    num_players, num_classes = values.shape
    if grid_h * grid_w != num_players:
        raise ValueError(
            f"players_grid {tuple(players_grid)} has {grid_h * grid_w} players but "
            f"shapley_values has {num_players}."
        )
    logits = _squeeze_batch(None if logits is None else _to_numpy(logits), 1, "logits")
    base = _squeeze_batch(None if base_values is None else _to_numpy(base_values), 1, "base_values")
    sums = values.sum(axis=0)
    if logits is None and base is not None:
        logits = base + sums
    if base is None and logits is not None:
        base = logits - sums

    if classes is None:
        ranking = logits if logits is not None else sums
        classes = [int(k) for k in np.argsort(-ranking, kind="stable")[: max(1, top_k)]]
    classes = [int(k) for k in classes]
    for k in classes:
        if not 0 <= k < num_classes:
            raise ValueError(f"class index {k} is out of range for {num_classes} classes.")
    if not classes:
        raise ValueError("classes is empty: nothing to plot.")

    maps = [values[:, k].reshape(grid_h, grid_w) for k in classes]
    shared = float(max(np.abs(m).max() for m in maps)) or 1.0

    n = len(classes)
    fig = Figure(figsize=(panel_size * (n + 1) + 0.8, panel_size + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n + 1, squeeze=False)[0]
    rgb = to_rgb(image)
    axes[0].imshow(np.asarray(rgb))
    axes[0].set_title("input")
    for ax, k, values_hw in zip(axes[1:], classes, maps, strict=True):
        overlay = overlay_heatmap(
            rgb, values_hw, image_processor, cmap=cmap, alpha=alpha, vmax=shared
        )
        ax.imshow(np.asarray(overlay))
        title = f"{_label_of(id2label, k)}: "
        if logits is not None:
            # Two lines: one line overflows narrow panels into its neighbours' titles.
            title += f"{_fmt(logits[k])}\n= {_fmt(base[k])} + {_fmt(sums[k])}"
        else:
            title += f"sum {_fmt(sums[k])}"
        ax.set_title(title, fontsize="medium")
    for ax in axes:
        ax.set_axis_off()
    mappable = ScalarMappable(norm=_matplotlib_norm(-shared, shared), cmap=_get_cmap(cmap))
    mappable.set_array([])
    fig.colorbar(mappable, ax=list(axes[1:]), shrink=0.85, label="Shapley value (logit)")
    return fig


def plot_explanation(
    model: Any,
    image: Image.Image,
    image_processor: Any = None,
    *,
    top_k: int = 3,
    centered: bool = True,
) -> Figure:
    """Explain one image with a ``ShapleyForImageClassification`` and draw its top classes.

    Runs the model (in eval mode, without gradients) on ``image`` preprocessed by
    ``image_processor`` (default: ``model.image_processor``) and returns
    :func:`plot_class_grid` of its ``top_k`` classes by logit, the processor's geometry inverted.
    ``centered`` (default) draws the class-centered values (each minus its mean over classes),
    which explain the class-centered logit, the part softmax sees; ``False`` the raw values.
    """
    import torch

    processor = image_processor if image_processor is not None else model.image_processor
    if processor is None:
        raise ValueError("plot_explanation needs an image processor: pass image_processor=.")
    rgb = to_rgb(image)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(processor(rgb, return_tensors="pt")["pixel_values"].to(device))
    finally:
        model.train(was_training)
    phi, logits, base = (
        t[0].float().cpu() for t in (out.shapley_values, out.logits, out.base_values)
    )
    if centered:  # linear: logits == base_values + phi.sum(0) still holds
        phi, logits, base = (t - t.mean(-1, keepdim=True) for t in (phi, logits, base))
    return plot_class_grid(
        rgb,
        phi,
        model.config.players_grid,
        model.config.id2label,
        logits=logits,
        base_values=base,
        image_processor=processor,
        top_k=max(1, min(top_k, model.config.num_labels)),
    )


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> str:
    """Write ``fig`` (format from the file extension, e.g. ``.png``, ``.pdf``, ``.svg``) through
    its own Agg canvas, creating parent directories; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_faithfulness_curves(
    curves: Mapping[str, tuple[Any, Any]],
    *,
    title: str = "",
    ylabel: str = "probability of the predicted class",
    highlight: str | None = None,
    panel_size: tuple[float, float] = (5.5, 4.2),
) -> Figure:
    """Mean insertion and deletion curves of several explainers, side by side.

    Args:
        curves: ``{explainer name: (insertion, deletion)}``, each a ``(L + 1,)`` curve (e.g. the
            mean over images of :func:`hf_shapley.evaluation.player_curve`), plotted against the
            fraction of players inserted / removed.
        title: Prefix of both panel titles (e.g. the model's name).
        ylabel: What the curves track.
        highlight: An explainer drawn thick and black (e.g. the model's own Shapley values).
        panel_size: Size of each panel in inches.

    Returns:
        A ``matplotlib.figure.Figure`` (Agg canvas) with two axes: insertion, deletion.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves is empty: nothing to plot.")
    fig = Figure(figsize=(2 * panel_size[0], panel_size[1]), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"curves[{name!r}] must be (insertion, deletion).")
        style = dict(lw=2.5, color="black", zorder=3) if name == highlight else dict(lw=1.2)
        for ax, curve in zip(axes, pair, strict=True):
            values = _to_numpy(curve).reshape(-1)
            ax.plot(np.linspace(0.0, 1.0, len(values)), values, label=name, **style)
    for ax, kind, xlabel in zip(
        axes,
        ("insertion", "deletion"),
        ("fraction of players inserted", "fraction of players removed"),
        strict=True,
    ):
        ax.set_title(f"{title}: {kind}" if title else kind)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[1].legend(fontsize="small", loc="upper right")
    return fig
