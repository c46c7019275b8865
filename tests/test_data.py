"""Tests of the built-in coloured-shapes data set (hf_shapley.data).

The difficulty criteria (a)-(d) of the module docstring are checked here, from pixels where a
property can be seen in the images and from the generation metadata otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel, DatasetDict
from datasets import Image as ImageFeature

from hf_shapley.data import (
    COLOR_NAMES,
    MAX_OCCLUDED_FRACTION,
    MIN_IMAGE_SIZE,
    SHAPE_NAMES,
    SHAPES_LABELS,
    SUPPORTED_NUM_CLASSES,
    generate_shapes,
    load_shapes_dataset,
    shapes_label_names,
)
from hf_shapley.data.shapes import PALETTE, SIZE_RANGE

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def train_arrays():
    # The difficulty criteria below are those of the complement design (each colour once).
    return generate_shapes(
        2000, image_size=IMAGE_SIZE, seed=0, split="train", distractors="complement"
    )


@pytest.fixture(scope="module")
def test_arrays():
    return generate_shapes(
        1000, image_size=IMAGE_SIZE, seed=0, split="test", distractors="complement"
    )


@pytest.fixture(scope="module")
def small_dataset():
    return load_shapes_dataset(40, 24, seed=3)


def _palette_distances(pixels: np.ndarray, num_colors: int) -> np.ndarray:
    """Squared RGB distance of each pixel (last axis) to the first palette colours: (..., C)."""
    pixels = pixels.astype(np.float32)
    return np.stack([((pixels - c) ** 2).sum(-1) for c in PALETTE[:num_colors]], axis=-1)


def _nearest_palette_color(pixels: np.ndarray, num_colors: int) -> np.ndarray:
    """Index of the nearest palette colour of each RGB pixel (last axis)."""
    return np.argmin(_palette_distances(pixels, num_colors), axis=-1)


def _fit_logistic_regression(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    l2: float = 1e-3,
) -> tuple[float, float]:
    """Multinomial logistic regression (full-batch L-BFGS, L2 penalty) on standardized features;
    returns (train accuracy, test accuracy)."""
    # One thread: on a loaded machine, multi-threaded CPU kernels ran this fit 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(x_train, y_train, x_test, y_test, l2)
    finally:
        torch.set_num_threads(threads)


def _fit(x_train, y_train, x_test, y_test, l2):
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    num_classes = int(y_train.max()) + 1
    weight = torch.zeros(x_train.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=100, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        logits = x_train @ weight + bias
        loss = torch.nn.functional.cross_entropy(logits, y_train) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        train_acc = ((x_train @ weight + bias).argmax(1) == y_train).float().mean().item()
        test_acc = ((x_test @ weight + bias).argmax(1) == y_test).float().mean().item()
    return train_acc, test_acc


# ------------------------------------------------------------------------------------------
# API, features, determinism
# ------------------------------------------------------------------------------------------


def test_label_names():
    assert SHAPES_LABELS[:4] == ("red circle", "green square", "blue triangle", "yellow cross")
    assert len(SHAPES_LABELS) == len(COLOR_NAMES) == len(SHAPE_NAMES) == len(PALETTE)
    assert shapes_label_names(3) == ["red circle", "green square", "blue triangle"]
    assert len(set(SHAPES_LABELS)) == len(SHAPES_LABELS)


def test_features_and_modes(small_dataset):
    assert isinstance(small_dataset, DatasetDict)
    assert set(small_dataset) == {"train", "test"}
    assert small_dataset["train"].num_rows == 40
    assert small_dataset["test"].num_rows == 24
    features = small_dataset["train"].features
    assert isinstance(features["image"], ImageFeature)
    assert isinstance(features["mask"], ImageFeature)
    assert isinstance(features["label"], ClassLabel)
    assert features["label"].names == list(SHAPES_LABELS[:4])
    for split in ("train", "test"):
        for example in small_dataset[split].select(range(5)):
            image, mask = example["image"], example["mask"]
            assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
            assert mask.mode == "L" and mask.size == (IMAGE_SIZE, IMAGE_SIZE)
            values = set(np.unique(np.asarray(mask)).tolist())
            assert values == {0, 255}
            assert 0 <= example["label"] < 4


def test_dataset_matches_arrays(small_dataset):
    """The Dataset holds exactly what `generate_shapes` returns (lossless encoding)."""
    arrays = generate_shapes(40, seed=3, split="train")
    train = small_dataset["train"]
    assert train["label"] == arrays.labels.tolist()
    for i in (0, 17, 39):
        np.testing.assert_array_equal(np.asarray(train[i]["image"]), arrays.images[i])
        np.testing.assert_array_equal(np.asarray(train[i]["mask"]), arrays.masks[i] * 255)


def test_deterministic_and_seeded(small_dataset):
    again = load_shapes_dataset(40, 24, seed=3)
    for split in ("train", "test"):
        # Byte-identical encoded files, not only equal pixels.
        ours = small_dataset[split].data.to_pydict()
        theirs = again[split].data.to_pydict()
        assert ours == theirs
        assert small_dataset[split]._fingerprint == again[split]._fingerprint
    other = generate_shapes(40, seed=4)
    assert not np.array_equal(other.images, generate_shapes(40, seed=3).images)
    # Train and test come from independent streams.
    assert not np.array_equal(
        generate_shapes(24, seed=3, split="train").images,
        generate_shapes(24, seed=3, split="test").images,
    )


def test_test_split_does_not_depend_on_num_train():
    a = load_shapes_dataset(8, 12, seed=1)["test"]
    b = load_shapes_dataset(100, 12, seed=1)["test"]
    assert a.data.to_pydict() == b.data.to_pydict()


def test_prefix_is_stable_across_counts():
    # Full chunks of 256 images do not depend on the requested count.
    short, long = generate_shapes(256), generate_shapes(300)
    np.testing.assert_array_equal(short.images, long.images[:256])
    np.testing.assert_array_equal(short.masks, long.masks[:256])


def test_empty_split():
    ds = load_shapes_dataset(0, 4)
    assert ds["train"].num_rows == 0 and ds["test"].num_rows == 4


# ------------------------------------------------------------------------------------------
# Masks and occlusion
# ------------------------------------------------------------------------------------------


def test_mask_marks_the_class_object(train_arrays):
    a = train_arrays
    n = len(a.labels)
    assert a.masks.shape == (n, IMAGE_SIZE, IMAGE_SIZE) and a.masks.dtype == bool
    assert a.masks.any(axis=(1, 2)).all()
    # Slot 0 is the class object: its colour and shape are the label's.
    np.testing.assert_array_equal(a.colors[:, 0], a.labels)
    np.testing.assert_array_equal(a.shapes[:, 0], a.labels)
    nearest = _nearest_palette_color(a.images, 4)  # (N, S, S)
    for i in range(n):
        mask = a.masks[i]
        # Every mask pixel shows the class colour (pixel noise aside)...
        assert (nearest[i][mask] == a.labels[i]).mean() > 0.97
        # ...and, with complement distractors (each colour once), no pixel of that colour
        # lies outside the mask: the mask covers the class object and nothing else.
        far_from_gray = np.abs(a.images[i].astype(int) - a.images[i].mean(-1, keepdims=True))
        colored = far_from_gray.max(-1) > 60
        outside = colored & ~mask & (nearest[i] == a.labels[i])
        assert outside.sum() <= 0.02 * mask.sum()
    # The mask lies within the object's circumscribed circle...
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    cx = a.centers[:, 0, 0][:, None, None]
    cy = a.centers[:, 0, 1][:, None, None]
    dist = np.hypot(xs - cx, ys - cy)
    assert not (a.masks & (dist > a.radii[:, 0][:, None, None] + 0.5)).any()
    # ...and, for unoccluded objects (all shapes are centered on their centroid), centres on it.
    whole = a.occluded_fraction == 0
    area = a.masks.sum(axis=(1, 2))
    mx = (a.masks * xs).sum(axis=(1, 2)) / area
    my = (a.masks * ys).sum(axis=(1, 2)) / area
    assert np.abs(mx - a.centers[:, 0, 0])[whole].max() < 1.0
    assert np.abs(my - a.centers[:, 0, 1])[whole].max() < 1.0


def test_all_shapes_have_the_size_area(train_arrays):
    """Area = pi * size**2 for every shape: colour pixel counts cannot tell shapes apart."""
    a = train_arrays
    ratio = a.object_area / (np.pi * a.sizes[:, 0] ** 2)
    for shape in range(4):
        assert abs(ratio[a.shapes[:, 0] == shape].mean() - 1.0) < 0.03
    assert np.all(np.abs(ratio - 1.0) < 0.25)  # rasterization error of the smallest objects


@pytest.mark.parametrize(("num_classes", "num_distractors"), [(4, None), (4, 7), (6, None)])
def test_occlusion_is_bounded(num_classes, num_distractors):
    a = generate_shapes(
        600, num_classes=num_classes, num_distractors=num_distractors, seed=5, split="test"
    )
    assert a.occluded_fraction.max() <= MAX_OCCLUDED_FRACTION
    assert (a.masks.sum(axis=(1, 2)) >= (1 - MAX_OCCLUDED_FRACTION) * a.object_area).all()
    # Occlusion does happen (the bound is not vacuous) when images are crowded.
    if num_distractors == 7:
        assert (a.occluded_fraction > 0).any()


# ------------------------------------------------------------------------------------------
# Difficulty criteria
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_classes", "num_distractors"), [(3, None), (4, None), (4, 6), (5, None), (6, 7)]
)
def test_distractors_are_never_a_class(num_classes, num_distractors):
    """(b) distractors reuse colours and shapes but never form a class conjunction."""
    k = num_classes
    a = generate_shapes(
        300, num_classes=k, num_distractors=num_distractors, seed=2, distractors="complement"
    )
    num_objects = 1 + (k - 1 if num_distractors is None else num_distractors)
    assert a.colors.shape == a.shapes.shape == (300, num_objects)
    assert (a.colors < k).all() and (a.shapes < k).all()
    d_colors, d_shapes = a.colors[:, 1:], a.shapes[:, 1:]
    # Class c is (colour c, shape c): no distractor has equal colour and shape indices.
    assert (d_colors != d_shapes).all()
    # Each image has a distractor sharing a feature with a class other than its label.
    label = a.labels[:, None]
    shares_other = ((d_colors != label) | (d_shapes != label)).any(axis=1)
    assert shares_other.all()
    # The class object and the first k - 1 distractors use each colour and shape exactly once,
    # so colour and shape histograms carry no label information.
    expected = np.broadcast_to(np.arange(k), (300, k))
    np.testing.assert_array_equal(np.sort(a.colors[:, :k], axis=1), expected)
    np.testing.assert_array_equal(np.sort(a.shapes[:, :k], axis=1), expected)


def test_logistic_regression_on_pixels_is_near_chance(train_arrays, test_arrays):
    """(a) a linear model on raw pixels scores under 40% (chance: 25%)."""

    def pixels(a):
        return torch.from_numpy(a.images.reshape(len(a.images), -1)).float() / 255.0

    y_train = torch.from_numpy(train_arrays.labels)
    y_test = torch.from_numpy(test_arrays.labels)
    train_acc, test_acc = _fit_logistic_regression(
        pixels(train_arrays), y_train, pixels(test_arrays), y_test
    )
    # The model did fit (it memorizes the training set), yet does not generalize.
    assert train_acc > 0.9
    assert test_acc < 0.40, f"logistic regression test accuracy {test_acc:.3f}"


def test_color_counts_do_not_give_the_class(train_arrays, test_arrays):
    """(c) per-colour pixel counts (with noise and texture) give chance-level accuracy."""

    def color_counts(a):
        distances = _palette_distances(a.images, 4)
        nearest = distances.argmin(-1)
        close = distances.min(-1) < 60**2  # not background
        counts = [((nearest == c) & close).sum(axis=(1, 2)) for c in range(4)]
        return torch.from_numpy(np.stack(counts, 1).astype(np.float32))

    y_train = torch.from_numpy(train_arrays.labels)
    y_test = torch.from_numpy(test_arrays.labels)
    _, test_acc = _fit_logistic_regression(
        color_counts(train_arrays), y_train, color_counts(test_arrays), y_test, l2=1e-4
    )
    assert test_acc < 0.32, f"colour-count test accuracy {test_acc:.3f}"


def test_location_and_size_vary(train_arrays):
    """(c) the class object appears anywhere, at varying sizes, on a textured background."""
    a = train_arrays
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    area = a.masks.sum(axis=(1, 2))
    mx = (a.masks * xs).sum(axis=(1, 2)) / area / IMAGE_SIZE
    my = (a.masks * ys).sum(axis=(1, 2)) / area / IMAGE_SIZE
    for coord in (mx, my):
        low, high = np.quantile(coord, [0.02, 0.98])
        assert low < 0.2 and high > 0.8
    quadrant = (mx > 0.5).astype(int) * 2 + (my > 0.5)
    shares = np.bincount(quadrant, minlength=4) / len(quadrant)
    assert shares.min() > 0.18
    # Centroid is not tied to the label either.
    for c in range(4):
        assert abs(mx[a.labels == c].mean() - 0.5) < 0.05
    # Sizes cover the configured range; the mask area varies by a factor of ~3.
    lo, hi = SIZE_RANGE[0] * IMAGE_SIZE, SIZE_RANGE[1] * IMAGE_SIZE
    assert a.sizes[:, 0].min() < lo + 0.1 * (hi - lo) and a.sizes[:, 0].max() > hi - 0.1 * (hi - lo)
    assert np.quantile(area, 0.95) > 2 * np.quantile(area, 0.05)
    # The background is noisy and textured: far from every object, pixels vary.
    far = np.ones_like(a.masks)
    for j in range(a.centers.shape[1]):
        d = np.hypot(xs - a.centers[:, j, 0, None, None], ys - a.centers[:, j, 1, None, None])
        far &= d > a.radii[:, j, None, None] + 1
    background_std = np.array([a.images[i][far[i]].std() for i in range(200)])
    assert np.median(background_std) > 8
    # Background brightness differs between images.
    means = np.array([a.images[i][far[i]].mean() for i in range(200)])
    assert means.std() > 15


def test_classes_are_balanced(train_arrays, small_dataset):
    """(d) class counts differ by at most one."""
    counts = np.bincount(train_arrays.labels, minlength=4)
    assert counts.max() - counts.min() <= 1
    counts = np.bincount(generate_shapes(1001, num_classes=3).labels, minlength=3)
    assert counts.max() - counts.min() <= 1
    counts = np.bincount(small_dataset["test"]["label"], minlength=4)
    assert counts.max() - counts.min() <= 1


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 2, 7, 10])
def test_unsupported_num_classes(num_classes):
    assert num_classes not in SUPPORTED_NUM_CLASSES
    with pytest.raises(ValueError, match="num_classes"):
        load_shapes_dataset(4, 4, num_classes=num_classes)
    with pytest.raises(ValueError, match="num_classes"):
        shapes_label_names(num_classes)


def test_supported_num_classes():
    ds = load_shapes_dataset(12, 12, num_classes=6, image_size=48)
    assert ds["train"].features["label"].names == list(SHAPES_LABELS)
    assert np.asarray(ds["train"][0]["image"]).shape == (48, 48, 3)


@pytest.mark.parametrize("image_size", [MIN_IMAGE_SIZE - 1, 16, 0, -64])
def test_image_size_too_small(image_size):
    with pytest.raises(ValueError, match="image_size"):
        load_shapes_dataset(4, 4, image_size=image_size)


def test_smallest_image_size_works():
    a = generate_shapes(64, image_size=MIN_IMAGE_SIZE)
    assert a.images.shape == (64, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE, 3)
    assert a.masks.any(axis=(1, 2)).all()


@pytest.mark.parametrize(("num_train", "num_test"), [(-1, 4), (4, -5)])
def test_negative_sizes(num_train, num_test):
    with pytest.raises(ValueError, match="number of examples"):
        load_shapes_dataset(num_train, num_test)


@pytest.mark.parametrize("num_distractors", [0, 2, 8, -1])
def test_bad_num_distractors(num_distractors):
    with pytest.raises(ValueError, match="num_distractors"):
        load_shapes_dataset(4, 4, num_distractors=num_distractors, distractors="complement")


def test_bad_types_and_split():
    with pytest.raises(TypeError, match="image_size"):
        load_shapes_dataset(4, 4, image_size=64.0)
    with pytest.raises(TypeError, match="number of examples"):
        load_shapes_dataset(4.5, 4)
    with pytest.raises(ValueError, match="split"):
        generate_shapes(4, split="holdout")
    with pytest.raises(ValueError, match="seed"):
        generate_shapes(4, seed=-1)


# ------------------------------------------------------------------ label evidence location
# Method-independent criteria of where the class evidence lies (issue: "built-in data v2"):
# a CNN trained and tested on images whose class object is erased to the background must be at
# chance, and a CNN trained on full images must keep its accuracy on the class object alone.
# The "complement" distractors (the default) fail the first: the other colours and shapes,
# each present exactly once, name the missing class.
CNN_IMAGE_SIZE = 32
CNN_TRAIN, CNN_TEST, CNN_EPOCHS = 3000, 1000, 3


def _cnn_tensors(arrays) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(arrays.images).permute(0, 3, 1, 2).float().div(255).sub(0.5)
    return x, torch.tensor(arrays.labels)


def _train_cnn(arrays, seed: int = 0) -> torch.nn.Module:
    """A 3-layer CNN (global max pool), Adam, CNN_EPOCHS epochs: 99% on easy data in ~10 s."""
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 4),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = _cnn_tensors(arrays)
    generator = torch.Generator().manual_seed(seed)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(CNN_EPOCHS):
            for index in torch.randperm(len(x), generator=generator).split(64):
                loss = nn.functional.cross_entropy(model(x[index]), y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(previous)
    return model.eval()


@torch.no_grad()
def _cnn_accuracy(model, arrays) -> float:
    x, y = _cnn_tensors(arrays)
    return (model(x).argmax(-1) == y).float().mean().item()


def _shapes(distractors: str, split: str, objects: str = "all"):
    count = CNN_TRAIN if split == "train" else CNN_TEST
    return generate_shapes(
        count,
        image_size=CNN_IMAGE_SIZE,
        seed=1,
        split=split,
        distractors=distractors,
        objects=objects,
    )


def _chance_interval(count: int, z: float = 3.29) -> tuple[float, float]:
    """Where a classifier at chance (1/4) lands on ``count`` images, 99.9% of the time."""
    half = z * (0.25 * 0.75 / count) ** 0.5
    return 0.25 - half, 0.25 + half


def test_painted_objects_change_only_their_pixels():
    full = generate_shapes(200, distractors="independent", seed=4)
    for objects in ("class_object", "distractors"):
        part = generate_shapes(200, distractors="independent", seed=4, objects=objects)
        np.testing.assert_array_equal(part.labels, full.labels)
        np.testing.assert_array_equal(part.masks, full.masks)
        changed = (part.images != full.images).any(-1)
        if objects == "distractors":  # exactly the visible class-object pixels are erased
            assert not (changed & ~full.masks).any()
            assert changed[full.masks].mean() > 0.9  # object colours differ from background
        else:  # distractor pixels are erased, the class object's are kept
            assert not (changed & full.masks).any()
            assert changed.sum() > 0


def test_independent_distractors_do_not_depend_on_the_label():
    from scipy.stats import chi2_contingency

    def pvalue(distractors):
        a = generate_shapes(4000, num_classes=4, distractors=distractors, seed=5)
        pairs = a.colors[:, 1:] * 4 + a.shapes[:, 1:]  # (N, 3) distractor conjunction ids
        table = np.zeros((4, 16))
        for label in range(4):
            np.add.at(table[label], pairs[a.labels == label].ravel(), 1)
        table = table[:, table.sum(0) > 0]
        return chi2_contingency(table).pvalue

    a = generate_shapes(500, distractors="independent", seed=5)
    assert (a.colors[:, 1:] != a.shapes[:, 1:]).all()  # still never a class conjunction
    assert pvalue("independent") > 1e-3
    assert pvalue("complement") < 1e-12  # the default design leaks the label


@pytest.mark.slow
def test_erased_class_object_leaves_a_cnn_at_chance_only_with_independent_distractors():
    accuracies = {}
    for distractors in ("independent", "complement"):
        model = _train_cnn(_shapes(distractors, "train", objects="distractors"))
        accuracies[distractors] = _cnn_accuracy(
            model, _shapes(distractors, "test", objects="distractors")
        )
    low, high = _chance_interval(CNN_TEST)
    assert low <= accuracies["independent"] <= high, accuracies
    # The same CNN finds the label outside the object of the complement design (measured 1.0).
    assert accuracies["complement"] > 0.9, accuracies


@pytest.mark.slow
def test_class_object_alone_keeps_a_cnn_accurate_with_independent_distractors():
    model = _train_cnn(_shapes("independent", "train"))
    full = _cnn_accuracy(model, _shapes("independent", "test"))
    alone = _cnn_accuracy(model, _shapes("independent", "test", objects="class_object"))
    assert full > 0.6, full  # measured 0.81 (chance 0.25)
    assert alone >= full - 0.02, (alone, full)  # measured 1.0


def test_independent_class_object_spans_a_few_players():
    """At 64 px with the main job's 4 x 4 players (16 px each) the class object usually
    spans 2 to 4 players, so its game is neither trivial (one player) nor flat."""
    a = generate_shapes(2000, image_size=64, distractors="independent", seed=0)
    spanned = a.masks.reshape(-1, 4, 16, 4, 16).any(axis=(2, 4)).sum(axis=(1, 2))
    assert ((spanned >= 2) & (spanned <= 4)).mean() > 0.85  # measured 0.94
    assert (spanned == 1).mean() < 0.1  # measured 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distractors": "random"}, "distractors"),
        ({"objects": "object"}, "objects"),
        ({"distractors": "independent", "num_distractors": 8}, "num_distractors"),
        ({"distractors": "independent", "num_distractors": -1}, "num_distractors"),
    ],
)
def test_bad_distractor_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_shapes_dataset(4, 4, **kwargs)


def test_independent_distractors_allow_any_count():
    a = generate_shapes(50, distractors="independent", num_distractors=0, seed=1)
    assert a.colors.shape == (50, 1)
    assert load_shapes_dataset(4, 4)["train"]._fingerprint != (
        load_shapes_dataset(4, 4, distractors="complement")["train"]._fingerprint
    )
