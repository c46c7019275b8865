"""GPU code paths (CUDA, bf16). Skipped where torch sees no CUDA device (CI, CPU machines);
run on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig

import hf_shapley  # noqa: F401
from hf_shapley import ShapleyConfig, ShapleyForImageClassification
from hf_shapley.evaluation import exact_model_shapley_values

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_VIT = dict(
    image_size=32,
    patch_size=8,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
)


def _model(**overrides) -> ShapleyForImageClassification:
    torch.manual_seed(0)
    config = ShapleyConfig(
        backbone_config=ViTConfig(**TINY_VIT), num_labels=5, players_grid=(4, 4), **overrides
    )
    return ShapleyForImageClassification(config).cuda()


def test_cuda_matches_cpu_fp32():
    model = _model().eval()
    x = torch.randn(3, 3, 32, 32)
    masks = torch.rand(3, 6, 16) > 0.5
    with torch.no_grad():
        gpu = model(x.cuda())
        gpu_v = model(x.cuda(), coalition=masks.cuda()).logits
        model.cpu()
        cpu = model(x)
        cpu_v = model(x, coalition=masks).logits
    # TF32 may be on for CUDA matmuls: compare at a tolerance that covers it.
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu.shapley_values.cpu(), cpu.shapley_values, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu_v.cpu(), cpu_v, rtol=1e-3, atol=1e-3)


def test_bf16_autocast_keeps_explanation_fp32_and_efficient():
    model = _model().eval()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
        full = model(x, coalition=torch.ones(4, 16, dtype=torch.bool, device="cuda")).logits
        empty = model(x, coalition=torch.zeros(4, 16, dtype=torch.bool, device="cuda")).logits
    for t in (out.logits, out.shapley_values, out.base_values, full, empty):
        assert t.dtype == torch.float32
    torch.testing.assert_close(
        out.logits, out.base_values + out.shapley_values.sum(1), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(empty, out.base_values, rtol=0, atol=1e-6)
    # v(all) runs through the packed path, the prediction through the plain one: bf16 noise only.
    torch.testing.assert_close(full, out.logits, rtol=0.05, atol=0.05)


def test_bf16_training_step_is_finite_and_moves_weights():
    model = _model(num_shapley_coalitions=8, num_distill_coalitions=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(8, 3, 32, 32, device="cuda")
    y = torch.randint(0, 5, (8,), device="cuda")
    before = model.shapley_head.out_proj.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, labels=y, example_index=torch.arange(8))
    for name in ("loss", "cls_loss", "distill_loss", "shapley_loss"):
        assert torch.isfinite(getattr(out, name)), name
    assert out.distill_loss > 0 and out.shapley_loss > 0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    assert not torch.equal(before, model.shapley_head.out_proj.weight)


def test_exact_truth_on_cuda_satisfies_efficiency():
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    truth = exact_model_shapley_values(model, x)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(
        truth.sum(1).float().cpu(), (out.logits - out.base_values).cpu(), rtol=1e-3, atol=1e-3
    )


def test_pipeline_on_cuda_matches_cpu_in_fp32_and_bf16(tmp_path):
    import numpy as np
    from PIL import Image
    from transformers import ViTImageProcessorPil, pipeline

    model = _model().eval().cpu()
    model.image_processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    model.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]
    cpu = pipeline("image-shapley-explanation", model=str(tmp_path), device="cpu")
    expected = cpu(images, targets=[0, 3], heatmap=False)
    for dtype, tol in ((torch.float32, 1e-3), (torch.bfloat16, 0.1)):
        gpu = pipeline("image-shapley-explanation", model=str(tmp_path), device="cuda", dtype=dtype)
        assert gpu.model.device.type == "cuda"
        got = gpu(images, targets=[0, 3], heatmap=True, batch_size=3)
        for mine, ref in zip(got, expected, strict=True):
            for a, b in zip(mine, ref, strict=True):
                assert a["heatmap"].size == (50, 40)
                assert a["logit"] == pytest.approx(b["logit"], abs=tol * 10)
                np.testing.assert_allclose(a["attributions"], b["attributions"], atol=tol * 10)
                assert abs(a["efficiency_residual"]) < tol


def test_resnet_on_cuda_matches_cpu_and_keeps_batchnorm_statistics():
    from transformers import ResNetConfig

    torch.manual_seed(0)
    config = ShapleyConfig(
        backbone_config=ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
        ),
        image_size=[32, 32],
        num_labels=5,
        players_grid=(2, 2),
    )
    model = ShapleyForImageClassification(config).eval()
    x = torch.randn(3, 3, 32, 32)
    masks = torch.rand(3, 4, 4) > 0.5
    with torch.no_grad():
        cpu = model(x)
        cpu_v = model(x, coalition=masks).logits
        model.cuda()  # the cached v(empty) must follow the move
        gpu = model(x.cuda())
        gpu_v = model(x.cuda(), coalition=masks.cuda()).logits
    for a, b in ((gpu.logits, cpu.logits), (gpu.base_values, cpu.base_values), (gpu_v, cpu_v)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu.logits, gpu.base_values + gpu.shapley_values.sum(1))

    # A joint bf16 training step: masked passes leave the BatchNorm statistics to the one
    # unmasked pass, so they equal those of a plain forward in training mode.
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    reference = ShapleyForImageClassification(config).cuda()
    reference.load_state_dict(model.state_dict())
    model.train()
    reference.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x.cuda(), labels=torch.tensor([0, 1, 2]).cuda()).loss
        with torch.no_grad():
            reference.explain(x.cuda())
    loss.backward()
    assert torch.isfinite(loss)
    ref_bn = [m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for a, b in zip(bn, ref_bn, strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-2, atol=1e-3)
        torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-2, atol=1e-3)
