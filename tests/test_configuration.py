"""ShapleyConfig's objective settings: one declaration (field + metadata) that the table, the
validation, the docstring and the remote-code file agree with."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hf_shapley.models.configuration_shapley import (
    OBJECTIVE_SETTINGS,
    ObjectiveSetting,
    ShapleyConfig,
)

# Names and defaults of the objective settings before the table existed: saved configs rely on
# them, so they must not change.
DEFAULTS = {
    "num_shapley_coalitions": 8,
    "num_distill_coalitions": 2,
    "shapley_loss_weight": 1.0,
    "distill_loss_weight": 1.0,
    "vote_consistency_weight": 0.0,  # added later, off by default: old configs train as before
    "loss_warmup_steps": 0,
    "shapley_stop_gradient": True,
    "shapley_loss_normalization": "per_image",
    "center_logits": False,
    "explained_classes": "all",
    "num_explained_classes": None,
    "reuse_shapley_coalitions": False,  # added later, off by default: old configs train as before
    "frozen_game_dtype": "float32",  # added later, fp32 by default: old configs train as before
    "coalition_batch_size": 64,
    "coalition_seed": 0,
}

# The objective part of a config.json written before the table existed (a tiny ViT, with
# overrides; distill_loss_weight was given as the int 2 and saved as such).
SAVED_BEFORE = {
    "model_type": "shapley",
    "backbone_config": {
        "model_type": "vit",
        "hidden_size": 32,
        "image_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 1,
        "patch_size": 8,
    },
    "center_logits": True,
    "center_votes": None,
    "classifier_in_features": None,
    "coalition_batch_size": 64,
    "coalition_seed": 7,
    "distill_loss_weight": 2,
    "explained_classes": "label",
    "head_dropout": 0.0,
    "head_hidden_size": 0,
    "hf_shapley_version": "0.1.0.dev0",
    "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
    "image_size": None,
    "initializer_range": 0.02,
    "loss_warmup_steps": 3,
    "num_distill_coalitions": 2,
    "num_explained_classes": 2,
    "num_shapley_coalitions": 4,
    "pixel_baseline": 0.0,
    "players_grid": [2, 2],
    "prediction_mode": "shapley_sum",
    "shapley_loss_normalization": "per_image",
    "shapley_loss_weight": 0.5,
    "shapley_stop_gradient": True,
    "train_backbone": True,
    "transformers_version": "5.24.0",
}


def test_table_is_the_config_fields():
    fields = {f.name: f for f in dataclasses.fields(ShapleyConfig)}
    assert [s.name for s in OBJECTIVE_SETTINGS] == list(DEFAULTS)
    config = ShapleyConfig()
    for setting in OBJECTIVE_SETTINGS:
        f = fields[setting.name]
        assert isinstance(setting, ObjectiveSetting)
        assert setting.default == f.default == DEFAULTS[setting.name]
        assert getattr(config, setting.name) == setting.default
        assert setting.type in (int, float, bool, str)  # a type, not an annotation string
        assert f.type == (setting.type | None if setting.optional else setting.type)
        assert setting.help and "\n" not in setting.help
    # Settings and only settings carry the metadata.
    declared = {n for n, f in fields.items() if "hf_shapley_objective" in f.metadata}
    assert declared == set(DEFAULTS)
    assert [s.name for s in OBJECTIVE_SETTINGS if s.optional] == ["num_explained_classes"]


def test_config_saved_before_the_table_loads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SAVED_BEFORE))
    config = ShapleyConfig.from_pretrained(tmp_path)
    for name in DEFAULTS:
        # A setting added after the file was written takes its default, which keeps the
        # objective the file was trained with.
        assert getattr(config, name) == SAVED_BEFORE.get(name, DEFAULTS[name]), name
    assert config.distill_loss_weight == 2 and config.players_grid == [2, 2]
    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    expected = {n: SAVED_BEFORE.get(n, DEFAULTS[n]) for n in DEFAULTS}
    assert {name: again[name] for name in DEFAULTS} == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"num_shapley_coalitions": 3},
            "num_shapley_coalitions must be a non-negative even int (coalitions come in "
            "complementary pairs); got 3.",
        ),
        ({"num_distill_coalitions": -1}, "num_distill_coalitions must be a non-negative int"),
        ({"shapley_loss_weight": float("nan")}, "shapley_loss_weight must be a finite number >= 0"),
        ({"distill_loss_weight": -0.5}, "distill_loss_weight must be a finite number >= 0"),
        ({"distill_loss_weight": True}, "distill_loss_weight must be a finite number >= 0"),
        ({"loss_warmup_steps": 1.5}, "loss_warmup_steps must be a non-negative int"),
        ({"shapley_stop_gradient": "no"}, "shapley_stop_gradient must be True or False"),
        (
            {"shapley_loss_normalization": "batch"},
            "shapley_loss_normalization must be one of ('per_image', 'none'); got 'batch'.",
        ),
        ({"center_logits": 0}, "center_logits must be True or False; got 0."),
        ({"explained_classes": "random"}, "explained_classes must be one of ('all', 'label'"),
        ({"num_explained_classes": 0}, "num_explained_classes must be a positive int or None"),
        ({"coalition_batch_size": 0}, "coalition_batch_size must be a positive int; got 0."),
        ({"coalition_seed": "1"}, "coalition_seed must be an int; got '1'."),
        (
            {"explained_classes": "top"},
            "explained_classes='top' needs num_explained_classes (a positive int).",
        ),
    ],
)
def test_config_validates_each_setting_by_its_rule(kwargs, message):
    with pytest.raises(ValueError) as error:
        ShapleyConfig(**kwargs)
    assert str(error.value).startswith(message)


def test_valid_values_pass():
    ShapleyConfig(
        num_shapley_coalitions=0,
        shapley_loss_weight=0,  # ints are numbers
        coalition_seed=-3,
        explained_classes="top",
        num_explained_classes=1,
        shapley_stop_gradient=False,
    )
    # A count left set while all classes are explained is unused, not an error.
    ShapleyConfig(explained_classes="all", num_explained_classes=4)


def test_setting_rules_in_words():
    by_name = {s.name: s for s in OBJECTIVE_SETTINGS}
    assert by_name["num_shapley_coalitions"].requirement() == "a non-negative even int"
    assert by_name["num_explained_classes"].requirement() == "a positive int or None"
    assert by_name["shapley_loss_weight"].requirement() == "a finite number >= 0"
    assert by_name["explained_classes"].card_value("top") == "`top`"
    assert by_name["center_logits"].card_value(True) == "True"
    config = ShapleyConfig(explained_classes="label", num_explained_classes=2)
    assert by_name["num_explained_classes"].is_used(config)
    assert not by_name["num_explained_classes"].is_used(ShapleyConfig())


def test_docstring_documents_every_setting_from_the_table():
    doc = ShapleyConfig.__doc__
    assert "{objective_settings}" not in doc
    for setting in OBJECTIVE_SETTINGS:
        entry = setting.docstring()
        assert entry in doc
        assert entry.lstrip().startswith(f"{setting.name} (`{setting.type.__name__}`, *optional*")
        assert " ".join(setting.help.split()[:4]) in " ".join(entry.split())
    assert "num_shapley_coalitions (`int`, *optional*, defaults to 8):" in doc
    assert 'shapley_loss_normalization (`str`, *optional*, defaults to `"per_image"`):' in doc
    assert "shapley_stop_gradient (`bool`, *optional*, defaults to `True`):" in doc
