"""examples/train_clip.py on the user's road: a pretrained CLIP from a local directory (the code
path of a Hub download), explained on the user's own caption folder. CLIP stays frozen and its
scores bit-identical; faithfulness is reported on captions and on label prompts it never saw;
bad input stops the run before training with a message that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

import hf_shapley
from conftest import caption_clip_config, load_example_script
from hf_shapley.data import (
    load_caption_folder,
    load_shapes_caption_dataset,
    save_caption_folder,
)
from hf_shapley.evaluation import exact_model_shapley_values

pytestmark = pytest.mark.usefixtures("single_thread")


def write_clip(path, image_size: int, patch_size: int) -> None:
    """A pretrained-CLIP directory: weights, config, tokenizer and image processor."""
    config, tokenizer = caption_clip_config(
        context=40, image_size=image_size, patch_size=patch_size
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(path)


def write_caption_folder(path, count: int) -> None:
    """Built-in shapes saved as a user keeps them, captions under the user's own field name."""
    data = load_shapes_caption_dataset(count, 1, image_size=32)["train"]
    save_caption_folder(data.rename_column("caption", "description"), path, "description")


def run_script(out, clip, data, *extra):
    script = load_example_script("train_clip")
    return script.main(
        [
            "--clip_model", str(clip), "--train_dir", str(data),
            "--caption_column", "description", "--head_hidden_size", "32",
            "--head_num_layers", "1", "--explainer_epochs", "1",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
            "--warmup_steps", "0", "--logging_steps", "2", "--disable_tqdm", "True",
            "--output_dir", str(out), *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("captions")
    write_caption_folder(path, 64)
    return path


def test_a_pretrained_clip_on_a_7x7_grid_stays_bit_identical(tmp_path, folder):
    clip = tmp_path / "clip"
    write_clip(clip, image_size=56, patch_size=8)  # the ViT-B/32 layout at 224 px: 7 x 7
    metrics = run_script(tmp_path / "out", clip, folder, "--players_grid", "7", "7")
    assert metrics["clip_trained"] is False
    assert metrics["scores_identical_to_clip"] is True
    # P = 49: no exact enumeration; a KernelSHAP truth that states its own error, and agreement
    # only against it when that error is within the tolerance.
    for report in (metrics["faithfulness"], metrics["faithfulness"]["label_prompts"]):
        assert report["truth"].startswith("KernelSHAP") and report["num_images"] == 4
        assert report["truth_converged"] == (report["truth_estimated_error"] <= 0.1)
        assert ("pooled_relative_error" in report) == report["truth_converged"]
        assert ("agreement_withheld" in report) != report["truth_converged"]
    assert 0 <= metrics["zero_shot_accuracy"] <= 1
    # The saved CLIP weights are the checkpoint's, bit for bit.
    saved = load_file(tmp_path / "out" / "model.safetensors")
    original = load_file(clip / "model.safetensors")
    for name, tensor in original.items():
        assert torch.equal(saved[f"clip.{name}"], tensor), name
    model = hf_shapley.ShapleyCLIPModel.from_pretrained(tmp_path / "out")
    assert model.num_players == 49 and model.config.train_clip is False


def test_faithfulness_on_captions_and_label_prompts_never_trained_on(tmp_path, folder):
    clip = tmp_path / "clip"
    write_clip(clip, image_size=32, patch_size=8)
    # A head that reads the final tokens only (the default reads every depth).
    metrics = run_script(
        tmp_path / "out", clip, folder, "--players_grid", "4", "4",
        "--head_reads_hidden_states", "false", "--num_retrieval_images", "4",
    )  # fmt: skip
    assert metrics["scores_identical_to_clip"] is True
    report = metrics["faithfulness"]
    assert report["truth"].startswith("exact") and report["num_images"] == 4
    for part in (report, report["label_prompts"]):
        for key in ("pearson_r", "other_texts_pearson_r"):
            low, high = part[f"{key}_ci95"]
            assert -1 <= low <= part[key] <= high <= 1
        assert part["pooled_relative_error"] >= 0
    # The label prompts are other texts than the captions: other agreement figures.
    assert report["label_prompts"]["pearson_r"] != report["pearson_r"]
    # Deletion R@1 among the held-out captions: with nothing removed phi, random and the truth
    # order agree (the same full images).
    recall = metrics["deletion_recall_at_1"]
    assert recall["ks"] == [0, 1, 2, 4, 8] and recall["num_images"] == 4
    assert recall["phi"][0] == recall["random"][0] == recall["truth"][0]
    assert all(0 <= r <= 1 for r in recall["phi"] + recall["random"] + recall["truth"])
    # The truth order is that of the exact values of each image's game for its own caption:
    # recomputed from an enumeration here, and equal to phi's order when given phi's vectors.
    script = load_example_script("train_clip")
    pairs = script.PairArguments(train_dir=str(folder), caption_column="description")
    _, test = script.load_pairs(pairs, 0)
    model = hf_shapley.ShapleyCLIPModel.from_pretrained(tmp_path / "out").eval()
    processor = CLIPImageProcessor.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    pixels = script.evaluation_pixels(model, script.evaluation_pairs(test, 4), processor)
    exact = exact_model_shapley_values(model, pixels)
    again = script.deletion_recall(model, test, processor, tokenizer, 4, exact)
    assert again == recall
    with torch.no_grad():
        phi_vectors = model.explain_image(pixels).image_shapley_vectors.double()
    own = script.deletion_recall(model, test, processor, tokenizer, 4, phi_vectors)
    assert own["truth"] == own["phi"]


def test_a_caption_folder_is_checked(tmp_path):
    source = load_shapes_caption_dataset(6, 1, image_size=32)["train"]
    source = source.rename_column("caption", "description")
    save_caption_folder(source, tmp_path, "description")
    data = load_caption_folder(tmp_path, "description")
    assert len(data) == 6 and data.features["label"].names == sorted(
        {p.name for p in tmp_path.iterdir() if p.is_dir()}
    )
    # Saved and read back: each image (named by its index) with its caption and class.
    names = source.features["label"].names
    paths = data.cast_column("image", datasets.Image(decode=False))["image"]
    for read, stored in zip(data, paths, strict=True):
        saved = source[int(Path(stored["path"]).stem)]
        assert read["description"] == saved["description"]
        label = data.features["label"].names[read["label"]]
        assert label == names[saved["label"]].replace(" ", "_")
        assert read["image"].tobytes() == saved["image"].tobytes()
    with pytest.raises(ValueError, match="exists already"):
        save_caption_folder(source, tmp_path, "description")
    with pytest.raises(ValueError, match="no column 'text'"):
        save_caption_folder(source, tmp_path / "other", "text")
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(ValueError, match="1 image.* have no caption in metadata.jsonl"):
        load_caption_folder(tmp_path, "description")
    first = json.loads(lines[0])
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join([json.dumps({**first, "description": " "}), *lines[1:]]) + "\n"
    )
    with pytest.raises(ValueError, match="line 1 .* no 'description' text"):
        load_caption_folder(tmp_path, "description")
    (tmp_path / first["file_name"]).write_bytes(b"not an image")
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="is not a readable image"):
        load_caption_folder(tmp_path, "description")
    with pytest.raises(ValueError, match="has no metadata.jsonl"):
        load_caption_folder(tmp_path / first["file_name"].split("/")[0])


def test_bad_input_stops_before_training(tmp_path, folder):
    from transformers import SiglipConfig, SiglipModel

    siglip = tmp_path / "siglip"
    tower = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    SiglipModel(
        SiglipConfig(text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8))
    ).save_pretrained(siglip)
    with pytest.raises(SystemExit, match="Cannot explain .*siglip.*SigLIP"):
        run_script(tmp_path / "out", siglip, folder)
    clip = tmp_path / "clip"
    write_clip(clip, image_size=56, patch_size=8)
    with pytest.raises(SystemExit, match="players_grid"):
        run_script(tmp_path / "out", clip, folder, "--players_grid", "4", "4")
    long = tmp_path / "long"
    write_caption_folder(long, 4)
    lines = (long / "metadata.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["description"] = " ".join(["red"] * 60)
    (long / "metadata.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(SystemExit, match="62 tokens, beyond the text encoder's context of 40"):
        run_script(tmp_path / "out", clip, long, "--players_grid", "7", "7")


def write_caption_parquet(path, count: int) -> None:
    """Built-in pairs as a Hub data set repository keeps them: parquet files per split, with
    the user's own column names."""
    data = load_shapes_caption_dataset(count, 16, image_size=32)
    for split, part in data.items():
        part = part.rename_columns({"image": "picture", "caption": "text"})
        (path / "data").mkdir(parents=True, exist_ok=True)
        part.to_parquet(str(path / "data" / f"{split}-00000-of-00001.parquet"))


def test_a_dataset_with_image_and_text_columns(tmp_path):
    """``--dataset_name`` reads a data set the way a Hub download does (datasets.load_dataset
    on a repository of parquet files); its columns are named by the user."""
    clip, data = tmp_path / "clip", tmp_path / "pairs"
    write_clip(clip, image_size=32, patch_size=8)
    write_caption_parquet(data, 48)
    script = load_example_script("train_clip")
    common = [
        "--clip_model", str(clip), "--dataset_name", str(data), "--players_grid", "2", "2",
        "--head_hidden_size", "32", "--head_num_layers", "1", "--explainer_epochs", "1",
        "--per_device_train_batch_size", "16", "--disable_tqdm", "True",
        "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    metrics = script.main([*common, "--image_column", "picture", "--caption_column", "text"])
    assert metrics["scores_identical_to_clip"] is True
    # The test split's 16 pairs are the held-out ones: the gallery and the truth come from it.
    assert metrics["deletion_recall_at_1"]["num_images"] == 16
    assert metrics["faithfulness"]["num_images"] == 4
    assert 0 <= metrics["zero_shot_accuracy"] <= 1  # the label column carries the classes
    with pytest.raises(SystemExit, match="no column 'caption' \\(--caption_column\\)"):
        script.main([*common, "--image_column", "picture"])
    with pytest.raises(SystemExit, match="'text' holds .* not images"):
        script.main([*common, "--image_column", "text", "--caption_column", "text"])
    with pytest.raises(SystemExit, match="not both"):
        script.main([*common, "--train_dir", str(tmp_path)])
    import datasets

    train = datasets.load_dataset(str(data), split="train")
    blank = train.map(lambda row, i: {"text": "" if i == 3 else row["text"]}, with_indices=True)
    blank.to_parquet(str(data / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(SystemExit, match="1 of 48 rows have no 'text' text \\(e.g. row 3\\)"):
        script.main([*common, "--image_column", "picture", "--caption_column", "text"])
