"""Generated "coloured shapes" image-classification data set with known object masks.

This is the built-in data set of hf-shapley: every example, benchmark and test trains on it,
and the localization metrics (pointing game, mask AUROC) score attributions against its masks.

Design
------
Class ``k`` is a colour-shape *conjunction*, ``(COLOR_NAMES[k], SHAPE_NAMES[k])``, e.g. class 0
is "red circle". Every image holds one class object and ``num_distractors`` distractors:

* The class object and the first ``num_classes - 1`` distractors together use every colour
  exactly once and every shape exactly once; the distractors pair the other colours with a
  random *derangement* of the other shapes, so no distractor is ever a class conjunction. Each
  distractor therefore shares its colour with one class and its shape with another. Extra
  distractors (``num_distractors > num_classes - 1``) are drawn uniformly from the
  ``K * (K - 1)`` non-class combinations, independently of the label.
* Hence the multiset of colours and the multiset of shapes in an image carry no information
  about the label: a classifier must bind colour and shape at the same location.
* All shapes of the same size parameter have the same area, so the pixel count of a colour
  does not reveal which shape carries it.
* Positions are uniform (objects lie fully inside the image, within a margin that does not
  depend on the shape), sizes are uniform in ``SIZE_RANGE`` (a fraction of the image size),
  colours are jittered, drawing order (depth) is random, the background is a tinted grey with
  a random low-frequency texture, and pixel noise covers the whole image.
* Objects keep a minimum centre distance, and layouts in which distractors occlude more than
  ``MAX_OCCLUDED_FRACTION`` of the class object's pixels are resampled.
* Labels are balanced (class counts differ by at most one).

Where the class evidence lies
-----------------------------
With ``distractors="complement"`` (the first design, kept for its tests) the label is *also*
readable outside the class object: the distractors use every other colour and shape exactly once, so they name the missing
class. Measured (``tests/test_data.py``, 32 px, 3,000 training images, a 3-layer CNN): trained
and tested on images whose class object is erased to the background (``objects="distractors"``)
it scores 100%; trained on full images it scores only 42% on the class object alone. Such a
game is flat and an accurate model needs cross-object interactions that no additive
explanation carries.

``distractors="independent"`` (the default) draws every distractor uniformly from the non-class colour-shape
pairs, independently of the label, so that the evidence lies in the class object alone: the
same CNN scores 25.6% (chance) with the object erased, and 100% on the object alone against
81% on full images. The price: the class colour is always present, so per-colour counts carry
some label information (criterion (c) holds only for the complement design), but only through
the class object itself. At 64 px the class object touches 2 to 4 of a 4 x 4 grid of 16 px
players in 94% of images (1 player in 5%).

The ``mask`` marks the *visible* pixels of the class object (255) and nothing else: no
distractor and no occluded object pixel.

Difficulty criteria
-------------------
The difficulty is fixed by the module constants below, chosen against criteria that do not
depend on any attribution method and were checked before any model was tuned on the data
(``tests/test_data.py`` checks them):

(a) multinomial logistic regression on raw pixels scores under 40% test accuracy (chance is
    ``1 / num_classes``);
(b) distractors never form a class conjunction and each image holds at least one distractor
    sharing a feature with a class other than its label;
(c) the class object's position spreads over the whole image, its size varies, and per-colour
    pixel counts do not give the class;
(d) classes are balanced.

Measured at the defaults (4 classes, 64 px, 6000 train / 2000 test images): logistic
regression on raw pixels 27-29% test accuracy (100% train accuracy: it memorizes), on per-colour
pixel counts 24%; a 4-layer CNN (~190k parameters) 99.8% after one epoch. With
``num_distractors=7`` the same CNN reaches 87% after one epoch, 99.9% after two.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import permutations
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import datasets
from PIL import Image

__all__ = [
    "COLOR_NAMES",
    "MAX_OCCLUDED_FRACTION",
    "MIN_IMAGE_SIZE",
    "SHAPES_LABELS",
    "SHAPE_NAMES",
    "SUPPORTED_NUM_CLASSES",
    "ShapesArrays",
    "generate_shapes",
    "load_shapes_dataset",
    "shapes_label_names",
]

# --------------------------------------------------------------------------------------------
# Vocabulary. Class k is (COLOR_NAMES[k], SHAPE_NAMES[k]); the first four shapes are the most
# distinct, so the default 4-class set uses them.
# --------------------------------------------------------------------------------------------
COLOR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")
SHAPES_LABELS: tuple[str, ...] = tuple(
    f"{c} {s}" for c, s in zip(COLOR_NAMES, SHAPE_NAMES, strict=True)
)

# RGB values, far apart from each other and from the grey background.
PALETTE = np.array(
    [
        (220, 40, 40),  # red
        (40, 175, 60),  # green
        (45, 80, 225),  # blue
        (235, 205, 40),  # yellow
        (205, 50, 205),  # magenta
        (40, 205, 215),  # cyan
    ],
    dtype=np.float32,
)

# At least 3 classes: with 2, the only distractor that avoids both colour and shape of the
# class object is the other class itself, so colour counts could not be made uninformative.
SUPPORTED_NUM_CLASSES: tuple[int, ...] = (3, 4, 5, 6)

# --------------------------------------------------------------------------------------------
# Difficulty. Changing any of these changes the data set; re-check the criteria in the module
# docstring (tests/test_data.py) before tuning a model on it.
# --------------------------------------------------------------------------------------------
# Below 32 px the smallest shapes are a few pixels wide and no longer distinguishable.
MIN_IMAGE_SIZE = 32
# Objects (class object + distractors) per image; more do not fit at the minimum separation.
MAX_OBJECTS = 8
# Object size, as the radius of the disc of equal area, in fractions of the image size.
SIZE_RANGE = (0.075, 0.13)
# Centre distance between two objects >= MIN_SEPARATION * (r_i + r_j): objects may touch and
# overlap slightly, as in clutter, but stay recognisable.
MIN_SEPARATION = 0.85
# Layouts where distractors cover more than this fraction of the class object are resampled.
MAX_OCCLUDED_FRACTION = 0.1
# Uniform per-channel jitter of object colours, so the task is not exact colour matching.
COLOR_JITTER = 20.0
# Background: grey level, per-channel tint, amplitude of a random sinusoidal texture.
BACKGROUND_GRAY_RANGE = (70.0, 170.0)
BACKGROUND_TINT = 12.0
TEXTURE_AMPLITUDE_RANGE = (5.0, 30.0)
TEXTURE_CYCLES_RANGE = (0.5, 4.0)
# Standard deviation of the (uniform, zero-mean) pixel noise over the whole image.
NOISE_STD = 10.0

# How distractors are drawn (see the module docstring): "complement" (every colour and shape
# once per image) or "independent" (each distractor uniform over the non-class pairs).
DISTRACTOR_MODES = ("complement", "independent")
# Which objects are painted: all, the class object alone, or the distractors alone (the same
# layout and random stream, the others erased to the background).
PAINTED_OBJECTS = ("all", "class_object", "distractors")

# Names this generator in data set fingerprints; bump it whenever the output changes.
_GENERATOR_ID = "hf_shapley.data.shapes/1"
_DESCRIPTION = (
    "Coloured shapes: each image holds one class object, a colour-shape conjunction, among "
    "distractors that reuse its colours and shapes in other combinations; masks mark the "
    "visible pixels of the class object. Generated by hf_shapley.data.load_shapes_dataset."
)

# Images are generated in chunks, each from its own random stream (seed, split, chunk index):
# it bounds memory, and the first k * _CHUNK_SIZE images do not depend on the requested count.
_CHUNK_SIZE = 256
_SPLIT_STREAMS = {"train": 0, "test": 1, "validation": 2}
# Placement is rejection sampling; these bound it so a bad configuration fails loudly.
_PLACEMENT_TRIES = 100
_MAX_ROUNDS = 50


# Area of each shape inscribed in the unit circle (see `_shape_footprint`), and the factor
# that turns a size (radius of the disc of equal area) into the circumscribed radius: scaling
# every shape to the same area keeps per-colour pixel counts independent of the shapes.
_SHAPE_UNIT_AREA = np.array(
    [
        np.pi,  # circle
        4 * 0.707**2,  # square
        3 * np.sqrt(3) / 4,  # triangle
        2 * (1.9 * 0.6) - 0.6**2,  # cross
        2.0,  # diamond
        np.pi * (1 - 0.5**2),  # ring
    ]
)
_SHAPE_EXTENT = np.sqrt(np.pi / _SHAPE_UNIT_AREA)


def _shape_footprint(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean footprint of shape ``shape`` on coordinates normalised by its circumscribed radius.

    ``u`` and ``v`` are pixel-centre offsets from the object centre divided by that radius
    (``v`` points down). Every shape fits in the unit disc.
    """
    au, av = np.abs(u), np.abs(v)
    if shape == 0:  # circle
        return u * u + v * v <= 1.0
    if shape == 1:  # square (inscribed: half-side 1 / sqrt(2))
        return np.maximum(au, av) <= 0.707
    if shape == 2:  # equilateral triangle, apex up, inscribed in the unit circle
        return (v >= -1.0) & (v <= 0.5) & (au <= (v + 1.0) * 0.57735)
    if shape == 3:  # plus-shaped cross
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == 4:  # diamond
        return au + av <= 1.0
    if shape == 5:  # ring
        d2 = u * u + v * v
        return (d2 <= 1.0) & (d2 >= 0.25)
    raise ValueError(f"unknown shape index {shape}")


def _derangements(num_classes: int) -> np.ndarray:
    """Distractor shapes for each class, as an array ``(K, D, K - 1)``.

    Entry ``[c, d]`` lists the shapes given to the other colours (in increasing colour order)
    under the ``d``-th permutation of the other shapes that leaves no colour with its own shape.
    """
    table = []
    for c in range(num_classes):
        others = [k for k in range(num_classes) if k != c]
        table.append(
            [p for p in permutations(others) if all(s != k for s, k in zip(p, others, strict=True))]
        )
    return np.asarray(table, dtype=np.int64)


@dataclass
class ShapesArrays:
    """Raw arrays of generated examples, with the generation metadata.

    Object slot 0 is always the class object; slots 1.. are the distractors. Drawing order is
    random and given by ``draw_order`` (slot indices, back to front).

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB images.
        labels: ``(N,)`` int64 class indices.
        masks: ``(N, S, S)`` bool, the visible pixels of the class object.
        colors: ``(N, M)`` int64 colour index of each object.
        shapes: ``(N, M)`` int64 shape index of each object.
        centers: ``(N, M, 2)`` float32 ``(x, y)`` centres in pixels.
        sizes: ``(N, M)`` float32 sizes in pixels: radius of the disc of equal area.
        radii: ``(N, M)`` float32 circumscribed radii in pixels (the objects' extent).
        draw_order: ``(N, M)`` int64 slot indices in drawing order.
        object_area: ``(N,)`` int64 pixels of the class object's full (unoccluded) footprint.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    colors: np.ndarray
    shapes: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    radii: np.ndarray
    draw_order: np.ndarray
    object_area: np.ndarray

    @property
    def occluded_fraction(self) -> np.ndarray:
        """``(N,)`` fraction of the class object's pixels hidden by distractors."""
        return 1.0 - self.masks.sum(axis=(1, 2)) / self.object_area


def shapes_label_names(num_classes: int = 4) -> list[str]:
    """Readable class names (``"red circle"``, ...) of the ``num_classes``-class data set."""
    _check_num_classes(num_classes)
    return list(SHAPES_LABELS[:num_classes])


def _check_num_classes(num_classes: int) -> None:
    if num_classes not in SUPPORTED_NUM_CLASSES:
        raise ValueError(
            f"num_classes must be one of {SUPPORTED_NUM_CLASSES}, got {num_classes!r}: with 2 "
            "classes distractors cannot avoid the class conjunctions, and there are "
            f"{len(SHAPES_LABELS)} colour-shape pairs."
        )


def _check_arguments(
    num_examples: int,
    image_size: int,
    num_classes: int,
    num_distractors: int | None,
    distractors: str = "independent",
    objects: str = "all",
) -> int:
    """Validate arguments; returns the resolved number of distractors."""
    _check_num_classes(num_classes)
    if distractors not in DISTRACTOR_MODES:
        raise ValueError(f"distractors must be one of {DISTRACTOR_MODES}, got {distractors!r}")
    if objects not in PAINTED_OBJECTS:
        raise ValueError(f"objects must be one of {PAINTED_OBJECTS}, got {objects!r}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)):
        raise TypeError(f"the number of examples must be an int, got {num_examples!r}")
    if num_examples < 0:
        raise ValueError(f"the number of examples must be >= 0, got {num_examples}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"image_size must be an int, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be >= {MIN_IMAGE_SIZE} (smaller shapes are not distinguishable), "
            f"got {image_size}"
        )
    if num_distractors is None:
        return num_classes - 1
    if distractors == "independent":
        if isinstance(num_distractors, bool) or not 0 <= num_distractors <= MAX_OBJECTS - 1:
            raise ValueError(
                f"num_distractors must be in [0, {MAX_OBJECTS - 1}] (at most {MAX_OBJECTS} "
                f"objects per image), got {num_distractors}"
            )
        return int(num_distractors)
    # Fewer distractors than num_classes - 1 would leave some colours out of the image, and the
    # class colour, always present, would then be predictive on its own.
    if not num_classes - 1 <= num_distractors <= MAX_OBJECTS - 1:
        raise ValueError(
            f"num_distractors must be in [{num_classes - 1}, {MAX_OBJECTS - 1}] for "
            f"num_classes={num_classes} (at least one distractor per other colour, at most "
            f"{MAX_OBJECTS} objects per image), got {num_distractors}"
        )
    return int(num_distractors)


def _sample_objects(
    rng: np.random.Generator,
    labels: np.ndarray,
    num_classes: int,
    num_objects: int,
    distractors: str = "independent",
) -> tuple[np.ndarray, np.ndarray]:
    """Colours and shapes ``(n, M)`` of every object; slot 0 is the class object."""
    n = len(labels)
    colors = np.empty((n, num_objects), dtype=np.int64)
    shapes = np.empty((n, num_objects), dtype=np.int64)
    colors[:, 0] = shapes[:, 0] = labels
    # "independent": every distractor is an extra one, drawn without looking at the label.
    k1 = num_classes - 1 if distractors == "complement" else 0
    # The other colours, in increasing order, each paired with a deranged other shape.
    if k1:
        others = np.array([[k for k in range(num_classes) if k != c] for c in range(num_classes)])
        table = _derangements(num_classes)
        pick = rng.integers(0, table.shape[1], size=n)
        colors[:, 1 : 1 + k1] = others[labels]
        shapes[:, 1 : 1 + k1] = table[labels, pick]
    # Extra distractors: uniform over the K * (K - 1) non-class pairs, independent of the label.
    extra = num_objects - 1 - k1
    if extra > 0:
        c = rng.integers(0, num_classes, size=(n, extra))
        s = (c + rng.integers(1, num_classes, size=(n, extra))) % num_classes
        colors[:, 1 + k1 :] = c
        shapes[:, 1 + k1 :] = s
    return colors, shapes


def _sample_layout(
    rng: np.random.Generator, shapes: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``(n, M, 2)``, sizes and radii ``(n, M)``, and drawing order ``(n, M)``.

    Objects are placed one slot at a time by rejection sampling, vectorized over images; an
    image whose slot cannot be placed is laid out again from scratch.
    """
    n, num_objects = shapes.shape
    extent = _SHAPE_EXTENT[shapes]
    sizes = rng.uniform(*SIZE_RANGE, size=(n, num_objects)) * image_size
    centers = np.zeros((n, num_objects, 2))
    todo = np.arange(n)
    for _ in range(_MAX_ROUNDS):
        radii = sizes * extent
        failed = np.zeros(n, dtype=bool)
        for j in range(num_objects):
            pending = todo[~failed[todo]]
            for _ in range(_PLACEMENT_TRIES):
                if len(pending) == 0:
                    break
                r = radii[pending, j]
                # Uniform over the centres that keep the object inside the image, whatever its
                # shape: a shape-dependent margin would let wide shapes (triangles) reach the
                # borders less often than compact ones, a cue that linear models pick up.
                margin = (sizes[pending, j] * _SHAPE_EXTENT.max())[:, None]
                cand = margin + rng.uniform(size=(len(pending), 2)) * (image_size - 2 * margin)
                dist = np.linalg.norm(centers[pending, :j] - cand[:, None], axis=-1)
                need = MIN_SEPARATION * (radii[pending, :j] + r[:, None])
                ok = np.all(dist >= need, axis=1)
                centers[pending[ok], j] = cand[ok]
                pending = pending[~ok]
            failed[pending] = True
        todo = np.flatnonzero(failed)
        if len(todo) == 0:
            break
        sizes[todo] = rng.uniform(*SIZE_RANGE, size=(len(todo), num_objects)) * image_size
    else:
        raise RuntimeError("could not place the objects; reduce num_distractors")
    draw_order = np.argsort(rng.uniform(size=(n, num_objects)), axis=1)
    return (
        centers.astype(np.float32),
        sizes.astype(np.float32),
        radii.astype(np.float32),
        draw_order,
    )


def _render(
    rng: np.random.Generator,
    colors: np.ndarray,
    shapes: np.ndarray,
    centers: np.ndarray,
    radii: np.ndarray,
    draw_order: np.ndarray,
    image_size: int,
    painted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the images; returns uint8 images, visible class-object masks and object areas.

    ``painted`` (``(M,)`` bool over slots) leaves the other slots' objects out of the pixels
    only: the random stream, the masks and the areas are those of the full image, so the
    same arguments give the same image with those objects erased to its background.
    """
    n, num_objects = colors.shape
    size = int(image_size)
    coords = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    rows = np.arange(n)

    # Background: tinted grey plus a random plane wave, so it is textured rather than flat.
    gray = rng.uniform(*BACKGROUND_GRAY_RANGE, size=(n, 1, 1, 1)).astype(np.float32)
    tint = rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=(n, 1, 1, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1)).astype(np.float32)
    cycles = rng.uniform(*TEXTURE_CYCLES_RANGE, size=(n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1)).astype(np.float32)
    amplitude = rng.uniform(*TEXTURE_AMPLITUDE_RANGE, size=(n, 1, 1, 1)).astype(np.float32)
    freq = 2 * np.pi * cycles / size
    wave = np.sin(
        freq * (np.cos(angle) * coords[None, None, :] + np.sin(angle) * coords[None, :, None])
        + phase
    )
    images = gray + tint + amplitude * wave[..., None]

    object_rgb = PALETTE[colors] + rng.uniform(
        -COLOR_JITTER, COLOR_JITTER, size=(n, num_objects, 3)
    ).astype(np.float32)

    visible = np.zeros((n, size, size), dtype=bool)
    object_area = np.zeros(n, dtype=np.int64)
    for t in range(num_objects):
        slot = draw_order[:, t]
        shape = shapes[rows, slot]
        for s in np.unique(shape):
            # Images drawing shape `s` at depth `t`. Each object is drawn inside a window the
            # size of the largest such shape, ~10x less work than evaluating the whole image.
            idx = np.flatnonzero(shape == s)
            sel = slot[idx]
            window = min(size, int(np.ceil(2 * _SHAPE_EXTENT[s] * SIZE_RANGE[1] * size)) + 2)
            cx, cy = centers[idx, sel, 0], centers[idx, sel, 1]
            r = radii[idx, sel]
            x0 = np.clip(np.floor(cx).astype(np.int64) - window // 2, 0, size - window)
            y0 = np.clip(np.floor(cy).astype(np.int64) - window // 2, 0, size - window)
            xs = x0[:, None] + np.arange(window)  # (m, W)
            ys = y0[:, None] + np.arange(window)
            u = (coords[xs] - cx[:, None]) / r[:, None]
            v = (coords[ys] - cy[:, None]) / r[:, None]
            footprint = _shape_footprint(int(s), u[:, None, :], v[:, :, None])  # (m, W, W)
            ii, yy, xx = idx[:, None, None], ys[:, :, None], xs[:, None, :]
            paint = footprint if painted is None else footprint & painted[sel][:, None, None]
            images[ii, yy, xx] = np.where(
                paint[..., None], object_rgb[idx, sel][:, None, None, :], images[ii, yy, xx]
            )
            # The class object (slot 0) is visible where drawn and not covered by later
            # objects; before it is drawn, `visible` is all False.
            is_object = sel == 0
            object_area[idx[is_object]] = footprint[is_object].sum(axis=(1, 2))
            visible[ii, yy, xx] = np.where(
                is_object[:, None, None], footprint, visible[ii, yy, xx] & ~footprint
            )

    # Uniform rather than Gaussian noise: same role, and drawing it is 4x faster.
    half_width = np.float32(NOISE_STD * np.sqrt(3.0))
    noise = rng.random(size=images.shape, dtype=np.float32)
    noise *= 2 * half_width
    noise -= half_width
    images += noise
    np.rint(images, out=images)
    np.clip(images, 0, 255, out=images)
    return images.astype(np.uint8), visible, object_area


def _generate_chunk(
    rng: np.random.Generator,
    labels: np.ndarray,
    image_size: int,
    num_classes: int,
    num_objects: int,
    distractors: str = "independent",
    objects: str = "all",
) -> ShapesArrays:
    colors, shapes = _sample_objects(rng, labels, num_classes, num_objects, distractors)
    centers, sizes, radii, order = _sample_layout(rng, shapes, image_size)
    painted = None
    if objects != "all":
        painted = np.arange(num_objects) == 0
        painted = painted if objects == "class_object" else ~painted
    images, masks, area = _render(rng, colors, shapes, centers, radii, order, image_size, painted)
    # Resample (layout and pixels) the rare images whose class object is too hidden.
    for _ in range(_MAX_ROUNDS):
        bad = np.flatnonzero(masks.sum(axis=(1, 2)) < (1.0 - MAX_OCCLUDED_FRACTION) * area)
        if len(bad) == 0:
            break
        centers[bad], sizes[bad], radii[bad], order[bad] = _sample_layout(
            rng, shapes[bad], image_size
        )
        images[bad], masks[bad], area[bad] = _render(
            rng, colors[bad], shapes[bad], centers[bad], radii[bad], order[bad], image_size, painted
        )
    else:
        raise RuntimeError("could not limit the occlusion of the class object")
    return ShapesArrays(images, labels, masks, colors, shapes, centers, sizes, radii, order, area)


def generate_shapes(
    num_examples: int,
    *,
    image_size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    split: str = "train",
    num_distractors: int | None = None,
    distractors: str = "independent",
    objects: str = "all",
) -> ShapesArrays:
    """Generate examples as numpy arrays with their generation metadata.

    This is the engine behind [`load_shapes_dataset`]; use it directly for tests, analyses that
    need the object layout, or pipelines that want arrays rather than a `datasets.Dataset`.

    Args:
        num_examples: Number of images.
        image_size: Height and width in pixels (at least `MIN_IMAGE_SIZE`).
        num_classes: Number of classes, one of `SUPPORTED_NUM_CLASSES`.
        seed: Seed; the same arguments give byte-identical arrays.
        split: `"train"`, `"test"` or `"validation"`, which select independent random streams.
        num_distractors: Distractors per image; defaults to `num_classes - 1`, the minimum
            that puts every colour and every shape in every image.
        distractors: `"independent"` (default): each distractor is drawn uniformly from the
            non-class colour-shape pairs, independently of the label, so that the label is
            carried by the class object alone; `"complement"`: the distractors use every other
            colour and shape once (and so name the missing class).
        objects: `"all"` (default), `"class_object"` or `"distractors"`: paint only those
            objects; layout, masks, labels and random stream stay those of the full images.

    Returns:
        [`ShapesArrays`] with images, labels, masks and per-object metadata.
    """
    num_objects = 1 + _check_arguments(
        num_examples, image_size, num_classes, num_distractors, distractors, objects
    )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")
    chunks = []
    for chunk, start in enumerate(range(0, num_examples, _CHUNK_SIZE)):
        stop = min(start + _CHUNK_SIZE, num_examples)
        rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], chunk])
        # Global index i gets label i % K, shuffled within the chunk: exact overall balance.
        labels = rng.permutation(np.arange(start, stop) % num_classes)
        chunks.append(
            _generate_chunk(rng, labels, image_size, num_classes, num_objects, distractors, objects)
        )
    if not chunks:
        size = int(image_size)
        chunks.append(
            ShapesArrays(
                np.zeros((0, size, size, 3), np.uint8),
                np.zeros(0, np.int64),
                np.zeros((0, size, size), bool),
                np.zeros((0, num_objects), np.int64),
                np.zeros((0, num_objects), np.int64),
                np.zeros((0, num_objects, 2), np.float32),
                np.zeros((0, num_objects), np.float32),
                np.zeros((0, num_objects), np.float32),
                np.zeros((0, num_objects), np.int64),
                np.zeros(0, np.int64),
            )
        )
    return ShapesArrays(
        *(
            np.concatenate([getattr(c, f) for c in chunks])
            for f in ShapesArrays.__dataclass_fields__
        )
    )


def _encode_all(arrays: np.ndarray, image_format: str) -> pa.StructArray:
    """Encode uint8 arrays as image files, in the Arrow storage of `datasets.Image`."""
    encoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=image_format)
        encoded.append(buffer.getvalue())
    return pa.StructArray.from_arrays(
        [pa.array(encoded, type=pa.binary()), pa.nulls(len(encoded), type=pa.string())],
        names=["bytes", "path"],
    )


def _to_dataset(
    arrays: ShapesArrays, features: datasets.Features, split: str, fingerprint: str
) -> datasets.Dataset:
    # `datasets` is imported here, not at module level, so generate_shapes works without it.
    import datasets
    from datasets.table import InMemoryTable

    table = pa.table(
        {
            # Images as (lossless, uncompressed) BMP: pixel noise makes PNG shrink them by only
            # ~25%, while BMP encodes ~10x and decodes ~4x faster, which every training epoch
            # pays for. Masks are flat and PNG shrinks them ~20x.
            "image": _encode_all(arrays.images, "BMP"),
            "label": pa.array(arrays.labels, type=pa.int64()),
            "mask": _encode_all(arrays.masks.astype(np.uint8) * 255, "PNG"),
        },
        schema=features.arrow_schema,
    )
    # An explicit fingerprint, a pure function of the generation arguments: datasets would
    # otherwise hash every byte of the table (~1 s at the default size).
    return datasets.Dataset(
        InMemoryTable(table),
        info=datasets.DatasetInfo(description=_DESCRIPTION, features=features),
        split=datasets.NamedSplit(split),
        fingerprint=fingerprint,
    )


def load_shapes_dataset(
    num_train: int = 6000,
    num_test: int = 2000,
    *,
    image_size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    num_distractors: int | None = None,
    distractors: str = "independent",
    objects: str = "all",
    num_validation: int = 0,
) -> datasets.DatasetDict:
    """Generate the built-in coloured-shapes data set.

    Each image holds one class object (a colour-shape conjunction such as "red circle") among
    distractors that reuse its colours and shapes in other combinations; see the module
    docstring for the design and the difficulty criteria.

    Args:
        num_train: Number of training images.
        num_test: Number of test images; the test split comes from its own random stream, so
            it does not depend on `num_train`.
        image_size: Height and width in pixels (at least `MIN_IMAGE_SIZE`).
        num_classes: Number of classes, one of `SUPPORTED_NUM_CLASSES`.
        seed: Seed; the same arguments give byte-identical images.
        num_distractors: Distractors per image; defaults to `num_classes - 1`.
        distractors: `"complement"` or `"independent"`, see [`generate_shapes`].
        objects: `"all"`, `"class_object"` or `"distractors"`, see [`generate_shapes`].
        num_validation: Number of validation images (their own random stream); 0: no
            `"validation"` split.

    Returns:
        `datasets.DatasetDict` with splits `"train"` and `"test"` (and `"validation"` when
        `num_validation > 0`) and features `image`
        (RGB `datasets.Image`), `label` (`datasets.ClassLabel` with names from
        `SHAPES_LABELS`) and `mask` (`datasets.Image`, mode "L": 255 on the visible pixels of
        the class object, 0 elsewhere).

    Example:

    ```python
    >>> from hf_shapley.data import load_shapes_dataset
    >>> ds = load_shapes_dataset(600, 200)
    >>> ds["train"].features["label"].names
    ['red circle', 'green square', 'blue triangle', 'yellow cross']
    >>> ds["train"][0]["mask"].mode
    'L'
    ```
    """
    import datasets
    from datasets.fingerprint import Hasher

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=shapes_label_names(num_classes)),
            "mask": datasets.Image(),
        }
    )
    kwargs = {
        "image_size": image_size,
        "num_classes": num_classes,
        "seed": seed,
        "num_distractors": num_distractors,
    }
    # The fingerprinted arguments as they were when "complement" was the default, so that
    # every data set keeps its fingerprint (and cached classifiers their keys).
    if distractors != "complement":
        kwargs["distractors"] = distractors
    if objects != "all":
        kwargs["objects"] = objects
    # Validate both counts before generating either split.
    counts = [("train", num_train), ("test", num_test)]
    if num_validation:
        counts.append(("validation", num_validation))
    for _, count in counts:
        _check_arguments(count, image_size, num_classes, num_distractors, distractors, objects)
    splits = {}
    for split, count in counts:
        fingerprint = Hasher.hash(
            {"generator": _GENERATOR_ID, "split": split, "num_examples": count, **kwargs}
        )
        arrays = generate_shapes(count, split=split, **{**kwargs, "distractors": distractors})
        splits[split] = _to_dataset(arrays, features, split, fingerprint)
    return datasets.DatasetDict(splits)
