"""Hash encoding: tcnn parameter layout, index arithmetic, own implementations vs plain autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reconstruct.nerf.hash_encoding import (
    HashEncoding, HashGridConfig, encode_reference, level_corners, level_layout, n_params, tcnn_available,
)

SMALL = HashGridConfig(n_levels=6, features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0)


def test_level_layout_follows_tcnn_formulas():
    lay = level_layout(SMALL)
    # scale_l = 2**l * 4 - 1; res = ceil(scale) + 1; size = min(next_multiple(res^3, 8), 4096)
    exp_res = [4, 8, 16, 32, 64, 128]
    exp_size = [64, 512, 4096, 4096, 4096, 4096]
    assert lay.resolutions.tolist() == exp_res
    assert lay.sizes.tolist() == exp_size
    assert lay.offsets.tolist() == [0, 64, 576, 4672, 8768, 12864, 16960]
    assert lay.dense.tolist() == [True, True, True, False, False, False]
    assert n_params(SMALL) == 16960 * 2
    # non-integer scale: res^3 rounded up to a multiple of 8
    lay2 = level_layout(HashGridConfig(n_levels=2, base_resolution=3, per_level_scale=1.5, log2_hashmap_size=19))
    s1 = np.float32(np.exp2(np.float32(math.log2(1.5))) * 3 - 1)  # 3.5 -> res 5 -> 125 -> 128
    assert lay2.resolutions.tolist() == [3, int(math.ceil(s1)) + 1] == [3, 5]
    assert lay2.sizes.tolist() == [32, 128]


def test_module_parameter_is_one_flat_tcnn_sized_vector():
    enc = HashEncoding(SMALL, implementation="torch")
    names = [n for n, _ in enc.named_parameters()]
    assert names == ["params"] and enc.params.shape == (n_params(SMALL),)
    assert float(enc.params.detach().abs().max()) <= 1e-4  # tcnn init: U(-1e-4, 1e-4)
    assert enc.n_output_dims == 12


def test_corner_indices_dense_and_hashed_match_independent_uint32_arithmetic():
    lay = level_layout(SMALL)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(50, 3, generator=g)
    for level in range(SMALL.n_levels):
        idx, w = level_corners(x, lay, level)
        assert torch.allclose(w.sum(1), torch.ones(50), atol=1e-6)
        pos = x.numpy().astype(np.float32) * lay.scales[level] + np.float32(0.5)
        base = np.floor(pos).astype(np.uint32)
        for c in range(8):
            cc = base + np.array([(c >> d) & 1 for d in range(3)], np.uint32)
            r, size = np.uint32(lay.resolutions[level]), np.uint32(lay.sizes[level])
            with np.errstate(over="ignore"):
                if lay.dense[level]:
                    expect = (cc[:, 0] + cc[:, 1] * r + cc[:, 2] * r * r) % size
                else:
                    h = cc[:, 0] ^ (cc[:, 1] * np.uint32(2654435761)) ^ (cc[:, 2] * np.uint32(805459861))
                    expect = h % size
            assert idx[:, c].numpy().tolist() == expect.astype(np.int64).tolist(), (level, c)


def test_interpolation_hits_vertex_values_and_is_linear_along_an_edge():
    lay = level_layout(SMALL)
    params = torch.randn(n_params(SMALL))
    table = params.view(-1, 2)
    level = 1  # dense, res 8, scale 7: vertex k sits at (k - 0.5) / 7
    s = float(lay.scales[level])
    v = torch.tensor([[2.0, 3.0, 1.0]])
    x = (v - 0.5) / s
    out = encode_reference(x, params, lay, 2)[:, level * 2:(level + 1) * 2]
    flat = int(2 + 3 * 8 + 1 * 64)
    assert torch.allclose(out[0], table[lay.offsets[level] + flat], atol=1e-5)
    # halfway between (2,3,1) and (3,3,1): mean of the two vertex values
    x_mid = (v + torch.tensor([[0.5, 0.0, 0.0]]) - 0.5) / s
    out_mid = encode_reference(x_mid, params, lay, 2)[:, level * 2:(level + 1) * 2]
    expect = 0.5 * (table[lay.offsets[level] + flat] + table[lay.offsets[level] + flat + 1])
    assert torch.allclose(out_mid[0], expect, atol=1e-5)


@pytest.mark.parametrize("impl", ["torch", "numba"])
@pytest.mark.parametrize("masked", [False, True])
def test_own_implementations_match_plain_autograd(impl, masked):
    g = torch.Generator().manual_seed(0)
    ref, own = HashEncoding(SMALL, implementation="reference"), HashEncoding(SMALL, implementation=impl)
    p = torch.randn(n_params(SMALL), generator=g)
    ref.params.data.copy_(p)
    own.params.data.copy_(p)
    x = torch.rand(3000, 3, generator=g)
    x[:10] = torch.tensor([0.0, 1.0, 0.5])  # cube faces
    mask = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool) if masked else None
    up = torch.randn(3000, 12, generator=g)
    outs = []
    for enc in (ref, own):
        y = enc(x, mask)
        (y * up).sum().backward()
        outs.append((y.detach(), enc.params.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-4)
    if masked:
        assert float(outs[1][0][:, 8:].abs().max()) == 0.0
        fine = slice(int(own.layout.offsets[4]) * 2, None)
        assert float(outs[1][1][fine].abs().max()) == 0.0


def test_gradcheck_of_the_torch_function_in_double():
    from reconstruct.nerf.hash_encoding import _HashGridFunction

    tiny = HashGridConfig(n_levels=2, base_resolution=2, per_level_scale=2.0, log2_hashmap_size=4)
    lay = level_layout(tiny)
    assert lay.dense.tolist() == [True, False]  # one dense, one hashed level
    x = torch.rand(20, 3, dtype=torch.float64)
    p = torch.randn(n_params(tiny), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _HashGridFunction.apply(x, t, lay, 2, None), (p,), eps=1e-6, atol=1e-6)


def test_state_dict_moves_between_implementations():
    a = HashEncoding(SMALL, implementation="numba")
    b = HashEncoding(SMALL, implementation="torch")
    b.load_state_dict(a.state_dict())
    x = torch.rand(100, 3)
    assert torch.allclose(a(x), b(x), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_torch_function_matches_cpu_and_tcnn_when_built():
    dev = torch.device("cuda")
    cpu = HashEncoding(SMALL, implementation="reference")
    gpu = HashEncoding(SMALL, implementation="torch").to(dev)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.rand(1000, 3)
    assert torch.allclose(cpu(x), gpu(x.to(dev)).cpu(), atol=1e-5)
    if tcnn_available():
        tc = HashEncoding(SMALL, implementation="tcnn").to(dev)
        tc.load_state_dict(cpu.state_dict())
        assert torch.allclose(cpu(x), tc(x.to(dev)).cpu(), atol=1e-3)


@pytest.mark.parametrize("impl", ["torch", "numba", "reference"])
def test_fractional_level_weights_scale_features_and_gradients(impl):
    g = torch.Generator().manual_seed(3)
    enc = HashEncoding(SMALL, implementation=impl)
    enc.params.data.copy_(torch.randn(n_params(SMALL), generator=g))
    x = torch.rand(200, 3, generator=g)
    w = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    full = encode_reference(x, enc.params.detach(), enc.layout, 2)
    out = enc(x, w)
    assert torch.allclose(out, full * w.repeat_interleave(2), atol=1e-5)
    out.sum().backward()
    lay = enc.layout
    assert float(enc.params.grad[int(lay.offsets[3]) * 2:].abs().max()) == 0.0
    assert float(enc.params.grad[int(lay.offsets[2]) * 2:int(lay.offsets[3]) * 2].abs().sum()) > 0.0
