"""attnserve.functional.scaled_dot_product_attention against the float64 reference with
PyTorch's SDPA conventions: forward and gradients for every dtype, GQA, causal, bool and float
masks (broadcast), dropout, the BSND-view path and 3-D inputs."""

import math

import pytest
import torch

from attnserve.functional import scaled_dot_product_attention as sdpa
import reference as ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def leaves(shapes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_(True) for s in shapes], g


def reference_sdpa(q, k, v, attend=None, additive=None, scale=None, drop_keep=None,
                   keep_prob=1.0):
    """PyTorch SDPA semantics in float64 ([B, N, S, D]); GQA by repeating kv heads."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return ref.attention_bnsd(q, k, v, scale, attend=attend, pse=additive, pse_type=0,
                              drop_keep=drop_keep, keep_prob=keep_prob)[0]


def compare(out, r_out, inputs, inputs64, dtype, g, extra=()):
    ref.assert_close(out, r_out, dtype, "out")
    dy = torch.randn(out.shape, generator=g).to(dtype)
    out.backward(dy)
    r_out.backward(dy.double())
    for i, (t, t64) in enumerate(zip(inputs, inputs64)):
        ref.assert_close(t.grad, t64.grad, dtype, f"grad of input {i}", grad=True)
    for t, t64 in extra:
        ref.assert_close(t.grad, t64.grad, dtype, "grad of attn_mask", grad=True)


def as64(tensors):
    return [t.detach().double().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
def test_plain_and_grouped_heads(client, dtype, heads):
    n1, n2 = heads
    (q, k, v), g = leaves([(2, n1, 33, 32), (2, n2, 47, 32), (2, n2, 47, 32)], dtype)
    out = sdpa(q, k, v)
    q64, k64, v64 = as64((q, k, v))
    compare(out, reference_sdpa(q64, k64, v64), (q, k, v), (q64, k64, v64), dtype, g)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_causal_is_top_left(client, dtype):
    (q, k, v), g = leaves([(1, 4, 40, 32), (1, 2, 56, 32), (1, 2, 56, 32)], dtype)
    out = sdpa(q, k, v, is_causal=True, scale=0.2)
    q64, k64, v64 = as64((q, k, v))
    attend = torch.ones(40, 56).tril().bool()  # PyTorch's is_causal
    compare(out, reference_sdpa(q64, k64, v64, attend=attend, scale=0.2), (q, k, v),
            (q64, k64, v64), dtype, g)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mask_shape", [(2, 4, 24, 40), (2, 1, 24, 40), (24, 40), (2, 1, 1, 40),
                                        (4, 24, 40)],
                         ids=["full", "per-batch", "2d", "key-padding", "3d-per-head"])
def test_bool_mask_true_means_attend(client, dtype, mask_shape):
    (q, k, v), g = leaves([(2, 4, 24, 32), (2, 4, 40, 32), (2, 4, 40, 32)], dtype)
    attend = torch.rand(mask_shape, generator=g) < 0.7
    attend[..., 0] = True  # every row keeps a key (PyTorch's own kernel gives NaN otherwise)
    out = sdpa(q, k, v, attn_mask=attend)
    q64, k64, v64 = as64((q, k, v))
    compare(out, reference_sdpa(q64, k64, v64, attend=attend), (q, k, v), (q64, k64, v64),
            dtype, g)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mask_shape", [(2, 4, 24, 40), (1, 4, 24, 40), (24, 40), (2, 1, 1, 40)],
                         ids=["full", "shared-batch", "2d", "key-bias"])
def test_float_mask_is_added_and_gets_a_gradient(client, dtype, mask_shape):
    (q, k, v), g = leaves([(2, 4, 24, 32), (2, 2, 40, 32), (2, 2, 40, 32)], dtype)
    mask = torch.randn(mask_shape, generator=g).to(dtype).requires_grad_(True)
    out = sdpa(q, k, v, attn_mask=mask)
    q64, k64, v64, m64 = as64((q, k, v, mask))
    compare(out, reference_sdpa(q64, k64, v64, additive=m64), (q, k, v), (q64, k64, v64),
            dtype, g, extra=[(mask, m64)])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dropout_uses_a_seed_from_torch(client, dtype):
    (q, k, v), g = leaves([(2, 4, 24, 32), (2, 4, 40, 32), (2, 4, 40, 32)], dtype)
    torch.manual_seed(99)
    expected_seed = int(torch.empty((), dtype=torch.int64).random_())
    torch.manual_seed(99)
    out = sdpa(q, k, v, dropout_p=0.25)
    keep = ref.padded_drop_keep(expected_seed, 0, 0.75, 2, 4, 24, 40)
    q64, k64, v64 = as64((q, k, v))
    r_out = reference_sdpa(q64, k64, v64, drop_keep=keep, keep_prob=0.75)
    compare(out, r_out, (q, k, v), (q64, k64, v64), dtype, g)


def test_bsnd_views_travel_without_copy_and_give_bsnd_views(client):
    (x_q, x_k, x_v), g = leaves([(2, 24, 4, 32), (2, 40, 2, 32), (2, 40, 2, 32)], torch.float32)
    q, k, v = (t.transpose(1, 2) for t in (x_q, x_k, x_v))  # [B, N, S, D] views
    before = client.totals()
    out = sdpa(q, k, v)
    sent = (client.totals() - before).bytes_sent
    assert out.shape == (2, 4, 24, 32)
    assert not out.is_contiguous() and out.transpose(1, 2).is_contiguous()
    assert sent < sum(t.numel() * 4 for t in (q, k, v)) + 4096
    q64, k64, v64 = as64((q, k, v))
    r_out = reference_sdpa(q64, k64, v64)
    ref.assert_close(out, r_out, torch.float32, "out")
    dy = torch.randn(out.shape, generator=g)
    out.backward(dy)
    r_out.backward(dy.double())
    ref.assert_close(x_q.grad.transpose(1, 2), q64.grad, torch.float32, "dq", grad=True)
    ref.assert_close(x_k.grad.transpose(1, 2), k64.grad, torch.float32, "dk", grad=True)
    ref.assert_close(x_v.grad.transpose(1, 2), v64.grad, torch.float32, "dv", grad=True)


def test_three_dimensional_inputs(client):
    (q, k, v), g = leaves([(4, 24, 32), (4, 40, 32), (4, 40, 32)], torch.float32)
    out = sdpa(q, k, v, is_causal=True)
    assert out.shape == (4, 24, 32)
    q64, k64, v64 = as64((q, k, v))
    r_out = reference_sdpa(q64.unsqueeze(0), k64.unsqueeze(0), v64.unsqueeze(0),
                           attend=torch.ones(24, 40).tril().bool())[0]
    compare(out, r_out, (q, k, v), (q64, k64, v64), torch.float32, g)


def test_conventions_are_checked_before_sending(client):
    q = torch.randn(1, 3, 8, 16)
    k = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="multiple of N2"):
        sdpa(q, k, k)
    with pytest.raises(ValueError, match="exclusive"):
        sdpa(q, q, q, attn_mask=torch.ones(8, 8, dtype=torch.bool), is_causal=True)
