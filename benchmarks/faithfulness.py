"""Faithfulness benchmark: the self-explaining model's one-pass phi against post-hoc explainers.

Protocol: docs/evaluation.md. Two models of the same backbone and data, at equal optimizer steps:

* the **Shapley model**: the main job's output (``accelerate launch examples/train.py``), a stock
  ViT classifier pretrained with cross-entropy then fine-tuned with the joint objective;
* the **plain classifier**: the same pretrained classifier continued with cross-entropy alone for
  the same number of steps, with the optimizer settings of the Shapley model's fine-tuning (its
  ``training_args.json``; trained here on first use, cached beside the main job's output),
  wrapped with ``from_backbone(..., prediction_mode="backbone_head", train_backbone=False)`` so
  it gets a value function (token removal) with bit-identical predictions.

For every explainer on every model, on the same test images and for each model's predicted class:
insertion and deletion AUC (player level through the model's value function, and pixel level with
a 0 baseline in normalized space, RISE-style), AOPC on the player-level deletion curve,
sensitivity-n (mean over subset sizes), pointing game and AUROC against the object masks, and
agreement with the true Shapley values of that model's game (exact, P = 16), each with its cost in
forward-pass equivalents. Then the KernelSHAP budget that first matches phi's agreement with the
truth, at P = 16 (the main model) and P = 49 (a model with a 7 x 7 players grid: the main job's
recipe at 112 px, trained on first use; its truth is converged KernelSHAP).

    python benchmarks/faithfulness.py                      # reuses outputs/shapley-vit-shapes
    python benchmarks/faithfulness.py --device cuda --num-images 256
    python benchmarks/faithfulness.py --dataset_name beans --image_column image --label_column labels \\
        --model-dir outputs/vit-beans --plain-dir outputs/vit-beans-plain --skip-p49

One run explains one model (one training seed); run it once per seed and pool the runs with
``benchmarks/faithfulness_report.py --pool`` (the JSON keeps the per-image areas and shares
for that).

Writes the measurements to ``faithfulness.json`` (everything, the mean curves included) and
``faithfulness.jsonl`` (one line per row) in ``--out-dir`` (default
``benchmarks/results/faithfulness/``), then renders ``faithfulness.md`` and the PNG curves there
from those results with ``benchmarks/faithfulness_report.py`` (which also re-renders them alone).
With trained models the default size takes about 10 minutes on a 2-core CPU. Training on first
use: the plain classifier (``hf_shapley.training.plain_classifier.train_plain_classifier``) ~1-2 minutes,
the P = 49 model ~30 minutes on CPU (``--skip-p49`` leaves that row out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import faithfulness_report  # noqa: E402
from common import pick_device  # noqa: E402

from hf_shapley import ShapleyForImageClassification  # noqa: E402
from hf_shapley.data import load_image_splits  # noqa: E402
from hf_shapley.evaluation import (  # noqa: E402
    AttentionRolloutExplainer,
    GradCamExplainer,
    IntegratedGradientsExplainer,
    KernelShapExplainer,
    LeaveOneOutExplainer,
    RandomExplainer,
    ShapleyValuesExplainer,
    aopc,
    area_under_curve,
    bootstrap_mean_interval,
    centered_class_values,
    coalition_cost,
    interaction_share,
    map_agreement,
    mask_auroc,
    mask_to_players,
    model_coalition_values,
    model_shapley_truth,
    other_classes_agreement,
    pearson_rows,
    pixel_curve,
    player_curve,
    pointing_game,
    pooled_relative_error,
    random_order_auc,
    ranking_share,
    removal_drops,
    sample_removal_subsets,
    sensitivity_n_from_drops,
    wilson_interval,
)
from hf_shapley.evaluation.estimators import kernel_shap, model_game  # noqa: E402
from hf_shapley.models.image_loading import to_rgb  # noqa: E402


# ----------------------------------------------------------------------------- models
def ensure_main_model(model_dir: Path, extra_args: list[str]) -> None:
    if (model_dir / "model.safetensors").is_file():
        return
    print(f"No trained model in {model_dir}: running the main job (examples/train.py).")
    command = [sys.executable, str(REPO / "examples" / "train.py"), "--output_dir", str(model_dir)]
    subprocess.run(command + extra_args, check=True)


def ensure_plain_classifier(model_dir: Path, plain_dir: Path, train_split, args) -> None:
    """Continue the main job's pretrained classifier with cross-entropy for the same steps, with
    the optimizer settings the Shapley model was fine-tuned with (its ``training_args.json``)."""
    if (plain_dir / "model.safetensors").is_file():
        return
    from transformers import AutoImageProcessor, ViTForImageClassification

    from hf_shapley.training.plain_classifier import train_plain_classifier
    from hf_shapley.training.trainer import TRAINING_ARGS_JSON_NAME

    if args.plain_init:
        pretrained = [Path(args.plain_init)]
    else:
        # The main job names the classifier it started from; older output folders hold one.
        metrics_path = model_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        named = metrics.get("pretrained_classifier")
        pretrained = [model_dir / named] if named else []
        pretrained = pretrained or sorted(model_dir.glob("pretrained-classifier-*"))
    if not pretrained:
        raise SystemExit(
            f"No pretrained classifier in {model_dir} to continue; pass --plain-init (the classifier "
            "the Shapley model was fine-tuned from) or --plain-dir (a trained plain classifier)."
        )
    metrics = json.loads((model_dir / "metrics.json").read_text())
    steps = int(metrics["train_steps"])
    shapley_args = json.loads((model_dir / TRAINING_ARGS_JSON_NAME).read_text())
    print(f"Training the plain classifier: {pretrained[0]} + {steps} cross-entropy steps.")
    model = ViTForImageClassification.from_pretrained(pretrained[0])
    train_plain_classifier(
        model,
        train_split,
        image_processor=AutoImageProcessor.from_pretrained(pretrained[0]),
        output_dir=plain_dir,
        max_steps=steps,
        **{
            name: shapley_args[name]
            for name in (
                "per_device_train_batch_size",
                "learning_rate",
                "weight_decay",
                "warmup_steps",
                "lr_scheduler_type",
                "seed",
            )
        },
        logging_steps=50,
        image_column=args.image_column,
        label_column=args.label_column,
        use_cpu=args.device == "cpu",
    )
    (plain_dir / "train_steps.json").write_text(json.dumps({"train_steps": steps}))


def load_models(args, device):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    shapley = ShapleyForImageClassification.from_pretrained(args.model_dir).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_dir)
    classifier = AutoModelForImageClassification.from_pretrained(args.plain_dir).eval()
    plain = ShapleyForImageClassification.from_backbone(
        classifier,
        prediction_mode="backbone_head",
        train_backbone=False,
        players_grid=tuple(shapley.players_grid),
        load_image_processor=False,
    )
    return shapley, plain.to(device).eval(), processor


# ----------------------------------------------------------------------------- data
def load_splits(args, image_size: int, num_test: int):
    """(train, test) of the built-in data (default) or a Hub data set / imagefolder."""
    return load_image_splits(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_dir=args.train_dir,
        validation_dir=args.validation_dir,
        eval_split=args.eval_split,
        num_train=args.num_train,
        num_test=num_test,
        image_size=image_size,
    )


def encode(processor, split, column: str, start: int, stop: int, device) -> torch.Tensor:
    images = [to_rgb(split[i][column]) for i in range(start, min(stop, len(split)))]
    return processor(images, return_tensors="pt")["pixel_values"].to(device)


@torch.no_grad()
def accuracy_of(models: dict, processor, split, args, device) -> dict:
    """Accuracy of each model on the same test images, with Wilson intervals and the paired
    difference (plain - Shapley) with a bootstrap interval over images."""
    n = min(args.num_accuracy_images, len(split))
    correct = {name: [] for name in models}
    labels = torch.tensor(split[args.label_column][:n])
    for start in tqdm(range(0, n, 250), desc="accuracy", leave=False):
        x = encode(processor, split, args.image_column, start, start + 250, device)
        for name, model in models.items():
            predicted = model(x).logits.argmax(-1).cpu()
            correct[name].append(predicted == labels[start : start + len(predicted)])
    out = {"num_images": n}
    for name, parts in correct.items():
        hits = torch.cat(parts)
        out[name] = {
            "accuracy": float(hits.double().mean()),
            "ci95": list(wilson_interval(int(hits.sum()), n)),
        }
        correct[name] = hits
    names = list(models)
    diff = correct[names[1]].double() - correct[names[0]].double()  # plain - Shapley
    out["difference_plain_minus_shapley"] = float(diff.mean())
    out["difference_ci95"] = list(bootstrap_mean_interval(diff, num_resamples=4000))
    return out


# ----------------------------------------------------------------------------- scoring
def build_explainers(model, args, *, with_phi: bool):
    explainers = [RandomExplainer(model, seed=args.seed)]
    if with_phi:
        explainers.append(ShapleyValuesExplainer(model))
    explainers += [
        AttentionRolloutExplainer(model),
        GradCamExplainer(model),
        IntegratedGradientsExplainer(model, n_steps=args.ig_steps),
        LeaveOneOutExplainer(model),
    ]
    explainers += [KernelShapExplainer(model, budget, seed=args.seed) for budget in args.ks_budgets]
    return explainers


def mean_ci(values: torch.Tensor) -> tuple[float, float, float]:
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    lo, hi = bootstrap_mean_interval(values)
    return float(values.nanmean()), lo, hi


def score_model(
    model_name: str, model, x, masks, truth, args
) -> tuple[list[dict], dict, dict | None]:
    """Every explainer on one model: a list of result rows, the mean curves for the plots, and
    (for the Shapley model) the ranking comparison of :func:`ranking_section`."""
    B = x.shape[0]
    with torch.no_grad():
        out = model(x)
    predicted = out.logits.argmax(-1).cpu()
    values = model_coalition_values(model, x, chunk_size=args.coalition_chunk)
    forward = model_forward(model)
    P = model.num_players
    sizes = sorted({max(1, min(P - 1, round(f * P))) for f in args.sensitivity_fractions})
    removed, subset_sizes = sample_removal_subsets(P, sizes, args.num_subsets, seed=args.seed)
    drops = removal_drops(values, removed, predicted, output="logit")
    objects = mask_to_players(masks, model.players_grid) if masks is not None else None
    num_truth = truth.values.shape[0]
    rows, curves, areas = [], {}, {}
    # phi is the Shapley model's one-pass explanation in either prediction mode (soft voting, or
    # a wrapped classifier's trained Shapley head); the plain wrapper's head never trained.
    for explainer in build_explainers(model, args, with_phi=model_name == "Shapley"):
        start = time.perf_counter()
        all_classes = None
        if explainer.all_classes:
            all_classes = explainer.attribute_all(x).detach().cpu()
            maps = all_classes[torch.arange(B), :, predicted]
        else:
            maps = explainer.attribute(x, predicted.to(x.device)).detach().cpu()
        seconds = (time.perf_counter() - start) / B
        ins = player_curve(values, maps, predicted, mode="insertion")
        dele = player_curve(values, maps, predicted, mode="deletion")
        pix_ins = pixel_curve(forward, x, maps, predicted, model.players_grid, mode="insertion")
        pix_del = pixel_curve(forward, x, maps, predicted, model.players_grid, mode="deletion")
        sens = sensitivity_n_from_drops(maps, removed, subset_sizes, drops)
        sens_mean = torch.stack(list(sens.values())).nanmean(0)
        agreement = map_agreement(
            maps[:num_truth].double(),
            truth.values[torch.arange(num_truth), :, predicted[:num_truth]],
        )
        row = {
            "model": model_name,
            "explainer": explainer.name,
            "cost_forward_equivalents": explainer.cost,
            "seconds_per_image": seconds,
            "insertion_auc": mean_ci(area_under_curve(ins)),
            "deletion_auc": mean_ci(area_under_curve(dele)),
            "pixel_insertion_auc": mean_ci(area_under_curve(pix_ins)),
            "pixel_deletion_auc": mean_ci(area_under_curve(pix_del)),
            "aopc": mean_ci(aopc(dele)),
            "sensitivity_n": {int(n): float(r.nanmean()) for n, r in sens.items()},
            "sensitivity_n_mean": mean_ci(sens_mean),
            "truth_pearson": (agreement.mean_pearson, *agreement.pearson_interval()),
            "truth_spearman": (agreement.mean_spearman, *agreement.spearman_interval()),
            "truth_relative_l2": agreement.median_relative_l2,
            "num_images": B,
            "num_truth_images": num_truth,
        }
        if all_classes is not None and all_classes.shape[-1] > 1:
            others = other_classes_agreement(
                all_classes[:num_truth].double(), truth.values, predicted[:num_truth]
            )
            row["truth_pearson_other_classes"] = (others.mean_pearson, *others.pearson_interval())
            # The explained quantity: the predicted class's logit centred over classes
            # (the direction softmax cannot see removed from both sides).
            centred = centered_class_values(all_classes[:num_truth], predicted[:num_truth])
            centred_truth = centered_class_values(truth.values, predicted[:num_truth])
            row["truth_centred_pooled_error"] = pooled_relative_error(centred, centred_truth)
            row["truth_centred_pearson"] = mean_ci(pearson_rows(centred, centred_truth))
        if objects is not None:
            row["pointing_game"] = mean_ci(pointing_game(maps, objects))
            row["mask_auroc"] = mean_ci(mask_auroc(maps, objects))
        rows.append(row)
        curves[explainer.name] = (ins.mean(0).tolist(), dele.mean(0).tolist())
        areas[explainer.name] = (area_under_curve(ins), area_under_curve(dele), explainer.cost)
        print(
            f"  {model_name:>16} | {explainer.name:<28} cost {explainer.cost:7.1f} | ins "
            f"{row['insertion_auc'][0]:.3f} del {row['deletion_auc'][0]:.3f} | r "
            f"{row['truth_pearson'][0]:.3f}",
            flush=True,
        )
    phi_name = next((name for name in areas if name.startswith("phi")), None)
    if phi_name is None:
        return rows, curves, None
    truth_values = model_coalition_values(model, x[:num_truth], chunk_size=args.coalition_chunk)
    return rows, curves, ranking_section(phi_name, areas, truth_values, predicted, truth, args)


def ranking_section(phi_name: str, areas: dict, truth_values, predicted, truth, args) -> dict:
    """Issue 13's ranking targets for phi:

    * against every other explainer, the per-image AUC differences (phi better: insertion
      ``phi - other``, deletion ``other - phi``) with paired bootstrap intervals over images;
    * on the exact-truth images, each map's ranking share (:func:`ranking_share`): how much of
      the way from a random order (16 orders averaged) to the order of the exact values its
      curve goes, on images where the two differ by >= 0.05 AUC;
    * the game's interaction share (1 - R^2 of the Shapley-kernel additive fit) on those images.
    """
    num_truth = truth.values.shape[0]
    phi_ins, phi_del, _ = areas[phi_name]
    # Per-image AUCs, so that runs on several seeds pool (faithfulness_report.py --pool).
    per_image = {
        name: {"insertion": ins.tolist(), "deletion": dele.tolist()}
        for name, (ins, dele, _) in areas.items()
    }
    paired = []
    for name, (ins, dele, cost) in areas.items():
        if name == phi_name:
            continue
        paired.append(
            {
                "explainer": name,
                "cost_forward_equivalents": cost,
                "insertion_gain": mean_ci(phi_ins - ins),
                "deletion_gain": mean_ci(dele - phi_del),
            }
        )
    out: dict = {
        "phi": phi_name,
        "paired": paired,
        "num_images": int(phi_ins.shape[0]),
        "per_image": per_image,
    }
    if truth.method != "exact":
        return out
    head = predicted[:num_truth]
    truth_maps = truth.values[torch.arange(num_truth), :, head]
    P = truth_maps.shape[1]
    shares = {}
    for mode, index in (("insertion", 0), ("deletion", 1)):
        truth_auc = area_under_curve(player_curve(truth_values, truth_maps, head, mode=mode))
        random_auc = random_order_auc(
            truth_values, head, P, mode=mode, num_orders=16, seed=args.seed + 2
        )
        per_explainer = {
            name: ranking_share(aucs[index][:num_truth], random_auc, truth_auc)
            for name, aucs in areas.items()
        }
        shares[mode] = {
            "truth_auc": mean_ci(truth_auc),
            "random_auc": mean_ci(random_auc),
            "truth_auc_per_image": truth_auc.tolist(),
            "random_auc_per_image": random_auc.tolist(),
            "explainers": {name: _share_summary(share) for name, share in per_explainer.items()},
            # NaN where the truth's order and a random one differ by < 0.05 (left out).
            "shares_per_image": {name: share.tolist() for name, share in per_explainer.items()},
        }
    out["truth_order"] = shares
    out["num_truth_images"] = num_truth
    if truth.table is not None:
        interactions = interaction_share(truth.table, truth.values, head)
        out["interaction_share"] = mean_ci(interactions)
        out["interaction_share_per_image"] = interactions.tolist()
    return out


def _share_summary(share: torch.Tensor) -> dict:
    kept = share[~torch.isnan(share)]
    if kept.numel() == 0:
        return {"share": (float("nan"),) * 3, "num_images": 0}
    mean = mean_ci(kept) if kept.numel() > 1 else (float(kept[0]),) * 3
    return {"share": mean, "num_images": int(kept.numel())}


def model_forward(model):
    @torch.no_grad()
    def forward(images):
        return model(images).logits

    return forward


# ----------------------------------------------------------------------------- budgets
def kernel_shap_budget(model, x, truth_values, phi, predicted, *, max_evaluations, seed, step):
    """The first KernelSHAP budgets that match phi's agreement with the truth: its mean
    per-image r on the predicted class's values, and its pooled relative error on those values
    centred over classes (the issue's explained quantity).

    One KernelSHAP run per batch with a fixed coalition stream (``seed``, different from the
    truth's), read off every ``step`` evaluations. The pooled error is kept as its sums (squared
    errors per step, the truth's spread once), so runs on several seeds pool exactly.
    """
    num = truth_values.shape[0]
    idx = torch.arange(num)
    truth_maps = truth_values[idx, :, predicted]
    target_r = map_agreement(phi[idx, :, predicted].double(), truth_maps).mean_pearson
    centred_truth = centered_class_values(truth_values, predicted)
    spread = float((centred_truth - centred_truth.mean(1, keepdim=True)).pow(2).sum())

    def squared_error(estimate: torch.Tensor) -> float:
        return float((centered_class_values(estimate, predicted) - centred_truth).pow(2).sum())

    phi_squared_error = squared_error(phi)
    result = kernel_shap(
        model_game(model, x),
        model.num_players,
        max_evaluations=max_evaluations,
        tolerance=0.0,
        batch_size=step,
        seed=seed,
        return_details=True,
    )
    trace, error_trace = [], []
    reached = reached_error = None
    for state in result.trace:
        values = state.values.permute(1, 0, 2).cpu()
        r = map_agreement(values[idx, :, predicted].double(), truth_maps).mean_pearson
        error = squared_error(values)
        trace.append((state.num_evaluations, r))
        error_trace.append((state.num_evaluations, error))
        if reached is None and r >= target_r:
            reached = state.num_evaluations
        if reached_error is None and error <= phi_squared_error:
            reached_error = state.num_evaluations
    thresholds = {
        str(level): next((evals for evals, r in trace if r >= level), None)
        for level in (0.9, 0.95, 0.99)
    }
    return {
        "phi_pearson": target_r,
        "cost_per_evaluation": coalition_cost(model),
        "evaluations_to_reach_r": thresholds,
        "reached_evaluations": reached,
        "reached_forward_equivalents": None if reached is None else reached * coalition_cost(model),
        "phi_pooled_error": (phi_squared_error / spread) ** 0.5,
        "phi_squared_error": phi_squared_error,
        "truth_spread": spread,
        "reached_pooled_error_evaluations": reached_error,
        "max_evaluations": max_evaluations,
        "trace": trace,
        # (evaluations, sum of squared errors) of the centred values.
        "pooled_error_trace": error_trace,
    }


def p49_section(args, device) -> dict | None:
    if args.skip_p49:
        return None
    model_dir = Path(args.p49_model_dir)
    ensure_main_model(
        model_dir,
        ["--image_size", "56", "--players_grid", "7", "7", "--num_exact_images", "0"],
    )
    from transformers import AutoImageProcessor

    model = ShapleyForImageClassification.from_pretrained(model_dir).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    if model.num_players != 49:
        raise SystemExit(f"{model_dir} has P = {model.num_players}, not 49.")
    image_size = model.adapter.image_size(model.config.backbone_config)[0]
    _, test = load_splits(args, image_size, max(args.num_truth_images_p49, 1))
    x = encode(processor, test, args.image_column, 0, args.num_truth_images_p49, device)
    metrics_file = model_dir / "metrics.json"
    accuracy = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    with torch.no_grad():
        out = model(x)
    predicted = out.logits.argmax(-1).cpu()
    start = time.perf_counter()
    truth = model_shapley_truth(
        model,
        x,
        tolerance=args.truth_tolerance,
        max_evaluations=args.truth_max_evaluations_p49,
        seed=10_000 + args.seed,
    )
    truth_seconds = time.perf_counter() - start
    budget = kernel_shap_budget(
        model,
        x,
        truth.values,
        out.shapley_values.cpu(),
        predicted,
        max_evaluations=args.budget_max_evaluations_p49,
        seed=args.seed,
        step=args.budget_step,
    )
    budget.update(
        {
            "num_players": 49,
            "model_dir": str(model_dir),
            "model_accuracy": accuracy.get("accuracy"),
            "model_accuracy_ci95": accuracy.get("accuracy_ci95"),
            "truth": f"KernelSHAP, {truth.evaluations} evaluations, "
            f"{'converged' if truth.converged else 'NOT converged'} "
            f"(max std / range {truth.convergence_ratio:.3f}, tolerance {args.truth_tolerance})",
            "truth_seconds": truth_seconds,
            "num_images": x.shape[0],
        }
    )
    return budget


def machine_description(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores (CPU)"


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", default=str(REPO / "outputs" / "shapley-vit-shapes"))
    parser.add_argument(
        "--plain-dir", default=None, help="default: <model-dir>/plain-classifier-equal-steps"
    )
    parser.add_argument(
        "--plain-init",
        default=None,
        help="the classifier the Shapley model was fine-tuned from (default: the main job's "
        "<model-dir>/pretrained-classifier-*); the plain classifier continues it",
    )
    parser.add_argument("--p49-model-dir", default=str(REPO / "outputs" / "shapley-vit-shapes-p49"))
    parser.add_argument("--skip-p49", action="store_true")
    parser.add_argument(
        "--skip-plain",
        action="store_true",
        help="explain only the Shapley model (its accuracy is still compared): for a frozen "
        "classifier the plain model's game is the Shapley model's own",
    )
    parser.add_argument("--dataset_name", default=None)
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--train_dir", default=None)
    parser.add_argument("--validation_dir", default=None)
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument(
        "--mask_column", default="mask", help="object masks (localization), if present"
    )
    parser.add_argument("--eval_split", default="test")
    parser.add_argument(
        "--num-train", type=int, default=8000, help="built-in data: training images"
    )
    parser.add_argument("--num-images", type=int, default=48, help="images explained")
    parser.add_argument("--num-truth-images", type=int, default=8, help="images with exact truth")
    parser.add_argument("--num-accuracy-images", type=int, default=2000)
    parser.add_argument("--num-truth-images-p49", type=int, default=8)
    parser.add_argument("--ks-budgets", type=int, nargs="+", default=[20, 64, 256, 1024])
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--sensitivity-fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--num-subsets", type=int, default=32)
    parser.add_argument("--budget-step", type=int, default=16)
    parser.add_argument("--budget-max-evaluations", type=int, default=4096)
    parser.add_argument("--budget-max-evaluations-p49", type=int, default=8192)
    parser.add_argument("--truth-tolerance", type=float, default=0.01)
    parser.add_argument("--truth-max-evaluations-p49", type=int, default=100_000)
    parser.add_argument("--coalition-chunk", type=int, default=4096)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results" / "faithfulness"))
    parser.add_argument("--note", default="", help="free text for the header (e.g. machine load)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    args.model_dir = Path(args.model_dir)
    args.plain_dir = Path(args.plain_dir or args.model_dir / "plain-classifier-equal-steps")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    ensure_main_model(args.model_dir, [])
    from transformers import AutoConfig

    image_size = AutoConfig.from_pretrained(args.model_dir).backbone_config.image_size
    num_test = max(args.num_accuracy_images, args.num_images)
    train_split, test = load_splits(args, image_size, num_test)
    ensure_plain_classifier(args.model_dir, args.plain_dir, train_split, args)
    shapley, plain, processor = load_models(args, device)
    models = {"Shapley": shapley, "plain": plain}

    accuracy = accuracy_of(models, processor, test, args, device)
    print(json.dumps(accuracy))
    x = encode(processor, test, args.image_column, 0, args.num_images, device)
    masks = None
    if args.mask_column in test.column_names:
        import numpy as np

        masks = torch.from_numpy(
            np.stack([np.asarray(test[i][args.mask_column]) for i in range(x.shape[0])])
        )
        if masks.shape[-2:] != x.shape[-2:]:
            print("Object masks and model inputs differ in size; fractions are taken per mask.")
    rows, curves, budgets, ranking = [], {}, [], None
    timings: dict[str, float] = {}
    timings["setup, plain classifier, accuracy"] = time.perf_counter() - started
    for name, model in models.items():
        if name == "plain" and args.skip_plain:
            continue
        start = time.perf_counter()
        truth = model_shapley_truth(model, x[: args.num_truth_images], progress=True)
        timings[f"{name}: exact truth"] = time.perf_counter() - start
        print(f"{name}: truth ({truth.method}) in {timings[f'{name}: exact truth']:.0f} s")
        start = time.perf_counter()
        model_rows, curves[name], model_ranking = score_model(name, model, x, masks, truth, args)
        if model_ranking is not None:
            ranking = model_ranking
        timings[f"{name}: explainers and metrics"] = time.perf_counter() - start
        rows += model_rows
        if name == "Shapley":
            with torch.no_grad():
                out = model(x[: args.num_truth_images])
            budget = kernel_shap_budget(
                model,
                x[: args.num_truth_images],
                truth.values,
                out.shapley_values.cpu(),
                out.logits.argmax(-1).cpu(),
                max_evaluations=args.budget_max_evaluations,
                seed=args.seed + 1,
                step=args.budget_step,
            )
            budget.update(
                num_players=model.num_players,
                model=str(args.model_dir.name),
                truth="exact (all 2^16 coalitions)",
                num_images=truth.values.shape[0],
            )
            budgets.append(budget)
    start = time.perf_counter()
    p49 = p49_section(args, device)
    timings["P = 49: truth and budget"] = time.perf_counter() - start
    if p49 is not None:
        acc = p49.get("model_accuracy")
        p49["model"] = f"{Path(p49['model_dir']).name}" + (
            f" (accuracy {acc:.3f})" if acc is not None else ""
        )
        budgets.append(p49)

    report = {
        "command": "python benchmarks/faithfulness.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_description(device),
        "load_average": [load_at_start, os.getloadavg()[0]],
        "timings": timings,
        "threads": torch.get_num_threads(),
        "note": f"; {args.note}" if args.note else "",
        "model_dir": str(
            args.model_dir.relative_to(REPO)
            if args.model_dir.is_relative_to(REPO)
            else args.model_dir
        ),
        "plain_dir": str(
            args.plain_dir.relative_to(REPO)
            if args.plain_dir.is_relative_to(REPO)
            else args.plain_dir
        ),
        "train_steps": json.loads((args.model_dir / "metrics.json").read_text()).get("train_steps"),
        "accuracy": accuracy,
        "rows": rows,
        "budgets": budgets,
        "ranking": ranking,
        "budget_step": args.budget_step,
        "num_images": x.shape[0],
        "num_truth_images": min(args.num_truth_images, x.shape[0]),
        "sensitivity_sizes": sorted(
            {
                max(1, min(shapley.num_players - 1, round(f * shapley.num_players)))
                for f in args.sensitivity_fractions
            }
        ),
    }
    report["curves"] = curves
    report["seconds"] = time.perf_counter() - started
    results = json.dumps(report, indent=1)
    (out_dir / "faithfulness.json").write_text(results)
    with open(out_dir / "faithfulness.jsonl", "w") as f:
        f.write(json.dumps({"accuracy": accuracy}) + "\n")
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for budget in budgets:
            f.write(json.dumps({"kernelshap_budget": budget}) + "\n")
    # The report is rendered from what was written, as `faithfulness_report.py` would.
    text = faithfulness_report.write_report(json.loads(results), out_dir)
    print(text)
    return report


if __name__ == "__main__":
    main()
