"""Data: the built-in generated coloured shapes with known class-object masks (and captions),
and the checks and splits for a user's own image or caption folder."""

from .caption_folder import load_caption_folder, save_caption_folder
from .captions import (
    load_shapes_caption_dataset,
    shapes_caption_tokenizer,
    shapes_captions,
    shapes_class_prompts,
)
from .in_memory import InMemoryPixels, process_in_memory
from .labels import align_labels, data_label_names
from .shapes import (
    COLOR_NAMES,
    MAX_OCCLUDED_FRACTION,
    MIN_IMAGE_SIZE,
    SHAPE_NAMES,
    SHAPES_LABELS,
    SUPPORTED_NUM_CLASSES,
    ShapesArrays,
    generate_shapes,
    load_shapes_dataset,
    shapes_label_names,
)
from .splits import load_image_splits

__all__ = [
    "COLOR_NAMES",
    "InMemoryPixels",
    "MAX_OCCLUDED_FRACTION",
    "MIN_IMAGE_SIZE",
    "SHAPES_LABELS",
    "SHAPE_NAMES",
    "align_labels",
    "SUPPORTED_NUM_CLASSES",
    "ShapesArrays",
    "data_label_names",
    "generate_shapes",
    "load_caption_folder",
    "save_caption_folder",
    "load_image_splits",
    "load_shapes_caption_dataset",
    "load_shapes_dataset",
    "process_in_memory",
    "shapes_caption_tokenizer",
    "shapes_captions",
    "shapes_class_prompts",
    "shapes_label_names",
]
