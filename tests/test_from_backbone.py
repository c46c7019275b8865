"""Tests for ShapleyForImageClassification.from_backbone.

Sources: a backbone config (random weights), a bare backbone object, a fine-tuned classifier
object (which defaults to ``prediction_mode="backbone_head"`` and, with
``train_backbone=False``, must keep its predictions bit-identical), and a local directory with
an image processor. Errors must say what is wrong.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoImageProcessor,
    BertConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2ForImageClassification,
    Dinov2WithRegistersForImageClassification,
    RegNetConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
)

from hf_shapley import ShapleyConfig, ShapleyForImageClassification

pytestmark = pytest.mark.usefixtures("single_thread")

ID2LABEL = {0: "cat", 1: "dog", 2: "bird"}
CLASSIFIERS = {
    "vit": ViTForImageClassification,
    "deit": DeiTForImageClassification,
    "dinov2": Dinov2ForImageClassification,
    "dinov2_with_registers": Dinov2WithRegistersForImageClassification,
}
SUPPORTED = (
    r"Supported families: ViT \(vit\), DeiT \(deit\), DINOv2 \(dinov2\), "
    r"DINOv2 with registers \(dinov2_with_registers\), ResNet \(resnet\), ConvNeXt \(convnext\), "
    r"Swin \(swin\)"
)


def close(actual, expected, rtol=1e-5):
    """fp32 agreement up to summation order: |a - e| <= rtol * max(1, max |e|)."""
    scale = max(1.0, expected.detach().abs().max().item())
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=rtol, atol=rtol * scale)


def make_classifier(make_backbone_config, family, seed=0):
    torch.manual_seed(seed)
    config = make_backbone_config(
        family, id2label=ID2LABEL, label2id={"cat": 0, "dog": 1, "bird": 2}
    )
    classifier = CLASSIFIERS[family](config).eval()
    with torch.no_grad():
        classifier.classifier.bias.normal_()
    return classifier


@pytest.fixture(scope="module")
def vit_classifier(make_backbone_config):
    return make_classifier(make_backbone_config, "vit")


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def test_from_config_gives_random_soft_voting_model(make_backbone_config, pixel_values):
    model = ShapleyForImageClassification.from_backbone(
        make_backbone_config("deit"), num_labels=4, players_grid=(2, 2)
    ).eval()
    assert model.config.prediction_mode == "shapley_sum"
    assert model.config.backbone_config.model_type == "deit"
    assert model.config.players_grid == [2, 2] and model.num_players == 4
    assert model.classifier is None and model.image_processor is None
    out = model(pixel_values)
    assert out.logits.shape == (3, 4) and out.shapley_values.shape == (3, 4, 4)
    with pytest.raises(ValueError, match=r"num_labels \(or id2label\) is required"):
        ShapleyForImageClassification.from_backbone(make_backbone_config("vit"))


def test_from_bare_backbone_keeps_its_weights(make_backbone_config, pixel_values):
    torch.manual_seed(3)
    backbone = ViTModel(make_backbone_config("vit"))  # with a pooler, which is dropped
    model = ShapleyForImageClassification.from_backbone(backbone, num_labels=2).eval()
    assert model.config.prediction_mode == "shapley_sum"
    assert model.config.num_labels == 2
    theirs = backbone.state_dict()
    ours = model.backbone.state_dict()
    assert not any(key.startswith("pooler.") for key in ours)
    assert set(ours) == {key for key in theirs if not key.startswith("pooler.")}
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    # Copied, not shared: the wrapped model trains without touching the original.
    assert ours["layers.0.attention.q_proj.weight"].data_ptr() != (
        theirs["layers.0.attention.q_proj.weight"].data_ptr()
    )
    # The patch tokens the model reads are the backbone's own (up to the dropped pooler).
    with torch.no_grad():
        hidden = backbone(pixel_values).last_hidden_state
        states = model.adapter.encode_tokens(
            model.backbone, model.adapter.embed(model.backbone, pixel_values), None
        )
    assert torch.equal(states, hidden)


@pytest.mark.parametrize("family", list(CLASSIFIERS))
def test_frozen_classifier_predictions_are_bit_identical(
    make_backbone_config, family, pixel_values
):
    classifier = make_classifier(make_backbone_config, family)
    model = ShapleyForImageClassification.from_backbone(
        classifier, train_backbone=False, players_grid=(2, 2)
    ).eval()
    assert model.config.prediction_mode == "backbone_head"
    assert model.config.id2label == ID2LABEL
    assert model.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    assert model.config.num_labels == 3
    with torch.no_grad():
        reference = classifier(pixel_values).logits
        out = model(pixel_values)
    assert torch.equal(out.logits, reference)

    # Efficiency against the value function, whose full coalition is the classifier itself.
    B, P = pixel_values.shape[0], model.num_players
    with torch.no_grad():
        v_all = model(pixel_values, coalition=torch.ones(B, P, dtype=torch.bool)).logits
        v_empty = model(pixel_values, coalition=torch.zeros(B, P, dtype=torch.bool)).logits
    close(v_all, reference)
    close(v_empty, out.base_values)
    close(out.shapley_values.sum(1), v_all - v_empty)
    close(out.logits, out.base_values + out.shapley_values.sum(1))

    # Only the Shapley head trains; every trainable parameter gets a gradient (DDP).
    head = {f"shapley_head.{name}" for name, _ in model.shapley_head.named_parameters()}
    assert {"shapley_head.out_proj.weight", "shapley_head.dense.weight"} <= head  # the recipe's MLP
    assert trainable(model) == head
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.classifier.parameters())
    model.train()
    step = model(pixel_values, labels=torch.tensor([0, 1, 2]), example_index=torch.arange(3))
    step.loss.backward()
    assert {name for name, p in model.named_parameters() if p.grad is not None} == trainable(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(pixel_values)
    assert torch.equal(after.logits, reference)
    assert not torch.equal(after.shapley_values, out.shapley_values)
    close(after.logits, after.base_values + after.shapley_values.sum(1))


def test_frozen_state_and_bit_identity_survive_save_and_load(
    vit_classifier, tmp_path, pixel_values
):
    model = ShapleyForImageClassification.from_backbone(vit_classifier, train_backbone=False)
    model.save_pretrained(tmp_path)
    loaded = ShapleyForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.train_backbone is False
    head = {f"shapley_head.{n}" for n, _ in model.shapley_head.named_parameters()}
    assert trainable(loaded) == trainable(model) == head
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values).logits, vit_classifier(pixel_values).logits)


def test_trainable_classifier_backbone_head(vit_classifier, pixel_values):
    model = ShapleyForImageClassification.from_backbone(
        vit_classifier, players_grid=(2, 2), train_backbone=True
    )
    assert model.config.prediction_mode == "backbone_head" and model.config.train_backbone
    assert "classifier.weight" in trainable(model)
    assert "backbone.layers.0.attention.q_proj.weight" in trainable(model)
    assert "shapley_bias" not in trainable(model)  # unused in backbone_head mode
    with torch.no_grad():
        assert torch.equal(model.eval()(pixel_values).logits, vit_classifier(pixel_values).logits)


def test_classifier_wrapped_for_soft_voting_keeps_labels(vit_classifier, pixel_values):
    model = ShapleyForImageClassification.from_backbone(
        vit_classifier, prediction_mode="shapley_sum", players_grid=(2, 2)
    ).eval()
    assert model.config.prediction_mode == "shapley_sum"
    assert model.classifier is None
    assert model.config.id2label == ID2LABEL
    assert torch.equal(
        model.backbone.state_dict()["layernorm.weight"], vit_classifier.vit.layernorm.weight
    )


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, vit_classifier):
    path = tmp_path_factory.mktemp("vit_classifier")
    vit_classifier.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_from_local_directory_carries_the_image_processor(
    classifier_dir, vit_classifier, tmp_path, pixel_values
):
    model = ShapleyForImageClassification.from_backbone(classifier_dir, train_backbone=False)
    assert model.config.prediction_mode == "backbone_head"
    assert model.config.id2label == ID2LABEL
    assert model.image_processor is not None
    assert (model.image_processor.size["height"], model.image_processor.size["width"]) == (32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(pixel_values).logits, vit_classifier(pixel_values).logits)

    model.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert (processor.size["height"], processor.size["width"]) == (32, 32)


def test_from_local_directory_of_a_bare_backbone(make_backbone_config, tmp_path):
    torch.manual_seed(4)
    backbone = ViTModel(make_backbone_config("vit"), add_pooling_layer=False)
    backbone.save_pretrained(tmp_path)
    model = ShapleyForImageClassification.from_backbone(tmp_path, num_labels=5)
    assert model.config.prediction_mode == "shapley_sum" and model.config.num_labels == 5
    assert model.image_processor is None
    for key, value in backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_image_processor_of_the_wrong_size_is_rejected(vit_classifier, tmp_path):
    vit_classifier.save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"image processor resizes to 224 x 224 but the backbone expects 32 x 32"
    ):
        ShapleyForImageClassification.from_backbone(tmp_path)


def test_num_labels_mismatch_with_a_classifier(vit_classifier):
    with pytest.raises(ValueError, match=r"classifier has 3 labels .*num_labels=5"):
        ShapleyForImageClassification.from_backbone(vit_classifier, num_labels=5)
    with pytest.raises(ValueError, match=r"keeps its own labels.*lacks the classifier's labels"):
        ShapleyForImageClassification.from_backbone(vit_classifier, id2label={0: "a", 1: "b"})


def test_backbone_head_needs_a_classifier(make_backbone_config):
    backbone = ViTModel(make_backbone_config("vit"), add_pooling_layer=False)
    with pytest.raises(ValueError, match=r"backbone_head.*a bare backbone has none"):
        ShapleyForImageClassification.from_backbone(
            backbone, num_labels=3, prediction_mode="backbone_head"
        )


@pytest.mark.parametrize(
    "config",
    [
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4),
        RegNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8),
    ],
    ids=["bert", "regnet"],
)
def test_unsupported_family_names_the_supported_ones(config):
    match = rf"model_type '{config.model_type}' is not supported.*{SUPPORTED}"
    with pytest.raises(ValueError, match=match):
        ShapleyForImageClassification.from_backbone(config, num_labels=3)
    with pytest.raises(ValueError, match=SUPPORTED):
        ShapleyForImageClassification(ShapleyConfig(backbone_config=config, num_labels=3))


def test_classifier_without_a_single_linear_head_is_rejected(make_backbone_config):
    teacher = DeiTForImageClassificationWithTeacher(make_backbone_config("deit", num_labels=3))
    with pytest.raises(ValueError, match=r"no single linear `classifier` head.*model\.deit"):
        ShapleyForImageClassification.from_backbone(teacher)


def test_source_of_the_wrong_type(pixel_values):
    with pytest.raises(TypeError, match="Hub id or local directory, a PreTrainedConfig"):
        ShapleyForImageClassification.from_backbone(pixel_values, num_labels=3)
