"""A pool of three server processes behind one connect([...]): split calls give the unsplit
results bit for bit and reach every server; a server stopped with SIGTERM mid-run costs no
failed call."""

import signal
import threading
import time

import pytest
import torch

import attnserve
from conftest import ServerProcess
from attnserve.npu import npu_fusion_attention


@pytest.fixture(scope="module")
def pool():
    servers = [ServerProcess(["--drain_timeout=30s"]) for _ in range(3)]
    yield servers
    for s in servers:
        s.close()


def _counts(servers):
    return [s.count_log("] FlashAttentionScore ") for s in servers]


def _await_counts(servers, minimum, timeout=10.0):
    """The servers' logged forward counts once each reaches `minimum` (logs are written just
    after the response), or as they are at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        counts = _counts(servers)
        if all(c >= m for c, m in zip(counts, minimum)) or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def _warm_up(client, servers):
    """Until this client's round_robin has reached every server (each logged one more call)."""
    x = torch.ones(1, 1, 2, 2)
    start = _counts(servers)
    deadline = time.monotonic() + 20
    while True:
        client.flash_attention_score(x, x, x, head_num=1, input_layout="BNSD", split=0)
        counts = _await_counts(servers, [c + 1 for c in start], timeout=0.2)
        if all(c > s for c, s in zip(counts, start)):
            return
        assert time.monotonic() < deadline, "round_robin never reached every server"


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.view(torch.int16) if a.dtype in (torch.bfloat16, torch.float16) else a,
        b.view(torch.int16) if b.dtype in (torch.bfloat16, torch.float16) else b)


SPLIT_CASES = {
    # name: (layout, dtype, B, N1, N2, S, D, extras)
    "bnsd-fp32-batches-gqa": ("BNSD", torch.float32, 3, 8, 4, 96, 64, ()),
    "bsh-bf16-heads": ("BSH", torch.bfloat16, 1, 8, 2, 128, 64, ()),
    "bsnd-fp16-mask-pse": ("BSND", torch.float16, 2, 4, 4, 80, 32, ("mask", "pse")),
    "bnsd-fp32-shared-pse": ("BNSD", torch.float32, 2, 4, 2, 64, 32, ("shared_pse",)),
    "sbh-fp32-causal": ("SBH", torch.float32, 2, 6, 3, 72, 32, ("causal",)),
    "tnd-bf16-heads": ("TND", torch.bfloat16, 2, 4, 2, 64, 32, ()),
}


def _make(layout, dtype, b, n1, n2, s, d, extras, g):
    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    if layout == "BNSD":
        q, k, v = rnd(b, n1, s, d), rnd(b, n2, s, d), rnd(b, n2, s, d)
    elif layout == "BSND":
        q, k, v = rnd(b, s, n1, d), rnd(b, s, n2, d), rnd(b, s, n2, d)
    elif layout == "BSH":
        q, k, v = rnd(b, s, n1 * d), rnd(b, s, n2 * d), rnd(b, s, n2 * d)
    elif layout == "SBH":
        q, k, v = rnd(s, b, n1 * d), rnd(s, b, n2 * d), rnd(s, b, n2 * d)
    else:  # TND, two batches of s // 2 and s - s // 2 tokens
        q, k, v = rnd(s, n1, d), rnd(s, n2, d), rnd(s, n2, d)
    kwargs = dict(head_num=n1, input_layout=layout, scale_value=d ** -0.5)
    if layout == "TND":
        kwargs.update(actual_seq_qlen=[s // 2, s], actual_seq_kvlen=[s // 2, s])
    if "mask" in extras:
        kwargs["atten_mask"] = torch.rand(b, 1, s, s, generator=g) < 0.2
    if "pse" in extras:
        kwargs["pse"] = rnd(b, n1, s, s)
    if "shared_pse" in extras:
        kwargs["pse"] = rnd(1, n1, s, s)
    if "causal" in extras:
        kwargs["sparse_mode"] = 2
    return q, k, v, kwargs


@pytest.mark.parametrize("name", list(SPLIT_CASES))
def test_split_results_equal_unsplit_bit_for_bit(pool, name):
    layout, dtype, b, n1, n2, s, d, extras = SPLIT_CASES[name]
    client = attnserve.connect([p.target for p in pool], split=3, split_min_flops=0)
    try:
        _warm_up(client, pool)
        q, k, v, kwargs = _make(layout, dtype, b, n1, n2, s, d, extras,
                                torch.Generator().manual_seed(5))
        before = _await_counts(pool, [0, 0, 0])
        split = client.flash_attention_score(q, k, v, **kwargs)
        after = _await_counts(pool, [c + 1 for c in before])
        whole = client.flash_attention_score(q, k, v, split=0, **kwargs)
        assert split.parts > 1 and whole.parts == 1
        if split.parts >= 3:
            assert all(a > b for a, b in zip(after, before)), \
                f"the parts did not reach every server: {before} -> {after}"
        for field in ("attention_out", "softmax_max", "softmax_sum"):
            assert _same_bits(getattr(split, field), getattr(whole, field)), field
        assert split.stats.flops == pytest.approx(whole.stats.flops)

        dy = torch.randn(whole.attention_out.shape,
                         generator=torch.Generator().manual_seed(6)).to(dtype)
        residuals = dict(softmax_max=whole.softmax_max, softmax_sum=whole.softmax_sum,
                         attention_in=whole.attention_out)
        g_split = client.flash_attention_score_grad(q, k, v, dy, **residuals, **kwargs)
        g_whole = client.flash_attention_score_grad(q, k, v, dy, split=0, **residuals,
                                                    **kwargs)
        assert g_split.parts > 1
        for field in ("dq", "dk", "dv", "dpse"):
            a, b_ = getattr(g_split, field), getattr(g_whole, field)
            assert (a is None) == (b_ is None), field
            if a is not None:
                assert _same_bits(a, b_), field
    finally:
        client.close()


def test_split_autograd_matches_unsplit(pool):
    """npu_fusion_attention forward and backward through a splitting client."""
    split = attnserve.connect([p.target for p in pool], split=3, split_min_flops=0)
    whole = attnserve.connect([p.target for p in pool])
    try:
        g = torch.Generator().manual_seed(11)
        leaves = [torch.randn(3, 4, 64, 32, generator=g) for _ in range(3)]
        dy = torch.randn(3, 4, 64, 32, generator=g)
        results = []
        for client in (split, whole):
            q, k, v = (t.clone().requires_grad_(True) for t in leaves)
            out = npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.2, client=client)[0]
            out.backward(dy)
            results.append((out.detach(), q.grad, k.grad, v.grad))
        for a, b in zip(*results):
            assert torch.equal(a, b)
    finally:
        split.close()
        whole.close()


def test_sigterm_mid_run_costs_no_failed_call():
    servers = [ServerProcess(["--drain_timeout=30s"]) for _ in range(3)]
    try:
        client = attnserve.connect([s.target for s in servers], timeout=120)
        _warm_up(client, servers)
        g = torch.Generator().manual_seed(3)
        q, k, v = (torch.randn(1, 4, 512, 64, generator=g) for _ in range(3))
        dy = torch.randn(1, 4, 512, 64, generator=g)
        expected = client.flash_attention_score(q, k, v, head_num=4, input_layout="BNSD")
        expected_grad = client.flash_attention_score_grad(q, k, v, dy, head_num=4,
                                                          input_layout="BNSD")
        failures, done = [], [0]
        stop = threading.Event()

        def worker():
            while not stop.is_set():
                try:
                    out = client.flash_attention_score(q, k, v, head_num=4,
                                                       input_layout="BNSD")
                    grad = client.flash_attention_score_grad(q, k, v, dy, head_num=4,
                                                             input_layout="BNSD")
                    if not (torch.equal(out.attention_out, expected.attention_out)
                            and torch.equal(grad.dq, expected_grad.dq)):
                        failures.append("wrong result")
                    done[0] += 2
                except attnserve.AttnServeError as e:  # pragma: no cover - the failure
                    failures.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        calls_before = done[0]
        servers[1].signal(signal.SIGTERM)
        exit_code = servers[1].process.wait(60)
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(120)
        assert not failures, failures[:5]
        assert exit_code == 0, servers[1].log()[-2000:]
        assert "draining" in servers[1].log()
        assert calls_before > 0 and done[0] > calls_before + 6, (calls_before, done[0])
        client.close()
    finally:
        for s in servers:
            s.close()
