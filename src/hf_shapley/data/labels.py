"""Match a data set's labels to a classifier's, by name.

A fine-tuned classifier's outputs are in its own label order (``config.id2label``). A data set
read from an image folder numbers its classes alphabetically, and a Hub data set in its own
order; training or evaluating on it as it is would pair the classifier's output for one class
with the targets of another. :func:`align_labels` renumbers the data onto the classifier's
order (never the reverse), after checking that both name the same classes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..models.backbones import describe_label_difference

if TYPE_CHECKING:
    import datasets

# transformers' names for labels nobody named (PreTrainedConfig's default id2label).
_GENERIC_LABEL = re.compile(r"LABEL_(\d+)")


def data_label_names(dataset: datasets.Dataset, label_column: str = "label") -> dict[int, str]:
    """``{index: name}`` of a data set's labels: a ``ClassLabel``'s names, or for a column of
    non-negative integers, each integer as its own name.

    Raises:
        ValueError: the column is neither.
    """
    import datasets

    if label_column not in dataset.column_names:
        raise ValueError(
            f"The data set has no label column {label_column!r}; its columns are "
            f"{dataset.column_names}. Name it with --label_column."
        )
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return dict(enumerate(feature.names))
    values = sorted(set(dataset[label_column]))
    if not values or not all(isinstance(v, int) for v in values) or values[0] < 0:
        raise ValueError(
            f"Labels in {label_column!r} must be a ClassLabel or non-negative integers; got "
            f"{values[:5]}..."
        )
    return {i: str(i) for i in range(values[-1] + 1)}


def is_generic(id2label: dict[int, str]) -> bool:
    """Whether a classifier's labels are transformers' unnamed ``LABEL_i`` defaults."""
    return all(
        (m := _GENERIC_LABEL.fullmatch(str(name))) and int(m.group(1)) == int(i)
        for i, name in id2label.items()
    )


def align_labels(
    dataset: datasets.Dataset,
    id2label: dict[int, str],
    label_column: str = "label",
    *,
    allow_missing: bool = False,
) -> datasets.Dataset:
    """The data set with its labels renumbered onto ``id2label``'s order, matched by name.

    Args:
        dataset: a ``datasets.Dataset`` whose ``label_column`` is a ``ClassLabel`` (an image
            folder's class names) or holds integer class ids.
        id2label: the classifier's labels (``model.config.id2label``).
        label_column: the data set's label column.
        allow_missing: accept data with only some of the classifier's classes (a test split
            without one of them); a training split must have them all.

    Returns:
        The data set with ``label_column`` a ``ClassLabel`` of ``id2label``'s names in its
        order, each example's label the classifier's id of its class name. Integer labels
        against a classifier whose labels were never named (``LABEL_0``, ``LABEL_1``, ...) are
        taken as its ids.

    Raises:
        ValueError: the names differ (the message lists the labels on each side only), or the
            data is named and the classifier's labels are not.
    """
    import datasets

    expected = {int(i): str(name) for i, name in id2label.items()}
    names = data_label_names(dataset, label_column)
    if names == expected:
        return dataset
    if not isinstance(dataset.features[label_column], datasets.ClassLabel):
        if is_generic(expected) and len(names) <= len(expected):
            names = {i: expected[i] for i in names}
        else:
            raise ValueError(
                f"The data's labels are integers {sorted(names)[:5]}... but the classifier names "
                f"its labels {list(expected.values())[:5]}...: cast the label column to a "
                "ClassLabel with those names (datasets.ClassLabel(names=[...])) so they can be "
                "matched by name."
            )
    if set(names.values()) != set(expected.values()):
        if is_generic(expected):
            raise ValueError(
                f"The classifier's labels were never named (its config.json says "
                f"{list(expected.values())[:3]}...), so the data's classes "
                f"{sorted(names.values())[:5]}... cannot be matched to them. Write the class "
                "names into the checkpoint's config.json (id2label and label2id), in the order "
                "of its outputs, and run again."
            )
        extra = set(names.values()) - set(expected.values())
        if extra or not allow_missing:
            raise ValueError(
                f"The data's classes do not match the classifier's labels: "
                f"{describe_label_difference(names, expected)}. An image folder's class folders "
                "must be named as the classifier's labels (config.json id2label), which are "
                "matched by name, not by order."
            )
    label2id = {name: i for i, name in expected.items()}
    mapping = {i: label2id[name] for i, name in names.items()}
    target = datasets.ClassLabel(names=[expected[i] for i in range(len(expected))])

    def renumber(batch: dict) -> dict:
        return {label_column: [mapping[label] for label in batch[label_column]]}

    features = dataset.features.copy()
    features[label_column] = target
    return dataset.map(renumber, batched=True, features=features, desc="Matching labels")


__all__ = ["align_labels", "data_label_names", "is_generic"]
