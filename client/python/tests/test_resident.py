"""Resident tensors: the autograd backward names the forward's tensors by handle so that only dy
travels, and resends the data when the server answers NOT_FOUND (or has no resident tensors).

The tests marked `needs_resident` probe the server first (PutTensor, and a forward with
retention.keep) and skip, printing why, when it does not keep tensors. The fallback tests at
the end run against any server."""

import gc
import threading
import time

import numpy as np
import pytest
import torch

import attnserve
from attnserve import _autograd
from attnserve.client import ResidentTensor
from attnserve.npu import npu_fusion_attention
from conftest import ServerProcess, require_resident


def _inputs(seed=0, dtype=torch.float32, b=1, n=4, s=256, d=64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, n, s, d, generator=g).to(dtype).requires_grad_(True)
               for _ in range(3))
    dy = torch.randn(b, n, s, d, generator=g).to(dtype)
    return q, k, v, dy


def _grads_by_data(client, q, k, v, dy):
    data_client = attnserve.connect(client.targets, resident=False)
    try:
        q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        out = npu_fusion_attention(q2, k2, v2, q.shape[1], "BNSD", scale=0.125,
                                   client=data_client)[0]
        out.backward(dy)
        return out.detach(), q2.grad, k2.grad, v2.grad
    finally:
        data_client.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_put_get_delete_round_trip(client, dtype):
    require_resident(client)
    # 6 MiB of fp32 (3 MiB bf16): more than one 4 MiB chunk for fp32.
    tensor = torch.randn(3, 512, 1024).to(dtype)
    resident = client.put_tensor(tensor, ttl_seconds=60)
    assert resident.handle and resident.nbytes == tensor.numel() * tensor.element_size()
    back = client.get_tensor(resident, as_torch=True)
    assert back.dtype == dtype and torch.equal(back, tensor)
    client.delete_tensor(resident)
    with pytest.raises(attnserve.NotFoundError):
        client.get_tensor(resident)
    client.delete_tensor(resident)  # deleting an unknown handle is not an error


def test_resident_inputs_in_a_raw_call(client):
    require_resident(client)
    q, k, v, _ = _inputs()
    expected = client.flash_attention_score(q, k, v, head_num=4, input_layout="BNSD")
    resident_k = client.put_tensor(k)
    try:
        got = client.flash_attention_score(q, resident_k, v, head_num=4, input_layout="BNSD")
        assert torch.equal(got.attention_out, expected.attention_out)
    finally:
        client.delete_tensor(resident_k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_backward_sends_only_dy(client, dtype):
    require_resident(client)
    q, k, v, dy = _inputs(dtype=dtype)
    out = npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.125)[0]
    before = client.totals()
    out.backward(dy)
    spent = client.totals() - before
    dy_bytes = dy.numel() * dy.element_size()
    assert spent.calls == 1
    assert dy_bytes <= spent.bytes_sent <= dy_bytes + 4096, spent
    expected = _grads_by_data(client, q, k, v, dy)
    assert torch.equal(out.detach(), expected[0])
    for got, want in zip((q.grad, k.grad, v.grad), expected[1:]):
        assert torch.equal(got, want)


def test_backward_resends_data_after_a_server_restart():
    server = ServerProcess()
    try:
        client = attnserve.connect(server.target)
        require_resident(client)
        q, k, v, dy = _inputs()
        out = npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.125, client=client)[0]
        port = server.port
        server.close()
        server = ServerProcess(port=port)  # same address, empty store
        deadline = time.monotonic() + 30
        while True:  # until the client's channel has reconnected
            try:
                if client.health(timeout=2) == "SERVING":
                    break
            except attnserve.AttnServeError:
                pass
            assert time.monotonic() < deadline, "the client never reconnected"
            time.sleep(0.05)
        before = client.totals()
        out.backward(dy)
        spent = client.totals() - before
        assert spent.calls == 1  # the failed attempt is not counted; the resend is
        assert spent.bytes_sent > 4 * dy.numel() * 4  # q, k, v, dy and the residuals
        expected = _grads_by_data(client, q, k, v, dy)
        for got, want in zip((q.grad, k.grad, v.grad), expected[1:]):
            assert torch.equal(got, want)
        client.close()
    finally:
        server.close()


def test_handles_are_freed_with_the_graph(client):
    require_resident(client)
    q, k, v, _ = _inputs()
    out = npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.125)[0]
    kept = out.grad_fn.handles  # the autograd node is the Function's ctx
    assert kept is not None and {"query", "key", "value", "attention_out"} <= set(kept.handles)
    residents = [kept.resident(name) for name in kept.handles]
    del out, kept
    gc.collect()
    deadline = time.monotonic() + 10
    for resident in residents:
        while True:
            try:
                client.get_tensor(resident)
            except attnserve.NotFoundError:
                break
            assert time.monotonic() < deadline, f"{resident} still held"
            time.sleep(0.05)


def test_handles_dropped_by_the_garbage_collector_are_freed_on_another_thread(client):
    """The garbage collector may drop a graph in the middle of a gRPC call; calling gRPC again
    on that thread can deadlock inside gRPC, so the handles are freed by the client's release
    thread instead."""
    seen = []
    done = threading.Event()
    real = client.delete_tensors_async

    def record(handles, server=""):
        seen.append((threading.current_thread(), sorted(handles), server))
        real(handles, server)
        done.set()

    client.delete_tensors_async = record
    try:
        dropped = _autograd._Handles(client, "", {"query": "gone-1", "key": "gone-2"}, {})
        del dropped
        gc.collect()
        assert done.wait(10), "the handles were never freed"
    finally:
        del client.delete_tensors_async
    assert len(seen) == 1
    thread, handles, server = seen[0]
    assert thread is not threading.current_thread()
    assert handles == ["gone-1", "gone-2"] and server == ""


# --- fallbacks, against any server ---------------------------------------------------------------

def test_backward_by_data_when_the_forward_returned_no_handles(client, server):
    """A server that keeps nothing returns no handles; the backward then sends everything."""
    if not server.log():  # pragma: no cover - the fixture always logs its start
        pytest.fail("server not started")
    q, k, v, dy = _inputs()
    out = npu_fusion_attention(q, k, v, 4, "BNSD", scale=0.125)[0]
    before = client.totals()
    out.backward(dy)
    spent = client.totals() - before
    tensor_bytes = dy.numel() * 4
    if spent.bytes_sent < 2 * tensor_bytes:
        pytest.skip("this server keeps tensors: the backward went by handle")
    # q, k, v, dy, attention_in, softmax_max, softmax_sum
    assert spent.bytes_sent >= 5 * tensor_bytes
    expected = _grads_by_data(client, q, k, v, dy)
    for got, want in zip((q.grad, k.grad, v.grad), expected[1:]):
        assert torch.equal(got, want)


def test_unknown_handles_are_resent_by_data(client):
    """The backward's call by handle fails with NOT_FOUND: it is made again with the data."""
    q, k, v, dy = _inputs()
    with torch.no_grad():
        result = client.flash_attention_score(q, k, v, head_num=4, input_layout="BNSD",
                                              scale_value=0.125)
    names = ("query", "key", "value", "attention_out", "softmax_max", "softmax_sum")
    bogus = _autograd._Handles(client, "", {n: f"expired-{n}" for n in names}, {})
    options = _autograd.Options(head_num=4, input_layout="BNSD", scale_value=0.125)
    before = client.totals()
    grads = _autograd.backward_call(
        client, options, bogus, dy, query=q.detach(), key=k.detach(), value=v.detach(),
        pse=None, atten_mask=None, attention_out=result.attention_out,
        softmax_max=result.softmax_max, softmax_sum=result.softmax_sum)
    spent = client.totals() - before
    assert spent.calls == 1 and spent.bytes_sent >= 5 * dy.numel() * 4
    expected = _grads_by_data(client, q, k, v, dy)
    for got, want in zip((grads.dq, grads.dk, grads.dv), expected[1:]):
        assert torch.equal(got, want)
    bogus.handles = {}


def test_handles_freed_without_waiting_are_not_cancelled_by_garbage_collection(client):
    """The DeleteTensor calls autograd makes when it drops a graph run to completion (gRPC
    cancels a call whose future is collected)."""
    client.async_delete_codes.clear()
    client.delete_tensors_async(["no-such-handle-1", "no-such-handle-2"])
    gc.collect()
    deadline = time.monotonic() + 30
    while len(client.async_delete_codes) < 2:
        assert time.monotonic() < deadline, "the deletes never finished"
        time.sleep(0.02)
    import grpc

    # OK (an unknown handle is not an error), or UNIMPLEMENTED from a server without resident
    # tensors; never CANCELLED.
    assert set(client.async_delete_codes) <= {grpc.StatusCode.OK,
                                              grpc.StatusCode.UNIMPLEMENTED}, \
        client.async_delete_codes


def test_a_handle_the_server_does_not_hold_is_not_found(client):
    x = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(attnserve.NotFoundError) as raised:
        client.flash_attention_score(ResidentTensor("no-such-handle"), x, x, head_num=1,
                                     input_layout="BNSD")
    assert "query.handle" in str(raised.value)
