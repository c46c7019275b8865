"""benchmarks/clip_faithfulness.py on two tiny dual encoders trained here by examples/train_clip.py
(2 x 2 players, so that the exact truth is cheap): the report's numbers are checked against
computations made here (R@1 from an argmax of the model's scores, costs from the definitions,
paired differences against the per-method means), and bad options fail naming the option."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import load_benchmark_script, load_example_script

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = [
    "--num_train", "96", "--num_test", "32", "--image_size", "32", "--patch_size", "8",
    "--players_grid", "2", "2", "--hidden_size", "32", "--num_layers", "2",
    "--projection_dim", "16", "--head_hidden_size", "32", "--head_num_layers", "1",
    "--num_train_epochs", "1", "--per_device_train_batch_size", "16",
    "--per_device_eval_batch_size", "16", "--warmup_steps", "0", "--disable_tqdm", "True",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_faithfulness")
    train = load_example_script("train_clip")
    train.main([*TINY, "--explainer_epochs", "1", "--output_dir", str(root / "model")])
    train.main(
        [*TINY, "--explainer_epochs", "0", "--distill_loss_weight", "0",
         "--shapley_loss_weight", "0", "--output_dir", str(root / "plain")]
    )  # fmt: skip
    bench = load_benchmark_script("clip_faithfulness")
    out = root / "report" / "clip_faithfulness"
    result = bench.main(
        [str(root / "model"), "--plain_model_dir", str(root / "plain"), "--num_images", "6",
         "--ks", "1", "2", "--budgets", "20", "--ig_steps", "2", "--num_retrieval", "12",
         "--out", str(out)]
    )  # fmt: skip
    return bench, root, out, result


def test_report_files(run):
    _, _, out, result = run
    saved = json.loads(out.with_suffix(".json").read_text())
    assert json.dumps(saved["methods"]) == json.dumps(result["methods"])  # NaN-safe equality
    text = out.with_suffix(".md").read_text()
    assert "deletion R@1" in text and "plain dual encoder" in text and "**Target**" in text


def test_costs_and_the_target_set(run):
    bench, _, _, result = run
    costs = {name: m["cost"] for name, m in result["methods"].items()}
    P = result["num_players"]
    assert P == 4
    assert costs[bench.PHI] == 1 and costs["random"] == 0 and costs["attention rollout"] == 1
    assert costs["Grad-CAM"] == 3 and costs["Integrated Gradients (2 steps)"] == 6
    assert costs["leave-one-out"] == P + 1
    assert costs["KernelSHAP (20 evals)"] == 10  # packed pairs: half a pass per coalition
    assert costs[bench.EXACT] == 2 ** (P - 1)
    expected = {n for n, c in costs.items() if c <= 10 and n not in (bench.PHI, bench.EXACT)}
    assert set(result["target"]) == expected
    assert result["target_met"] == all(all(v.values()) for v in result["target"].values())


@torch.no_grad()
def test_full_retrieval_matches_an_argmax_of_the_model(run):
    bench, root, _, result = run
    model, processor, tokenizer = bench.load(str(root / "model"))
    pixels, _, _, tokens = bench.shapes_batch(6, 32, 1, processor, tokenizer)
    logits = model(
        pixels, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask
    ).logits_per_image
    i2t = sum(int(logits[i].argmax()) == i for i in range(6)) / 6
    t2i = sum(int(logits[:, j].argmax()) == j for j in range(6)) / 6
    assert result["full_retrieval"]["image_to_text"] == pytest.approx(i2t)
    assert result["full_retrieval"]["text_to_image"] == pytest.approx(t2i)
    # k = 0 removes nothing: every method's deletion R@1 curve starts there.
    for curve in result["deletion_recall_at_1"].values():
        assert curve["image_to_text"][0] == pytest.approx(i2t)
        assert curve["text_to_image"][0] == pytest.approx(t2i)


def test_paired_differences_and_agreement(run):
    bench, _, _, result = run
    methods, paired = result["methods"], result["paired_phi_minus_baseline"]
    assert set(paired) == set(methods) - {bench.PHI, bench.EXACT}
    for name, diffs in paired.items():
        for key in ("deletion_auc", "insertion_auc", "deletion_r1_image_to_text"):
            expected = methods[bench.PHI][key] - methods[name][key]
            assert diffs[key]["phi_minus_baseline"] == pytest.approx(expected, abs=1e-9)
            low, high = diffs[key]["ci95"]
            assert low <= diffs[key]["phi_minus_baseline"] + 1e-9
            assert diffs[key]["phi_minus_baseline"] <= high + 1e-9
    for name, m in methods.items():
        if name == bench.EXACT:
            continue
        for text in ("caption", "other caption", "prompt"):
            assert -1 <= m[f"r_{text}"] <= 1
            assert m[f"l2_{text}"] >= 0
    for model_result in result["retrieval"].values():
        assert model_result["num_images"] == 12
        assert 0 <= model_result["image_to_text"] <= 1


@pytest.mark.parametrize(
    "options, message",
    [(["--ks", "4"], "--ks must lie in"), (["--num_images", "1"], "--num_images must be")],
)
def test_bad_options_name_the_option(run, capsys, options, message):
    bench, root, _, _ = run
    with pytest.raises(SystemExit):
        bench.main([str(root / "model"), *options])
    assert message in capsys.readouterr().err
