"""Model-based priors with tiny random models built from configs (no hub): monocular depth through
transformers (DepthAnything architecture) and the diffusion prior through a diffusers Stable
Diffusion img2img pipeline. These check the plumbing (loading by path, caching, shapes, schedule,
targets used), not quality."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reconstruct.priors.config import DiffusionConfig, MonoDepthConfig, PriorsConfig

transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install 'recon[depth]')")


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory):
    import scenes
    from reconstruct.demo import write_demo_scene

    root = write_demo_scene(tmp_path_factory.mktemp("scene"), n_train=6, n_test=2, size=32)
    return scenes.load_scene(root, views=3)


@pytest.fixture(scope="module")
def tiny_depth_model(tmp_path_factory) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
                              fusion_hidden_size=8, head_hidden_size=8, patch_size=14)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_depth_anything")
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(path)
    return path


def _method(scene, priors=None):
    """A SplatMethod on ``scene`` with 300 random Gaussians, SH degree 0, no densification."""
    from reconstruct.config import InitConfig, LossConfig, OptimConfig
    from reconstruct.splatting import SplatMethod, model_from_points

    optim = OptimConfig(sh_degree=0)
    rng = np.random.default_rng(0)
    model = model_from_points(rng.uniform(-0.6, 0.6, (300, 3)), rng.uniform(0, 1, (300, 3)), init=InitConfig(),
                              optim=optim, scene=scene, device=torch.device("cpu"))
    return SplatMethod(scene, model, optim=optim, loss=LossConfig(), total_steps=10, seed=0)


def _trainer(scene, run_dir, priors):
    from reconstruct.priors import attach_priors

    method = _method(scene)
    attach_priors(method, priors, Path(run_dir) / "priors", seed=0)
    return method


def test_mono_depth_predicts_caches_and_trains(demo_scene, tiny_depth_model, tmp_path):
    from reconstruct.priors.depth import predict_mono_depth

    mc = MonoDepthConfig(enabled=True, model=str(tiny_depth_model))
    preds = predict_mono_depth(demo_scene, list(demo_scene.train_ids), mc, tmp_path / "cache")
    assert set(preds) == set(demo_scene.train_ids)
    for p in preds.values():
        assert p.shape == (demo_scene.height, demo_scene.width) and np.isfinite(p).all() and p.std() > 0
    files = sorted((tmp_path / "cache" / "mono_depth").rglob("*.npy"))
    assert len(files) == len(demo_scene.train_ids)
    # second call is served from the cache: it works even with the model gone
    again = predict_mono_depth(demo_scene, list(demo_scene.train_ids),
                               dataclasses.replace(mc, model=str(tiny_depth_model)), tmp_path / "cache")
    assert all(np.array_equal(again[i], preds[i]) for i in preds)

    tr = _trainer(demo_scene, tmp_path / "run", PriorsConfig(mono_depth=mc))
    assert [r.name for r in tr.regularizers] == ["mono_depth"]
    assert len(list((tmp_path / "run" / "priors" / "mono_depth").rglob("*.npy"))) == 3  # cached in the run folder
    r = tr.train_step(0)
    assert "mono_depth" in r.terms and 0 < r.terms["mono_depth"] < 10


def test_mono_depth_without_weights_says_so_once_and_continues(demo_scene, tmp_path, caplog):
    missing = tmp_path / "no_such_model"
    missing.mkdir()  # exists but holds no weights
    tr = _trainer(demo_scene, tmp_path / "run", PriorsConfig(mono_depth=MonoDepthConfig(enabled=True, model=str(missing))))
    lines = [r.getMessage() for r in caplog.records if "monocular depth prior off" in r.getMessage()]
    assert len(lines) == 1 and str(missing) in lines[0]
    assert tr.regularizers == []
    tr.train_step(0)


# ---------------------------------------------------------------------- diffusion
def _clip_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP BPE vocabulary without merges (every byte is a token): enough to tokenize."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]  # GPT-2 byte -> unicode map
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers", reason="diffusers not installed (pip install 'recon[diffusion]')")
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("tok")
    _clip_tokenizer_files(tmp)
    tokenizer = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=16,
                                        num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=16,
                                        projection_dim=16))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
                                attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=DDIMScheduler(num_train_timesteps=100), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    path = tmp_path_factory.mktemp("tiny_sd")
    pipe.save_pretrained(path)
    return path


def test_diffusion_refine_shapes_and_strength(tiny_diffusion):
    from reconstruct.priors.diffusion import load_pipeline, refine, refine_size

    assert refine_size(50, 30, 512) == (48, 32) and refine_size(1000, 500, 512) == (512, 256)
    pipe = load_pipeline(str(tiny_diffusion))
    imgs = torch.rand(2, 20, 28, 3)
    calls = []
    unet_forward = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(1) or unet_forward(*a, **k)
    out = refine(pipe, imgs, DiffusionConfig(strength=0.3, steps=10), seed=0)
    assert out.shape == imgs.shape and 0 <= out.min() and out.max() <= 1 and torch.isfinite(out).all()
    assert len(calls) == 2 * 3  # strength 0.3 of a 10-step schedule = 3 denoising steps per image
    again = refine(pipe, imgs, DiffusionConfig(strength=0.3, steps=10), seed=0)
    assert torch.allclose(out, again)


def test_diffusion_prior_refreshes_on_schedule_and_fits_targets(demo_scene, tiny_diffusion, tmp_path):
    from reconstruct.priors.config import Schedule

    dc = DiffusionConfig(enabled=True, model=str(tiny_diffusion), schedule=Schedule(start=2, every=1), interval=3,
                         n_views=2, steps=4, strength=0.5, weight=1.0)
    tr = _trainer(demo_scene, tmp_path / "run", PriorsConfig(diffusion=dc))
    (prior,) = tr.regularizers
    terms = [tr.train_step(s).terms for s in range(6)]
    assert prior.refreshed_at == [2, 5]
    assert "diffusion" not in terms[0] and "diffusion" not in terms[1] and all("diffusion" in t for t in terms[2:])
    assert len(prior.targets) == 2
    T, K, img = prior.targets[0]
    assert T.shape == (1, 4, 4) and K.shape == (1, 3, 3) and img.shape == (demo_scene.height, demo_scene.width, 3)
    # the loss pulls renders toward the refined image: its gradient reaches the colors
    from reconstruct import gaussians as G

    params = tr.model.params
    out, _, _ = G.render(G.activate(params), T, K, demo_scene.width, demo_scene.height, sh_degree=0,
                         background=tr.background, render_mode="RGB")
    loss = (out[0, ..., :3] - img).abs().mean()
    loss.backward()
    assert params["sh0"].grad is not None and params["sh0"].grad.abs().sum() > 0
