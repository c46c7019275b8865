"""Shared fixtures: tiny real backbones of the four token-removal families and the three
pixel-baseline families (ResNet, ConvNeXt, Swin), built from configs.

Every backbone reads a 32 x 32 image and ends in a 4 x 4 grid (8 x 8 patches for the token
families; strides of 8 for the pixel-baseline ones), which both
``players_grid=(2, 2)`` (P = 4) and ``(4, 4)`` (P = 16) divide. Weights are drawn with a
large ``initializer_range`` and a random ``shapley_bias`` so that values are O(1): with the
default 0.02 every head output is ~1e-2 and a 1e-5 tolerance would compare near-zeros.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    ConvNextConfig,
    DeiTConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    ResNetConfig,
    SwinConfig,
    ViTConfig,
)

import hf_shapley

FAMILIES = ("vit", "deit", "dinov2", "dinov2_with_registers")
PIXEL_FAMILIES = ("resnet", "convnext", "swin")
NUM_LABELS = 3
INIT_RANGE = 0.2
_TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    initializer_range=INIT_RANGE,
)
_CONFIG_CLASSES = {
    "vit": (ViTConfig, {}),
    "deit": (DeiTConfig, {}),
    "dinov2": (Dinov2Config, {}),
    "dinov2_with_registers": (Dinov2WithRegistersConfig, {"num_register_tokens": 2}),
}


# Pixel-baseline families: 32 px -> a 4 x 4 final grid. ConvNeXt's layer scale starts at 1 (not
# 1e-6) so that its blocks matter; Swin without drop path so that training-mode passes are
# deterministic.
_PIXEL_CONFIGS = {
    "resnet": (
        ResNetConfig,
        dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    ),
    "convnext": (
        ConvNextConfig,
        dict(
            image_size=32,
            num_stages=2,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_scale_init_value=1.0,
            initializer_range=INIT_RANGE,
        ),
    ),
    "swin": (
        SwinConfig,
        dict(
            image_size=32,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=4,
            drop_path_rate=0.0,
            initializer_range=INIT_RANGE,
        ),
    ),
}


def tiny_backbone_config(family: str, **overrides):
    if family in _PIXEL_CONFIGS:
        config_class, kwargs = _PIXEL_CONFIGS[family]
        return config_class(**{**kwargs, **overrides})
    config_class, extra = _CONFIG_CLASSES[family]
    return config_class(**{**_TINY, **extra, **overrides})


def tiny_shapley_model(
    family: str,
    players_grid=(4, 4),
    prediction_mode: str = "shapley_sum",
    seed: int = 0,
    **config_kwargs,
) -> hf_shapley.ShapleyForImageClassification:
    """A fresh model in eval mode with O(1) random weights (deterministic in ``seed``)."""
    torch.manual_seed(seed)
    if family in _PIXEL_CONFIGS:
        config_kwargs.setdefault("image_size", 32)  # ResNet configs have no image size
    config = hf_shapley.ShapleyConfig(
        backbone_config=tiny_backbone_config(family),
        num_labels=NUM_LABELS,
        players_grid=players_grid,
        prediction_mode=prediction_mode,
        initializer_range=INIT_RANGE,
        **config_kwargs,
    )
    model = hf_shapley.ShapleyForImageClassification(config)
    with torch.no_grad():
        model.shapley_bias.normal_()
        if model.classifier is not None:
            model.classifier.bias.normal_()
    return model.eval()


def assert_reloads_identically(model, pixel_values, tmp_path, phi: torch.Tensor):
    """Saved and reloaded, ``model`` keeps what its Shapley head reads and how wide it is, and
    gives ``phi`` again, bit for bit."""
    model.save_pretrained(tmp_path)
    again = hf_shapley.ShapleyForImageClassification.from_pretrained(tmp_path).eval()
    for option in ("head_reads_hidden_states", "head_reads_attention", "head_width"):
        assert getattr(again.config, option) == getattr(model.config, option)
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values).shapley_values, phi, rtol=0, atol=0)


@pytest.fixture(scope="session")
def make_backbone_config():
    """``make_backbone_config(family, **overrides)`` -> a tiny backbone config."""
    return tiny_backbone_config


@pytest.fixture(scope="session")
def make_model():
    """``make_model(family, players_grid=(4, 4), prediction_mode=..., **config_kwargs)``."""
    return tiny_shapley_model


@pytest.fixture(scope="session", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session", params=PIXEL_FAMILIES)
def pixel_family(request) -> str:
    return request.param


@pytest.fixture
def pixel_values() -> torch.Tensor:
    """Three 32 x 32 RGB images (B = 3), fixed."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1234))


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for tiny models: on a small shared CPU, extra threads spin-wait
    (measured here under load: 100x slower forwards with 2 threads than with 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _load_script(folder: str, module_name: str, name: str):
    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_example_script(name: str):
    """Import ``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    return _load_script("examples", f"hf_shapley_example_{name}", name)


def load_benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package).
    Its folder goes on ``sys.path``, as running the script puts it, for the benchmarks it
    imports."""
    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)
    return _load_script("benchmarks", f"hf_shapley_benchmark_{name}", name)


# fp32 agreement of two computations of the same quantity, up to summation order.
RTOL = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    """fp32 agreement up to summation order: |a - e| <= rtol * max(1, max |e|)."""
    scale = max(1.0, expected.detach().abs().max().item())
    torch.testing.assert_close(
        actual.detach().float(), expected.detach().float(), rtol=rtol, atol=rtol * scale
    )


@pytest.fixture(scope="module")
def get_model(make_model):
    """Cached eval-mode models keyed by (family, mode, grid). Tests must not mutate them."""
    cache = {}

    def get(family, mode="shapley_sum", grid=(4, 4)):
        key = (family, mode, tuple(grid))
        if key not in cache:
            cache[key] = make_model(family, players_grid=grid, prediction_mode=mode)
        return cache[key]

    return get


# --------------------------------------------------------------------------------------
# Tiny CLIP dual encoders (ShapleyCLIPModel)
# --------------------------------------------------------------------------------------

CLIP_VOCAB = 64
CLIP_CONTEXT = 12  # the text encoder's max_position_embeddings
CLIP_EOS = CLIP_VOCAB - 1


def tiny_clip_config(**overrides):
    """A real CLIPConfig: 32 px images in 8 px patches (a 4 x 4 token grid), width 32, 2 layers
    per tower, 16-dim embeddings; a 64-token vocabulary whose last id is the end of text."""
    from transformers import CLIPConfig

    tower = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    text = dict(
        tower,
        vocab_size=CLIP_VOCAB,
        max_position_embeddings=CLIP_CONTEXT,
        eos_token_id=CLIP_EOS,
        bos_token_id=CLIP_EOS - 1,
        pad_token_id=0,
    )
    vision = dict(tower, image_size=32, patch_size=8, initializer_range=INIT_RANGE)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, **overrides)


def caption_clip_config(context: int, image_size: int = 32, patch_size: int = 8):
    """:func:`tiny_clip_config` for the built-in captions' tokenizer: its vocabulary and its
    start- and end-of-text ids, a text context of ``context`` tokens; returns (config,
    tokenizer)."""
    from hf_shapley.data import shapes_caption_tokenizer

    tokenizer = shapes_caption_tokenizer()
    config = tiny_clip_config()
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.max_position_embeddings = context
    config.vision_config.image_size, config.vision_config.patch_size = image_size, patch_size
    return config, tokenizer


def random_texts(num_texts: int, seed: int, max_length: int = 8):
    """(T, L) token ids and attention mask of random texts of random lengths (2..max_length),
    each ending in the end-of-text token, right-padded with 0."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max_length + 1, (num_texts,), generator=gen)
    width = int(lengths.max())
    ids = torch.zeros(num_texts, width, dtype=torch.long)
    mask = torch.zeros(num_texts, width, dtype=torch.long)
    for t, n in enumerate(lengths.tolist()):
        ids[t, : n - 1] = torch.randint(1, CLIP_EOS - 1, (n - 1,), generator=gen)
        ids[t, n - 1] = CLIP_EOS
        mask[t, :n] = 1
    return ids, mask


def tiny_shapley_clip(players_grid=(4, 4), seed: int = 0, **config_kwargs):
    """A ShapleyCLIPModel around a fresh tiny CLIPModel, in eval mode, with a small head whose
    weights are O(1) (``initializer_range`` of the conftest)."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    clip = CLIPModel(tiny_clip_config()).eval()
    config_kwargs = {
        "head_hidden_size": 32,
        "head_num_layers": 1,
        "initializer_range": INIT_RANGE,
        **config_kwargs,
    }
    model = hf_shapley.ShapleyCLIPModel.from_clip(clip, players_grid=players_grid, **config_kwargs)
    return model.eval(), clip
