"""Joint against frozen: does a classifier that learns with the Shapley loss explain better?

The seed paper trains the backbone with Shapley estimation as an auxiliary task; the project's
default (the frozen recipe) trains a plain classifier, freezes it and fits the head to its game.
Per seed, from the main job's own plain classifier (``--main-job``, an ``examples/train.py``
output directory; the main job is run there first if it is absent), with the same batches:

* **plain**: the classifier continued with cross-entropy for ``--steps`` steps (the accuracy
  control at equal steps);
* **joint** (arm c): the classifier wrapped by ``from_backbone(train_backbone=True,
  detach_head_features=False)``, so the Shapley regression's gradient reaches the backbone, and
  trained for the same steps (cross-entropy + the Shapley loss, the wrapped recipe's weights);
* **joint + polish** (arm d): the joint classifier exported as a plain
  ``ViTForImageClassification`` and explained by the main job's frozen head phase
  (``examples/train.py --backbone``, run as a user runs it);
* **frozen** (arm a): the main job's own model (its head on the unchanged classifier), and the
  same frozen head phase on the plain arm's classifier (arm a at equal classifier steps);
* **joint from scratch** (arm b, ``--scratch``): the joint recipe from fresh weights of the
  plain classifier's architecture, for the plain arm's total steps (``--scratch-steps``).

``--data digits`` runs the same arms on a real data set: scikit-learn's digits as
``user_road.py`` writes them, from the user's checkpoint there (accuracy on the whole test
split, whose first images are the truth images; the head phase on the image folders).

Every fine-tune uses the main job's optimizer (AdamW 1e-3, 30 warm-up steps, cosine, clipping at
1.0, batch 64) in one plain loop, so the arms differ only in the objective; test accuracy and
NLL are recorded every ``--curve-every`` steps (a table and a figure of the curves).

Measured on test images no run trains on: accuracy and NLL on ``--num-test`` images; on the
first ``--exact-images`` of the ``--truth-images`` after them, every classifier's game tabulated
exactly (all 2^16 coalitions), giving the exact values and the game's interaction share
(``hf_shapley.evaluation.interaction_share``: 1 - R^2 of the Shapley-kernel additive fit); on
all truth images each head's agreement with KernelSHAP-4096 of its own game. Agreement is on
the predicted class's logit, centred over classes (the main job's targets).

    python benchmarks/joint_recipe.py --seeds 0 1 2 --main-job 'outputs/main-seed{seed}'
    python benchmarks/joint_recipe.py --data digits --seeds 0 1 2 --steps 300 --scratch

Results: ``results/joint_recipe[_digits].{md,json}`` and ``_curves.png``; every artifact is
cached under ``outputs/joint-recipe[-digits]`` so that a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from main_job_seeds import TRUTH_EVALUATIONS, cached, game_key, logits_of
from recipe import hierarchical_interval, tensors, train_steps

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The wrapped classifier's training recipe (from_backbone's EXPLAINER_DEFAULTS), with the head's
# regression reaching the backbone: the seed paper's design. Warm-up as the main job's head.
JOINT_SETTINGS = dict(train_backbone=True, detach_head_features=False, loss_warmup_steps=60)
# The main job's classifier phase on the built-in data (examples/train.py's default), and the
# digits user checkpoint's epochs (user_road.py's default): the steps arm b adds to ``--steps``.
CLASSIFIER_STEPS = 1000
DIGITS_EPOCHS = 30
DATA_NAMES = {"builtin": "the built-in data", "digits": "scikit-learn's digits"}


def joint_settings(args: argparse.Namespace) -> dict:
    """``JOINT_SETTINGS`` with the ``--joint-setting KEY=VALUE`` overrides (JSON values)."""
    overrides = {}
    for item in args.joint_setting:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    return {**JOINT_SETTINGS, **overrides}


def joint_arm(args: argparse.Namespace) -> str:
    """The joint arm's name: ``joint`` and its overrides (each variant has its own runs)."""
    return "joint" + "".join(f"-{item.replace('=', '')}" for item in sorted(args.joint_setting))


def main_job(seed: int, args: argparse.Namespace) -> Path:
    """The main job's output directory for ``seed``, run with ``examples/train.py`` if absent."""
    path = Path(args.main_job.format(seed=seed))
    if not (path / "metrics.json").is_file():
        train_script = REPO / "examples" / "train.py"
        run(
            [sys.executable, str(train_script), "--seed", str(seed), "--output_dir", str(path)]
            + ["--players_grid", *map(str, args.players_grid), *args.train_args.split()]
        )
    return path


def run(command: list[str]) -> None:
    print("running", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def plain_classifier_dir(main_dir: Path) -> Path:
    metrics = json.loads((main_dir / "metrics.json").read_text())
    return main_dir / metrics["pretrained_classifier"]


@dataclass
class SeedData:
    """One seed's starting point and data: the plain classifier every arm starts from, the
    frozen recipe's model on it (arm a at the start; None where not run), the tensors (as the
    classifier's image processor gives them) and ``examples/train.py``'s data arguments."""

    classifier: Path
    classifier_steps: int
    frozen_model: Path | None
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    truth: torch.Tensor
    head_args: list[str]


def builtin_data(seed: int, args: argparse.Namespace) -> SeedData:
    """The built-in data: the main job's plain classifier and model; test images after the
    ``--num-test`` accuracy images are the truth images."""
    main_dir = main_job(seed, args)
    test = tensors(args.num_test + args.truth_images, "test")
    return SeedData(
        classifier=plain_classifier_dir(main_dir),
        classifier_steps=CLASSIFIER_STEPS,
        frozen_model=main_dir,
        train=tensors(args.num_train, "train"),
        test=(test[0][: args.num_test], test[1][: args.num_test]),
        truth=test[0][args.num_test :],
        head_args=["--players_grid", *map(str, args.players_grid), *args.train_args.split()],
    )


def digits_data(seed: int, args: argparse.Namespace) -> SeedData:
    """scikit-learn's digits as ``user_road.py`` writes them: the user's checkpoint (a ViT
    trained by the plain transformers ``Trainer``) is the plain classifier; accuracy on the
    whole test split, whose first ``--truth-images`` are the truth images."""
    from transformers import AutoConfig, AutoImageProcessor
    from user_road import test_images, user_checkpoint, write_digit_folders

    train_dir, test_dir = write_digit_folders(args.work / "data")
    checkpoint = user_checkpoint(
        train_dir, args.work / f"seed{seed}" / "user-checkpoint", seed, DIGITS_EPOCHS
    )
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    label2id = AutoConfig.from_pretrained(checkpoint).label2id

    def folder(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, names = test_images(path, len(list(path.glob("*/*.png"))))
        x = processor([image.convert("RGB") for image in images], return_tensors="pt")
        return x["pixel_values"], torch.tensor([label2id[name] for name in names])

    train, test = folder(train_dir), folder(test_dir)
    return SeedData(
        classifier=checkpoint,
        # user_checkpoint's Trainer: batch 64, every image each epoch.
        classifier_steps=DIGITS_EPOCHS * math.ceil(len(train[0]) / 64),
        frozen_model=None,
        train=train,
        test=test,
        truth=test[0][: args.truth_images],
        head_args=["--train_dir", str(train_dir), "--validation_dir", str(test_dir)]
        + ["--players_grid", *map(str, args.players_grid), *args.train_args.split()],
    )


def scratch_classifier(seed: int, data: SeedData, args: argparse.Namespace) -> Path:
    """The plain classifier's architecture and image processor with fresh weights (seeded):
    where arm b, joint from the start, begins."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    path = args.work / f"seed{seed}" / "scratch-init"
    if not (path / "config.json").is_file():
        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(data.classifier)
        AutoModelForImageClassification.from_config(config).save_pretrained(path)
        AutoImageProcessor.from_pretrained(data.classifier).save_pretrained(path)
    return path


def fine_tune(
    arm: str, seed: int, source: Path, steps: int, data: SeedData, args: argparse.Namespace
) -> Path:
    """Continue ``source`` for ``steps`` steps as ``arm`` ("plain" or a joint arm), recording
    test accuracy and NLL every ``--curve-every`` steps; cached."""
    from transformers import ViTForImageClassification

    from hf_shapley import ShapleyForImageClassification

    path = args.work / f"seed{seed}" / f"{arm}-{steps}steps"
    if (path / "training.json").is_file():
        return path
    xtr, ytr = data.train
    torch.manual_seed(seed)
    joint = arm.startswith("joint")
    if joint:
        model = ShapleyForImageClassification.from_backbone(
            source,
            players_grid=tuple(args.players_grid),
            load_image_processor=False,
            coalition_seed=seed,
            **joint_settings(args),
        )
    else:
        model = ViTForImageClassification.from_pretrained(source)
    times: list[float] = []
    curve = [dict(step=0, **test_fit(model, data.test, args.curve_images))]

    def report_progress(step: int, loss: torch.Tensor) -> None:
        if step % 100 == 0:
            print(f"{arm} seed {seed}: step {step}, loss {float(loss):.4f}", flush=True)
        if step % args.curve_every == 0 or step == steps:
            curve.append(dict(step=step, **test_fit(model, data.test, args.curve_images)))

    model.train()
    diverged = train_steps(
        model, xtr, ytr, steps, args.batch_size, seed, joint, times, report_progress
    )
    if diverged is not None:
        raise SystemExit(f"{arm} seed {seed}: the loss diverged at step {diverged}.")
    model.eval()
    model.save_pretrained(path)
    if joint:
        export_classifier(model, source, path / "classifier", data.test[0][:16])
    training = dict(steps=steps, step_s=statistics.median(times), seconds=sum(times), curve=curve)
    (path / "training.json").write_text(json.dumps(training, indent=2))
    return path


@torch.no_grad()
def test_fit(model, test: tuple[torch.Tensor, torch.Tensor], count: int) -> dict:
    """Accuracy and NLL of ``model``'s logits on the first ``count`` test images (the model
    put back in training mode after)."""
    x, y = test[0][:count], test[1][:count]
    model.eval()
    logits = torch.cat([model(x[i : i + 500]).logits for i in range(0, len(x), 500)])
    model.train()
    return dict(
        accuracy=float((logits.argmax(-1) == y).float().mean()),
        nll=float(F.cross_entropy(logits, y)),
    )


def export_classifier(model, source: Path, path: Path, x: torch.Tensor) -> None:
    """The joint model's classifier as the plain ``ViTForImageClassification`` it was wrapped
    from (its backbone and linear head), with the source's image processor: what a user would
    publish and explain again with the frozen recipe. Checked: its logits are the model's."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    classifier = ViTForImageClassification.from_pretrained(source)
    state = {f"vit.{k}": v for k, v in model.backbone.state_dict().items()}
    state.update({f"classifier.{k}": v for k, v in model.classifier.state_dict().items()})
    missing, unexpected = classifier.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if "pooler" not in k]:
        raise RuntimeError(f"export mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        if not torch.allclose(classifier.eval()(x).logits, model.eval()(x).logits, atol=1e-5):
            raise RuntimeError("the exported classifier's logits differ from the joint model's")
    classifier.save_pretrained(path)
    AutoImageProcessor.from_pretrained(source).save_pretrained(path)


def polished_dir(run_dir: Path) -> Path:
    """Where :func:`polish` writes the frozen head phase of a fine-tuning run."""
    return run_dir.with_name(f"{run_dir.name}-polished")


def polish(seed: int, run_dir: Path, classifier: Path, source: Path, data: SeedData) -> Path:
    """The frozen recipe's head phase on the classifier of a fine-tuning run, as a user runs it
    (``examples/train.py --backbone``): arm d on a joint classifier, arm a at equal steps on the
    plain one. Written beside the run."""
    from transformers import AutoImageProcessor

    path = polished_dir(run_dir)
    if not (path / "metrics.json").is_file():
        if not (classifier / "preprocessor_config.json").is_file():
            AutoImageProcessor.from_pretrained(source).save_pretrained(classifier)
        train_script = REPO / "examples" / "train.py"
        run(
            [sys.executable, str(train_script), "--backbone", str(classifier)]
            + ["--seed", str(seed), "--output_dir", str(path), *data.head_args]
        )
    return path


def game_tables(model, x: torch.Tensor, work: Path) -> dict:
    """Exact values and interaction share (per image, every class) of the model's game on
    ``x``, from one tabulation of all coalitions; cached per game."""
    from hf_shapley.evaluation import interaction_share, shapley_values_from_table, tabulate_game

    def compute() -> dict:
        table = tabulate_game(model, x, progress=True)
        values = shapley_values_from_table(table)
        shares = torch.stack(
            [
                interaction_share(table, values, torch.full((len(x),), k))
                for k in range(values.shape[-1])
            ],
            dim=-1,
        )
        return dict(values=values, interaction_share=shares)

    return cached(work / "truth" / f"{game_key(model, len(x))}-exact.pt", compute)


def kernel_truth(model, x: torch.Tensor, work: Path) -> torch.Tensor:
    """KernelSHAP with the main job's truth budget on the model's game; cached per game."""
    from hf_shapley.evaluation import model_shapley_truth

    def compute() -> torch.Tensor:
        return model_shapley_truth(
            model, x, max_exact_players=0, tolerance=0.0, max_evaluations=TRUTH_EVALUATIONS
        ).values

    return cached(work / "truth" / f"{game_key(model, len(x))}-kernel.pt", compute)


def agreement(phi: torch.Tensor, truth: torch.Tensor) -> dict:
    from hf_shapley.evaluation import pearson_rows, pooled_relative_error

    r = pearson_rows(phi, truth)
    return dict(
        pearson_per_image=[float(v) for v in r],
        pearson=float(r.nanmean()),
        pooled_relative_error=pooled_relative_error(phi, truth),
    )


def ranking_shares(model, x: torch.Tensor, phi: torch.Tensor, exact: torch.Tensor, classes) -> dict:
    """Insertion and deletion ranking shares of ``phi`` on the model's own game: how far its
    curve goes from a random order's (16 orders) to the exact values' order, per image (the
    predicted class's probability; ``(B, P)`` maps of that class, as ``faithfulness.py``)."""
    from hf_shapley.evaluation import (
        area_under_curve,
        model_coalition_values,
        player_curve,
        random_order_auc,
        ranking_share,
    )

    values = model_coalition_values(model, x)
    shares = {}
    for mode in ("insertion", "deletion"):
        auc, truth_auc = (
            area_under_curve(player_curve(values, maps, classes, mode=mode))
            for maps in (phi, exact)
        )
        random_auc = random_order_auc(values, classes, phi.shape[1], mode=mode, seed=2)
        shares[mode] = [float(v) for v in ranking_share(auc, random_auc, truth_auc)]
    return shares


def measure_seed(seed: int, args: argparse.Namespace) -> dict:
    from transformers import ViTForImageClassification

    import hf_shapley  # noqa: F401  (registers the auto classes)
    from hf_shapley import ShapleyForImageClassification

    data = (digits_data if args.data == "digits" else builtin_data)(seed, args)
    source, steps, grid = data.classifier, args.steps, tuple(args.players_grid)
    plain_dir = fine_tune("plain", seed, source, steps, data, args)
    joint_dir = fine_tune(joint_arm(args), seed, source, steps, data, args)
    start, plain, joint = (
        "plain classifier (start)",
        f"plain, +{steps} steps",
        f"joint, +{steps} steps",
    )
    # Each classifier's game, through a wrapper whose head is never read; and its explainers.
    classifiers = {start: source, plain: plain_dir, joint: joint_dir / "classifier"}
    games = {
        start: ShapleyForImageClassification.from_pretrained(data.frozen_model)
        if data.frozen_model
        else ShapleyForImageClassification.from_backbone(
            source, players_grid=grid, load_image_processor=False
        ),
        plain: ShapleyForImageClassification.from_backbone(
            plain_dir, players_grid=grid, load_image_processor=False
        ),
        joint: ShapleyForImageClassification.from_pretrained(joint_dir),
    }
    heads = {}
    if data.frozen_model:
        heads["a: frozen (start)"] = (start, games[start])
    polished = polish(seed, plain_dir, plain_dir, source, data)
    heads[f"a: frozen, +{steps} plain steps"] = (plain, polished)
    heads["c: joint, own head"] = (joint, joint_dir)
    heads["d: joint + frozen polish"] = (
        joint,
        polish(seed, joint_dir, joint_dir / "classifier", source, data),
    )
    if args.scratch:
        scratch_steps = args.scratch_steps or data.classifier_steps + steps
        scratch = f"joint from scratch, {scratch_steps} steps"
        init = scratch_classifier(seed, data, args)
        scratch_dir = fine_tune(f"{joint_arm(args)}-scratch", seed, init, scratch_steps, data, args)
        classifiers[scratch] = scratch_dir / "classifier"
        games[scratch] = ShapleyForImageClassification.from_pretrained(scratch_dir)
        # Its polish is left out: arm d measures what a polish adds to a joint classifier.
        heads["b: joint from scratch, own head"] = (scratch, scratch_dir)
    x, y = data.test
    xt = data.truth
    xe = xt[: args.exact_images]
    result: dict = dict(
        seed=seed,
        data=args.data,
        num_test=len(y),
        classifier_steps=data.classifier_steps,
        classifiers={},
        heads={},
    )
    tables = {}
    for label, path in classifiers.items():
        classifier = ViTForImageClassification.from_pretrained(path).eval()
        logits = logits_of(classifier, x)
        classes = logits_of(classifier, xe).argmax(-1)
        tables[label] = game_tables(games[label].eval(), xe, args.work)
        shares = tables[label]["interaction_share"][torch.arange(len(xe)), classes]
        result["classifiers"][label] = dict(
            accuracy=float((logits.argmax(-1) == y).float().mean()),
            nll=float(F.cross_entropy(logits, y)),
            interaction_share_per_image=[float(v) for v in shares],
        )
    for label, (game_label, model) in heads.items():
        if isinstance(model, Path):
            model = ShapleyForImageClassification.from_pretrained(model)
        result["heads"][label] = dict(
            game=game_label, **head_agreement(model.eval(), xt, xe, tables[game_label], args)
        )
    runs = {"plain": plain_dir, "joint": joint_dir}
    if args.scratch:
        runs["joint from scratch"] = scratch_dir
    result["training"] = {
        arm: json.loads((d / "training.json").read_text()) for arm, d in runs.items()
    }
    result["polish_seconds"] = {
        arm: json.loads((polished_dir(d) / "metrics.json").read_text())["train_seconds"]
        for arm, d in runs.items()
        if polished_dir(d).is_dir()
    }
    return result


def head_agreement(model, xt: torch.Tensor, xe: torch.Tensor, table: dict, args) -> dict:
    """A head's values against its game's exact values (``xe``) and KernelSHAP-4096 (``xt``),
    with the ranking shares, on the predicted class's centred logit."""
    from hf_shapley.evaluation import centered_class_values

    with torch.no_grad():
        out = model(xt)
    classes = out.logits.argmax(-1)
    phi = centered_class_values(out.shapley_values, classes)
    kernel = centered_class_values(kernel_truth(model, xt, args.work), classes)
    exact = centered_class_values(table["values"], classes[: len(xe)])
    rows = torch.arange(len(xe))
    shares = ranking_shares(
        model,
        xe,
        out.shapley_values[rows, :, classes[rows]],
        table["values"][rows, :, classes[rows]],
        classes[rows],
    )
    return dict(
        ranking_shares=shares,
        kernel=agreement(phi, kernel),
        exact=agreement(phi[: len(xe)], exact),
        kernel_truth_error_vs_exact=agreement(kernel[: len(xe)], exact)["pooled_relative_error"],
    )


def share_mean(heads: list[dict], mode: str) -> str:
    """Mean ranking share over seeds and images (NaN, a game whose order barely matters,
    left out); '-' for runs measured before the shares were."""
    shares = [v for h in heads for v in h.get("ranking_shares", {}).get(mode, [])]
    shares = [v for v in shares if not math.isnan(v)]
    return f"{statistics.fmean(shares):.2f}" if shares else "-"


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval of paired differences."""
    from scipy.stats import t as student_t

    n = len(differences)
    mean = statistics.fmean(differences)
    half = student_t.ppf(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def report(rows: list[dict], args: argparse.Namespace) -> str:
    seeds = [r["seed"] for r in rows]
    labels = list(rows[0]["classifiers"])
    plain, joints = labels[1], labels[2:]
    data = DATA_NAMES[args.data]
    num_test = rows[0].get("num_test", args.num_test)
    lines = [
        f"# Joint against frozen on {data}: the classifier's accuracy, its game and its explainer",
        "",
        f"Written by `benchmarks/joint_recipe.py --data {args.data}`: seeds {seeds}, "
        f"{args.steps} fine-tuning steps (batch {args.batch_size}), accuracy on "
        f"{'the whole test split' if args.data == 'digits' else f'{num_test:,} test images'}, "
        f"exact games on {args.exact_images} test images a seed, KernelSHAP-4096 on "
        f"{args.truth_images}. The joint arm: `from_backbone(**{joint_settings(args)})`.",
        "",
        "## The classifiers",
        "",
        "| classifier | accuracy per seed | NLL per seed | interaction share [95%] |",
        "|---|---|---|---|",
    ]
    for label in labels:
        c = [r["classifiers"][label] for r in rows]
        shares = [s["interaction_share_per_image"] for s in c]
        low, high = hierarchical_interval(shares)
        mean_share = statistics.fmean(statistics.fmean(s) for s in shares)
        accuracy = " / ".join(f"{v['accuracy']:.2%}" for v in c)
        nll = " / ".join(f"{v['nll']:.4f}" for v in c)
        lines.append(f"| {label} | {accuracy} | {nll} | {mean_share:.3f} [{low:.3f}, {high:.3f}] |")
    lines += [""]
    for joint in joints:
        lines += comparison_lines(rows, plain, joint)
    lines += [
        "",
        "## The explainers",
        "",
        "| arm | game | r vs exact [95%] | pooled error vs exact (per seed) | r vs KernelSHAP "
        "| pooled error vs KernelSHAP (per seed) | insertion / deletion share |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in rows[0]["heads"]:
        h = [r["heads"][label] for r in rows]
        low, high = hierarchical_interval([v["exact"]["pearson_per_image"] for v in h])
        exact = " / ".join(f"{v['exact']['pooled_relative_error']:.3f}" for v in h)
        kernel = " / ".join(f"{v['kernel']['pooled_relative_error']:.3f}" for v in h)
        lines.append(
            f"| {label} | {h[0]['game']} | "
            f"{statistics.fmean(v['exact']['pearson'] for v in h):.3f} [{low:.3f}, {high:.3f}] | "
            f"{exact} | {statistics.fmean(v['kernel']['pearson'] for v in h):.3f} | {kernel} | "
            f"{share_mean(h, 'insertion')} / {share_mean(h, 'deletion')} |"
        )
    truth_error = statistics.fmean(
        v["kernel_truth_error_vs_exact"] for r in rows for v in r["heads"].values()
    )
    lines += [
        "",
        f"KernelSHAP-4096's own pooled error against the exact values: {truth_error:.3f} (mean).",
        "",
        "## Cost (this machine, per seed)",
        "",
    ]
    for r in rows:
        runs = ", ".join(
            f"{arm} {t['step_s']:.3f} s a step ({t.get('steps', args.steps)} steps, "
            f"{t['seconds']:.0f} s"
            + (
                f"; its frozen head phase {r['polish_seconds'][arm]:.0f} s)"
                if arm in r["polish_seconds"]
                else ")"
            )
            for arm, t in r["training"].items()
        )
        lines.append(f"- seed {r['seed']}: {runs}")
    lines += curve_lines(rows)
    return "\n".join(lines) + "\n"


def comparison_lines(rows: list[dict], plain: str, joint: str) -> list[str]:
    """Accuracy, NLL and interaction share of a joint classifier against the plain one at equal
    steps: the seed's claims."""
    from scipy.stats import t as student_t

    n = len(rows)
    lines = []
    d = [
        100 * (r["classifiers"][plain]["accuracy"] - r["classifiers"][joint]["accuracy"])
        for r in rows
    ]
    nll = [r["classifiers"][joint]["nll"] - r["classifiers"][plain]["nll"] for r in rows]
    share_d = [
        a - b
        for r in rows
        for a, b in zip(
            r["classifiers"][joint]["interaction_share_per_image"],
            r["classifiers"][plain]["interaction_share_per_image"],
            strict=True,
        )
    ]
    if n >= 2:
        bound = statistics.fmean(d) + student_t.ppf(0.95, n - 1) * statistics.stdev(d) / math.sqrt(
            n
        )
        lines.append(
            f"- {joint} against {plain}, accuracy lost d = plain - joint: mean "
            f"**{statistics.fmean(d):+.2f} points**, upper 95% bound **{bound:+.2f}** (target: "
            f"mean <= 0.3, bound <= 1); NLL joint - plain: mean {statistics.fmean(nll):+.4f} "
            "(target <= 0.05)"
        )
    if len(share_d) >= 2:
        mean, low, high = paired_interval(share_d)
        lines.append(
            f"- interaction share, {joint} - plain on the same images: **{mean:+.3f}** "
            f"[{low:+.3f}, {high:+.3f}] (paired t interval over {len(share_d)} images)"
        )
    return lines


def curve_runs(rows: list[dict]) -> list[str]:
    """The fine-tuning runs with accuracy curves (runs measured before the curves have none)."""
    return [arm for arm, t in rows[0]["training"].items() if "curve" in t]


def curve_lines(rows: list[dict]) -> list[str]:
    """Test accuracy over each fine-tuning run's steps, mean over seeds, at about a dozen
    steps; every point is in the figure."""
    runs = curve_runs(rows)
    if not runs:
        return []
    lines = [
        "",
        "## Accuracy over the fine-tuning steps (mean over seeds; NLL in brackets)",
        "",
        "| step | " + " | ".join(runs) + " |",
        "|---" * (len(runs) + 1) + "|",
    ]
    steps = sorted({point["step"] for arm in runs for point in rows[0]["training"][arm]["curve"]})
    stride = max(1, math.ceil(len(steps) / 12))
    for step in [*steps[:-1:stride], steps[-1]]:
        cells = []
        for arm in runs:
            points = [p for r in rows for p in r["training"][arm]["curve"] if p["step"] == step]
            cells.append(
                f"{statistics.fmean(p['accuracy'] for p in points):.2%} "
                f"({statistics.fmean(p['nll'] for p in points):.3f})"
                if points
                else ""
            )
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(rows: list[dict], path: Path) -> bool:
    """Test accuracy and NLL over the classifier's training steps (the plain classifier's own,
    then the fine-tuning's; arm b's from fresh weights): the mean over seeds, the band from the
    lowest to the highest seed; written to ``path`` (False when no run has curves)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = curve_runs(rows)
    if not runs:
        return False
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for arm in runs:
        curves = [r["training"][arm]["curve"] for r in rows]
        before = 0 if "scratch" in arm else rows[0].get("classifier_steps", 0)
        steps = [before + p["step"] for p in curves[0]]
        for ax, key in zip(axes, ("accuracy", "nll"), strict=True):
            per_seed = [[p[key] for p in c] for c in curves if len(c) == len(steps)]
            mean = [statistics.fmean(v) for v in zip(*per_seed, strict=True)]
            line = ax.plot(steps, mean, label=arm)[0]
            ax.fill_between(
                steps,
                [min(v) for v in zip(*per_seed, strict=True)],
                [max(v) for v in zip(*per_seed, strict=True)],
                color=line.get_color(),
                alpha=0.2,
            )
    axes[0].set(xlabel="classifier training step", ylabel="test accuracy", ylim=(0, 1))
    axes[1].set(xlabel="classifier training step", ylabel="test NLL", yscale="log")
    axes[0].legend()
    fig.suptitle(f"Plain against joint training, {len(rows)} seed(s): mean and seed range")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def write_results(rows: list[dict], args: argparse.Namespace) -> str:
    """The JSON, the report and the curves' figure at ``--output``; returns the report."""
    text = report(rows, args)
    figure = args.output.with_name(f"{args.output.name}_curves.png")
    if plot_curves(rows, figure):
        text += f"\n![Accuracy and NLL over the fine-tuning steps]({figure.name})\n"
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    args.output.with_suffix(".md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--data",
        choices=list(DATA_NAMES),
        default="builtin",
        help="builtin: the main job's data and classifier; digits: scikit-learn's digits, the "
        "user's checkpoint of user_road.py (the whole test split for accuracy)",
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="add arm b: the joint recipe from fresh weights for --scratch-steps steps",
    )
    parser.add_argument(
        "--scratch-steps",
        type=int,
        help="arm b's steps (default: the plain classifier's steps plus --steps, the plain "
        "arm's total)",
    )
    parser.add_argument("--curve-every", type=int, default=50, help="test accuracy every N steps")
    parser.add_argument(
        "--curve-images", type=int, default=2000, help="test images the curves are measured on"
    )
    parser.add_argument(
        "--main-job",
        default="outputs/main-seed{seed}",
        help="the main job's output directory, '{seed}' for the seed (run there if absent)",
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--players-grid", nargs=2, type=int, default=[4, 4])
    parser.add_argument(
        "--joint-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a ShapleyConfig override of the joint arm (JSON value), e.g. shapley_loss_weight=1",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=8000)
    parser.add_argument("--num-test", type=int, default=10_000)
    parser.add_argument("--truth-images", type=int, default=32)
    parser.add_argument("--exact-images", type=int, default=8)
    parser.add_argument(
        "--train-args",
        default="",
        help="further examples/train.py arguments, for the main job and the polish alike",
    )
    parser.add_argument(
        "--output", type=Path, help="results path without suffix (default: by --data)"
    )
    parser.add_argument("--work", type=Path, help="the cache folder (default: by --data)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report and figure from --output's JSON (after a change to them)",
    )
    args = parser.parse_args(argv)
    suffix = "" if args.data == "builtin" else f"_{args.data}"
    args.output = args.output or RESULTS / f"joint_recipe{suffix}"
    args.work = args.work or REPO / "outputs" / f"joint-recipe{suffix.replace('_', '-')}"
    if not 2 <= args.exact_images <= args.truth_images:
        parser.error("--exact-images must be between 2 and --truth-images.")
    if args.report_only:
        rows = json.loads(args.output.with_suffix(".json").read_text())
        print(write_results(rows, args), flush=True)
        return
    rows = []
    for seed in args.seeds:
        rows.append(measure_seed(seed, args))
        print(write_results(rows, args), flush=True)


if __name__ == "__main__":
    main()
