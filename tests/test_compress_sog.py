"""`recon compress` trains SOG's own quantization: scene.sog decodes to the values the fine-tuning
rendered (up to float rounding), and its codebooks have SOG's sizes."""

import json
import zipfile

import numpy as np
import torch

from pruning.compress import CompressConfig, compress_splats
from pruning.formats import read_splats, sog
from pruning.sog_quantize import SogQuantizeConfig, SogQuantizer, palette_entries
from tests.test_compress import _gt_splats, _scene


class _Ctx:
    def __init__(self, params):
        self.params = params


def test_written_sog_is_what_the_quantizer_renders(tmp_path):
    from reconstruct.gaussians import activate

    splats = _gt_splats(500, seed=2)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in splats.to_params("cpu").items()})
    quantizer = SogQuantizer(params, SogQuantizeConfig(palette=64))
    gs = quantizer.modifier(activate(params), _Ctx(params))
    path = sog.write_data(tmp_path / "scene.sog", quantizer.encode(params), layout="morton")
    back = read_splats(path)
    order = sog.texel_order(quantizer.encode(params).decode_means(), "morton")  # row t of the file is splat order[t]
    rendered = {"means": gs.means, "scales": gs.scales, "opacities": gs.opacities, "colors": gs.colors}
    rendered = {k: v.detach().numpy()[order] for k, v in rendered.items()}
    np.testing.assert_allclose(back.means, rendered["means"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.exp(back.log_scales), rendered["scales"], rtol=1e-6)
    np.testing.assert_allclose(back.opacities, rendered["opacities"], rtol=1e-6)
    colors = np.concatenate([back.sh0[:, None], back.shN], 1)
    np.testing.assert_allclose(colors, rendered["colors"], rtol=1e-6, atol=1e-7)
    q = gs.quats.detach().numpy()[order]
    np.testing.assert_allclose(np.abs((back.quats * q).sum(1)), 1.0, atol=1e-6)  # same rotation
    # SOG's sizes: 256-entry 1-D codebooks, the palette asked for, 8/16-bit codes
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
    assert len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == len(meta["shN"]["codebook"]) == 256
    assert meta["shN"]["count"] == 64 and meta["count"] == 500


def test_rotations_are_snapped_once_and_frozen(tmp_path):
    """The quantizer snaps the rotations to the stored grid; the SOG phase leaves them there (their
    straight-through form drifted), so the written rotations are the snapped ones."""
    from pruning.compress import sog_phase
    from pruning.sog_quantize import smallest_three

    gt = _gt_splats(300, seed=4)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in gt.to_params("cpu").items()})
    raw = params["quats"].detach().clone()
    SogQuantizer(params, SogQuantizeConfig(palette=32, quat_bits=6))
    snapped = smallest_three(raw, 6)[1]
    assert torch.equal(params["quats"].detach(), snapped)
    assert (raw / raw.norm(dim=1, keepdim=True) - snapped).abs().max() > 1e-3  # 6 bits: a visible snap
    assert "quats" in SogQuantizer.frozen
    cfg = CompressConfig(quantize_steps=15, progress=False, device="cpu", sog=SogQuantizeConfig(palette=32))
    from reconstruct.config import LossConfig, OptimConfig

    data, _, _ = sog_phase(gt, _scene(gt), cfg, optim=OptimConfig(), loss=LossConfig(), device=torch.device("cpu"))
    start = smallest_three(torch.as_tensor(gt.quats), cfg.sog.quat_bits)[0].numpy().astype(np.uint8)
    same = (data.quats == start).all(1)
    # 15 steps of fine-tuning moved no rotation (a snapped value re-encodes to itself but for float
    # rounding at a grid line: 2 of 300 rows one grid step apart)
    assert same.mean() > 0.98, same.mean()


def test_palette_size_follows_the_count():
    cfg = SogQuantizeConfig()
    assert palette_entries(22_000, cfg) == 256  # 22k / 64 = 344 -> 2^8
    assert palette_entries(1_000_000, cfg) == 16384
    assert palette_entries(100, cfg) == 100  # never more entries than Gaussians
    assert palette_entries(10_000_000, cfg) == 65536
    assert palette_entries(5000, SogQuantizeConfig(palette=300)) == 300


def test_compress_writes_the_fine_tuned_sog(tmp_path):
    gt = _gt_splats(300, seed=1)
    scene = _scene(gt)
    cfg = CompressConfig(masks=False, quantize=True, quantize_steps=20, progress=False, export_compressed_ply=False,
                         device="cpu", sog=SogQuantizeConfig(palette=32))
    report = compress_splats(gt, scene, tmp_path, cfg)
    assert report["sog_trained"] and report["codebooks"] == {"scales": 256, "sh0": 256, "shN_palette": 32}
    assert report["sog_max_error"] < 1e-5, report["sog_max_error"]  # the file is the fine-tuned state
    assert abs(report["psnr_sog"] - report["psnr_after"]) < 1e-3, (report["psnr_sog"], report["psnr_after"])
    assert report["psnr_after"] > 25, report["psnr_after"]
    assert report["sog_bytes"] == (tmp_path / "scene.sog").stat().st_size


def test_bench_compares_with_splat_transform(tmp_path, monkeypatch):
    """The bench's comparison on a tiny run: ours without and with masks, splat-transform's row
    (or a note when it is absent), every file decoded by our reader and scored."""
    import shutil as _shutil

    from recon.bench import compress_sog
    from reconstruct.run import Run

    gt = _gt_splats(200, seed=3)
    scene = _scene(gt)

    class _Cfg:
        optim = loss = None

    class _Run:
        splat_config = _Cfg()
        splats_path = tmp_path / "splats.ply"

        def scene(self):
            return scene

        def splats(self):
            return gt

    from pruning.formats import write_splats

    write_splats(_Run.splats_path, gt, format="ply")
    monkeypatch.setattr(Run, "open", staticmethod(lambda _: _Run()))
    monkeypatch.setattr("reconstruct.run.resolve_device", lambda _: torch.device("cpu"))
    tool = compress_sog.splat_transform(None)
    res = compress_sog.compare(tmp_path, steps=5, st_iterations=1, tool=tool if _shutil.which("node") else "/nonexistent",
                               progress=False)
    rows = {r["variant"]: r for r in res["rows"]}
    assert {"recon compress", "recon compress, masks"} <= set(rows)
    assert res["ply_bytes"] == _Run.splats_path.stat().st_size
    for r in rows.values():
        assert r["bytes"] > 0 and r["x_ply"] > 0 and np.isfinite(r["psnr"]), r  # 200 splats: SOG need not beat .ply
    assert ("splat-transform -i 1" in rows) != (res["st_note"] is not None)
    # our files stand upright (turned from the world's +z), scored from cameras turned the same way:
    # a file scored from the world's cameras would be tens of dB off
    # (the photos are renders of these splats, so the uncompressed score is infinite)
    assert rows["recon compress"]["psnr"] > 28.0, rows["recon compress"]
    if "splat-transform -i 1" in rows:  # splat-transform keeps the .ply's (world) axes
        assert rows["splat-transform -i 1"]["psnr"] > 25.0, rows["splat-transform -i 1"]
    compress_sog.print_table(res)


def test_codebook_pads_keep_it_sorted_and_short():
    from pruning.sog_quantize import ScalarCodebook

    book = ScalarCodebook(torch.linspace(-3.3, 1.93, 500), 64)
    padded = book.padded()
    assert padded.shape == (256,) and np.all(np.diff(padded) >= 0)
    np.testing.assert_array_equal(padded[:64], book.entries.numpy())
    assert np.all(padded[64:] == 2.0)  # the smallest integer not below the last entry
