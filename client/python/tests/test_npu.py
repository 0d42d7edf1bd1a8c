"""attnserve.npu.npu_fusion_attention / _grad against the float64 reference: forward outputs,
softmax statistics and autograd gradients, for every dtype and layout and the features."""

import math

import numpy as np
import pytest
import torch

import attnserve
from attnserve.npu import npu_fusion_attention, npu_fusion_attention_grad
import reference as ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


class Case:
    """Random inputs of one call in a layout, as leaf tensors that require grad, plus their
    float64 [B, N, S, D] copies for the reference."""

    def __init__(self, layout, dtype, b=2, n1=4, n2=2, sq=40, skv=56, d=32, dv=32, seed=0,
                 qlens=None, kvlens=None):
        g = torch.Generator().manual_seed(seed)
        self.layout, self.dtype = layout, dtype
        self.n1, self.n2, self.d, self.dv = n1, n2, d, dv
        if layout == "TND":
            self.qlens, self.kvlens = qlens, kvlens
            t1, t2 = sum(qlens), sum(kvlens)
            self.q = torch.randn(t1, n1, d, generator=g).to(dtype)
            self.k = torch.randn(t2, n2, d, generator=g).to(dtype)
            self.v = torch.randn(t2, n2, dv, generator=g).to(dtype)
        else:
            self.b, self.sq, self.skv = b, sq, skv
            self.q = ref.make_layout(torch.randn(b, n1, sq, d, generator=g), layout).to(dtype)
            self.k = ref.make_layout(torch.randn(b, n2, skv, d, generator=g), layout).to(dtype)
            self.v = ref.make_layout(torch.randn(b, n2, skv, dv, generator=g),
                                     layout).to(dtype)
        for t in (self.q, self.k, self.v):
            t.requires_grad_(True)
        self.scale = 1.0 / math.sqrt(d)
        self.generator = g

    def cumulative(self, lengths):
        return list(np.cumsum(lengths))

    def npu_kwargs(self):
        if self.layout == "TND":
            return dict(actual_seq_qlen=self.cumulative(self.qlens),
                        actual_seq_kvlen=self.cumulative(self.kvlens))
        return {}

    def leaves64(self):
        return [t.detach().double().requires_grad_(True) for t in (self.q, self.k, self.v)]

    def reference(self, q64, k64, v64, **kw):
        """(out in the layout, softmax_max, softmax_sum as [.., N1, Sq] / [T, N1])."""
        if self.layout != "TND":
            out, m, l = ref.attention_bnsd(ref.to_bnsd(q64, self.layout, self.n1),
                                           ref.to_bnsd(k64, self.layout, self.n2),
                                           ref.to_bnsd(v64, self.layout, self.n2),
                                           self.scale, **kw)
            return ref.from_bnsd(out, self.layout), m, l
        outs, ms, ls = [], [], []
        qa = ka = 0
        attend = kw.pop("attend_per_batch", None)
        drops = kw.pop("drop_per_batch", None)
        for i, (sq, skv) in enumerate(zip(self.qlens, self.kvlens)):
            qb = q64[qa:qa + sq].permute(1, 0, 2).unsqueeze(0)
            kb = k64[ka:ka + skv].permute(1, 0, 2).unsqueeze(0)
            vb = v64[ka:ka + skv].permute(1, 0, 2).unsqueeze(0)
            extra = dict(kw)
            if attend is not None:
                extra["attend"] = attend[i]
            if drops is not None:
                extra["drop_keep"] = drops[i]
            out, m, l = ref.attention_bnsd(qb, kb, vb, self.scale, **extra)
            outs.append(out[0].permute(1, 0, 2))
            ms.append(m[0].permute(1, 0))
            ls.append(l[0].permute(1, 0))
            qa, ka = qa + sq, ka + skv
        return torch.cat(outs), torch.cat(ms), torch.cat(ls)


def check_forward_backward(case, outputs, reference_kwargs=None, extra_leaves=()):
    """Compares npu outputs and autograd gradients with the reference."""
    out, softmax_max, softmax_sum = outputs[:3]
    q64, k64, v64 = case.leaves64()
    extra64 = [t.detach().double().requires_grad_(True) for t in extra_leaves]
    kwargs = dict(reference_kwargs or {})
    if extra_leaves:
        kwargs["pse"] = extra64[0]
    r_out, r_max, r_sum = case.reference(q64, k64, v64, **kwargs)
    dtype = case.dtype
    ref.assert_close(out, r_out, dtype, "attention_out")
    assert softmax_max.dtype == torch.float32 and softmax_max.shape[-1] == 8
    assert torch.equal(softmax_max, softmax_max[..., :1].expand_as(softmax_max))
    ref.assert_close(softmax_max[..., 0], r_max, torch.float32, "softmax_max")
    ref.assert_close(softmax_sum[..., 0], r_sum, torch.float32, "softmax_sum")
    dy = torch.randn(out.shape, generator=case.generator).to(dtype)
    out.backward(dy)
    r_out.backward(dy.double())
    for name, leaf, leaf64 in (("dq", case.q, q64), ("dk", case.k, k64), ("dv", case.v, v64)):
        assert leaf.grad is not None and leaf.grad.dtype == dtype, name
        ref.assert_close(leaf.grad, leaf64.grad, dtype, name, grad=True)
    for leaf, leaf64 in zip(extra_leaves, extra64):
        ref.assert_close(leaf.grad, leaf64.grad, dtype, "dpse", grad=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["BNSD", "BSND", "BSH", "SBH", "TND"])
def test_layouts_and_dtypes_with_gqa(client, layout, dtype):
    case = Case(layout, dtype, dv=16 if layout != "SBH" else 32,
                qlens=[17, 0, 23], kvlens=[30, 9, 26])
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, layout, scale=case.scale,
                                   **case.npu_kwargs())
    assert len(outputs) == 7
    check_forward_backward(case, outputs)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", [2, 3])
def test_causal_sparse_modes(client, dtype, mode):
    case = Case("BSND", dtype, sq=40, skv=56)
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BSND", scale=case.scale,
                                   sparse_mode=mode)
    check_forward_backward(case, outputs, dict(attend=ref.causal_attend(40, 56, mode)))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_causal_tnd(client, dtype):
    case = Case("TND", dtype, qlens=[21, 30], kvlens=[21, 30])
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "TND", scale=case.scale,
                                   sparse_mode=3, **case.npu_kwargs())
    attend = [ref.causal_attend(s, s, 3) for s in case.qlens]
    check_forward_backward(case, outputs, dict(attend_per_batch=attend))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bool_mask_with_a_fully_masked_row(client, dtype):
    case = Case("BNSD", dtype)
    masked = torch.rand(case.b, 1, case.sq, case.skv, generator=case.generator) < 0.3
    masked[1, 0, 5, :] = True  # query 5 of batch 1 sees no key
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BNSD", scale=case.scale,
                                   atten_mask=masked)
    check_forward_backward(case, outputs, dict(attend=~masked))
    out, softmax_max = outputs[0], outputs[1]
    assert torch.all(out[1, :, 5] == 0)
    assert torch.all(softmax_max[1, :, 5] == -ref.FLT_MAX)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_band_of_pre_and_next_tokens(client, dtype):
    case = Case("BSH", dtype, sq=48, skv=48)
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BSH", scale=case.scale,
                                   pre_tockens=7, next_tockens=0)
    i = torch.arange(48).unsqueeze(1)
    j = torch.arange(48).unsqueeze(0)
    check_forward_backward(case, outputs, dict(attend=(j <= i) & (j >= i - 7)))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_pse_and_its_gradient(client, dtype):
    case = Case("BNSD", dtype)
    pse = (0.5 * torch.randn(case.b, case.n1, case.sq, case.skv, generator=case.generator)
           ).to(dtype).requires_grad_(True)
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BNSD", pse=pse,
                                   scale=case.scale)
    check_forward_backward(case, outputs, extra_leaves=[pse])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_seeded_dropout_forward_and_backward_agree(client, dtype):
    case = Case("BNSD", dtype)
    torch.manual_seed(1234)
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BNSD", scale=case.scale,
                                   keep_prob=0.8)
    seed, offset, numels = outputs[4:7]
    assert numels == case.b * case.n1 * case.sq * case.skv
    assert seed != 0 and offset == 0
    keep = ref.padded_drop_keep(seed, offset, 0.8, case.b, case.n1, case.sq, case.skv)
    assert 0.75 < keep.double().mean().item() < 0.85
    check_forward_backward(case, outputs, dict(drop_keep=keep, keep_prob=0.8))
    # torch.manual_seed reproduces the seed, hence the mask.
    torch.manual_seed(1234)
    again = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BNSD", scale=case.scale,
                                 keep_prob=0.8)
    assert again[4] == seed
    assert torch.equal(again[0], outputs[0])


def test_seeded_dropout_tnd(client):
    case = Case("TND", torch.float32, qlens=[19, 26], kvlens=[33, 20])
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "TND", scale=case.scale,
                                   keep_prob=0.7, **case.npu_kwargs())
    seed, offset, numels = outputs[4:7]
    assert numels == case.n1 * (19 * 33 + 26 * 20)
    drops = ref.tnd_drop_keep(seed, offset, 0.7, case.n1, case.qlens, case.kvlens)
    check_forward_backward(case, outputs, dict(drop_per_batch=drops, keep_prob=0.7))


def test_inner_precise_one_is_accepted(client):
    """torch_npu on CANN 7.0 sent inner_precise=1 by default."""
    case = Case("BNSD", torch.float32)
    outputs = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BNSD", scale=case.scale,
                                   inner_precise=1)
    check_forward_backward(case, outputs)


def test_returned_tuple_like_torch_npu(client):
    case = Case("BSND", torch.bfloat16)
    out, smax, ssum, softmax_out, seed, offset, numels = npu_fusion_attention(
        case.q, case.k, case.v, case.n1, "BSND", scale=case.scale)
    assert out.dtype == torch.bfloat16 and out.shape == (case.b, case.sq, case.n1, case.dv)
    assert smax.shape == ssum.shape == (case.b, case.n1, case.sq, 8)
    assert not smax.requires_grad and out.requires_grad
    assert softmax_out.numel() == 0 and softmax_out.dtype == torch.bfloat16
    assert (seed, offset) == (0, 0)
    assert numels == case.b * case.n1 * case.sq * case.skv


@pytest.mark.parametrize("residuals", [True, False], ids=["residuals", "recomputed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_npu_fusion_attention_grad(client, dtype, residuals):
    case = Case("BSND", dtype)
    with torch.no_grad():
        out, smax, ssum = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BSND",
                                               scale=case.scale)[:3]
    dy = torch.randn(out.shape, generator=case.generator).to(dtype)
    extra = dict(softmax_max=smax, softmax_sum=ssum, attention_in=out) if residuals else {}
    dq, dk, dv, dpse = npu_fusion_attention_grad(case.q, case.k, case.v, dy, case.n1, "BSND",
                                                 scale_value=case.scale, **extra)
    assert dpse.numel() == 0
    q64, k64, v64 = case.leaves64()
    r_out, _, _ = case.reference(q64, k64, v64)
    r_out.backward(dy.double())
    for name, got, leaf in (("dq", dq, q64), ("dk", dk, k64), ("dv", dv, v64)):
        ref.assert_close(got, leaf.grad, dtype, name, grad=True)


def test_gradient_by_finite_differences(client):
    """dq / dk / dv / dpse of the autograd path against central differences of the forward
    computed by the service (fp32, tiny shapes)."""
    torch.manual_seed(7)
    q = torch.randn(1, 2, 5, 8, requires_grad=True)
    k = torch.randn(1, 1, 6, 8, requires_grad=True)
    v = torch.randn(1, 1, 6, 8, requires_grad=True)
    pse = torch.randn(1, 2, 5, 6, requires_grad=True)
    w = torch.randn(1, 2, 5, 8)

    def loss(qq, kk, vv, pp):
        return (npu_fusion_attention(qq, kk, vv, 2, "BNSD", pse=pp, scale=0.35)[0].double()
                * w).sum()

    loss(q, k, v, pse).backward()
    eps = 1e-2
    for tensor, name in ((q, "dq"), (k, "dk"), (v, "dv"), (pse, "dpse")):
        flat = tensor.detach().reshape(-1)
        for index in (0, flat.numel() // 2, flat.numel() - 1):
            with torch.no_grad():
                saved = flat[index].item()
                flat[index] = saved + eps
                up = loss(q.detach(), k.detach(), v.detach(), pse.detach()).item()
                flat[index] = saved - eps
                down = loss(q.detach(), k.detach(), v.detach(), pse.detach()).item()
                flat[index] = saved
            numeric = (up - down) / (2 * eps)
            analytic = tensor.grad.reshape(-1)[index].item()
            assert abs(numeric - analytic) <= 2e-3 * max(1.0, abs(numeric)), \
                f"{name}[{index}]: finite difference {numeric} vs autograd {analytic}"


def test_wrong_head_num_raises_invalid_argument_naming_it(client):
    case = Case("BNSD", torch.float32)
    with pytest.raises(attnserve.InvalidArgumentError) as raised:
        npu_fusion_attention(case.q, case.k, case.v, 3, "BNSD")
    assert "head_num" in raised.value.fields
    assert raised.value.code.name == "INVALID_ARGUMENT"
    assert "head_num" in str(raised.value)
    assert raised.value.request_id


def test_no_graph_without_grad(client):
    case = Case("BNSD", torch.float32)
    with torch.no_grad():
        out = npu_fusion_attention(case.q, case.k, case.v, case.n1, "BNSD")[0]
    assert not out.requires_grad and out.grad_fn is None
