"""attnserve.Client: numpy and torch in and out, bf16 as raw bits, every RPC, errors by status
code, the default client, totals."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import attnserve
from attnserve import _wire
import reference as ref
from conftest import PACKAGE_ROOT


def test_numpy_in_numpy_out(client):
    g = np.random.default_rng(0)
    q = g.standard_normal((2, 4, 24, 16), dtype=np.float32)
    k = g.standard_normal((2, 2, 32, 16), dtype=np.float32)
    v = g.standard_normal((2, 2, 32, 16), dtype=np.float32)
    result = client.flash_attention_score(q, k, v, head_num=4, input_layout="BNSD",
                                          scale_value=0.25)
    assert isinstance(result.attention_out, np.ndarray)
    assert result.attention_out.dtype == np.float32 and result.attention_out.shape == q.shape
    r_out, r_max, r_sum = ref.attention_bnsd(*(torch.from_numpy(x).double() for x in (q, k, v)),
                                             0.25)
    ref.assert_close(result.attention_out, r_out, torch.float32, "attention_out")
    ref.assert_close(result.softmax_max[..., 0], r_max, torch.float32, "softmax_max")
    assert result.stats.compute_seconds > 0 and result.stats.flops == 2 * 2 * 4 * 24 * 32 * 32
    dy = g.standard_normal(q.shape, dtype=np.float32)
    grads = client.flash_attention_score_grad(q, k, v, dy, head_num=4, input_layout="BNSD",
                                              scale_value=0.25)
    assert isinstance(grads.dq, np.ndarray) and grads.dpse is None
    assert grads.dk.shape == k.shape and grads.dv.shape == v.shape


def test_numpy_bf16_as_raw_tensor(client):
    values = torch.randn(1, 2, 16, 8).to(torch.bfloat16)
    raw = attnserve.RawTensor("bf16", values.view(torch.int16).numpy().view(np.uint16))
    result = client.flash_attention_score(raw, raw, raw, head_num=2, input_layout="BNSD")
    out = result.attention_out
    assert isinstance(out, attnserve.RawTensor) and out.dtype == attnserve.DataType.Value(
        "DATA_TYPE_BFLOAT16")
    via_torch = client.flash_attention_score(values, values, values, head_num=2,
                                             input_layout="BNSD").attention_out
    assert np.array_equal(out.data, via_torch.view(torch.int16).numpy().view(np.uint16))
    np.testing.assert_array_equal(out.to_float32(), via_torch.float().numpy())


def test_bf16_travels_as_its_raw_16_bits(client):
    """Two bytes per element each way, and the bits are exactly the tensor's."""
    # Bit patterns a careless conversion would disturb: subnormals of both signs, the
    # largest finite values, the smallest normal.
    bits = torch.tensor([0x0001, 0x7F7F, 0x8001, 0x3F80, 0xFF7F, 0x0080, 0x1234, 0xC0DE],
                        dtype=torch.int32).to(torch.int16)
    v = bits.view(torch.bfloat16).reshape(1, 1, 1, 8)
    q = torch.zeros(1, 1, 1, 8, dtype=torch.bfloat16)
    wire = _wire.to_wire(v)
    assert wire.array.dtype == np.dtype("<u2")
    assert np.array_equal(wire.array.reshape(-1), bits.numpy().view(np.uint16))
    before = client.totals()
    out = client.flash_attention_score(q, q, v, head_num=1, input_layout="BNSD").attention_out
    spent = client.totals() - before
    assert spent.bytes_sent < 3 * 8 * 2 + 200  # q, k, v: 16 bytes each plus the headers
    # The bits survive the round trip through the codec, subnormals included.
    back = _wire.from_wire(wire, as_torch=True)
    assert torch.equal(back.view(torch.int16), v.view(torch.int16))
    # One key: the softmax weight is exactly 1, so out = v bit for bit, except that
    # servers running bf16 tile products treat subnormal operands as zero (as the CPU's
    # bf16 dot products do; docs/semantics.md, "Numerics").
    got, want = out.view(torch.int16).reshape(-1), v.view(torch.int16).reshape(-1)
    subnormal = (want & 0x7F80) == 0
    assert torch.equal(got[~subnormal], want[~subnormal])
    assert all(g in (0, w) for g, w in zip(got[subnormal].tolist(), want[subnormal].tolist()))


def test_fp16_and_bool_and_int_inputs(client):
    q = torch.randn(1, 2, 8, 16, dtype=torch.float16)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 4:] = True
    out = client.flash_attention_score(q, q, q, head_num=2, input_layout="BNSD",
                                       atten_mask=mask, scale_value=0.25).attention_out
    r_out = ref.attention_bnsd(*(q.double(),) * 3, 0.25, attend=~mask)[0]
    ref.assert_close(out, r_out, torch.float16, "attention_out")


def test_workspace_size_and_nested_field_names(client):
    q = np.zeros((1, 2, 8, 16), np.float32)
    size = client.get_workspace_size("flash_attention_score", query=q, key=q, value=q,
                                     head_num=2, input_layout="BNSD")
    assert size.workspace_bytes > 0 and size.flops == 2 * 2 * 8 * 8 * 32
    assert [(o.name, o.shape) for o in size.outputs][0] == ("attention_out", (1, 2, 8, 16))
    with pytest.raises(attnserve.InvalidArgumentError) as raised:
        client.get_workspace_size("flash_attention_score", query=q, key=q, value=q,
                                  head_num=3, input_layout="BNSD")
    assert raised.value.fields == ["flash_attention_score.head_num"]
    with pytest.raises(ValueError):
        client.get_workspace_size("no_such_operator")


def test_server_info_and_health(client):
    info = client.get_server_info()
    assert "FlashAttentionScore" in info.operators and info.worker_count >= 1
    assert client.health() == "SERVING"
    assert client.health("attnserve.v1.AttentionService") == "SERVING"


def test_errors_by_status_code(client):
    q = np.zeros((1, 2, 8, 16), np.float32)
    with pytest.raises(attnserve.InvalidArgumentError) as raised:
        client.flash_attention_score(q, q, q, head_num=3, input_layout="BNSD")
    error = raised.value
    assert isinstance(error, attnserve.AttnServeError) and isinstance(error, ValueError)
    assert error.violations and error.violations[0][0] == "head_num"
    assert "must equal" in error.violations[0][1]
    with pytest.raises(attnserve.InvalidArgumentError) as raised:
        client.flash_attention_score(q, q, q, head_num=2, input_layout="BNSD", keep_prob=0.5)
    assert raised.value.fields == ["keep_prob"]
    with pytest.raises(attnserve.NotFoundError):
        client.health("no.such.Service")
    with pytest.raises(attnserve.DeadlineExceededError):
        big = np.zeros((1, 8, 4096, 128), np.float32)
        client.flash_attention_score(big, big, big, head_num=8, input_layout="BNSD",
                                     timeout=0.001)
    with pytest.raises(TypeError):
        client.flash_attention_score([1.0], q, q, head_num=2, input_layout="BNSD")


def test_no_server_is_unavailable():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lonely = attnserve.connect(f"127.0.0.1:{port}", timeout=5)
    with pytest.raises(attnserve.UnavailableError):
        lonely.get_server_info()
    lonely.close()


def test_totals_count_calls_and_bytes(client):
    q = np.zeros((1, 1, 4, 4), np.float32)
    client.reset_totals()
    client.flash_attention_score(q, q, q, head_num=1, input_layout="BNSD")
    totals = client.totals()
    assert totals.calls == 1
    assert 3 * q.nbytes < totals.bytes_sent < 3 * q.nbytes + 300
    assert totals.bytes_received > q.nbytes
    assert totals.wall_seconds >= totals.compute_seconds > 0


def test_nsa_selected_attention_over_every_block_is_full_attention(client):
    """Selecting every key block once (in any order) is plain attention over all keys."""
    g = torch.Generator().manual_seed(2)
    t, n1, n2, d, bs, blocks = 8, 2, 1, 128, 16, 4
    q = torch.randn(t, n1, d, generator=g)
    k = torch.randn(blocks * bs, n2, d, generator=g)
    v = torch.randn(blocks * bs, n2, d, generator=g)
    topk = torch.stack([torch.randperm(blocks, generator=g) for _ in range(t * n2)]
                       ).to(torch.int32).reshape(t, n2, blocks)
    scale = d ** -0.5
    fwd = client.nsa_selected_attention(q, k, v, topk, actual_seq_qlen=[t],
                                        actual_seq_kvlen=[blocks * bs], selected_block_size=bs,
                                        selected_block_count=blocks, head_num=n1,
                                        scale_value=scale)
    q64, k64, v64 = (x.double().permute(1, 0, 2).unsqueeze(0).requires_grad_(True)
                     for x in (q, k, v))
    r_out, r_max, r_sum = ref.attention_bnsd(q64, k64, v64, scale)
    ref.assert_close(fwd.attention_out, r_out[0].permute(1, 0, 2), torch.float32, "out")
    dy = torch.randn(t, n1, d, generator=g)
    grads = client.nsa_selected_attention_grad(
        q, k, v, fwd.attention_out, dy, fwd.softmax_max, fwd.softmax_sum, topk,
        actual_seq_qlen=[t], actual_seq_kvlen=[blocks * bs], selected_block_size=bs,
        selected_block_count=blocks, head_num=n1, scale_value=scale)
    r_out.backward(dy.double().permute(1, 0, 2).unsqueeze(0))
    for name, got, leaf in (("dq", grads.dq, q64), ("dk", grads.dk, k64),
                            ("dv", grads.dv, v64)):
        ref.assert_close(got, leaf.grad[0].permute(1, 0, 2), torch.float32, name, grad=True)


def test_default_client_from_the_environment(server):
    code = ("import attnserve, numpy as np; c = attnserve.default_client(); "
            "print(c.targets, c.health())")
    env = dict(os.environ, ATTNSERVE_TARGET=server.target,
               PYTHONPATH=str(PACKAGE_ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == f"['{server.target}'] SERVING"


def test_set_default_client_is_used_by_npu_calls(client):
    from attnserve.npu import npu_fusion_attention

    other = attnserve.connect(client.targets)
    attnserve.set_default_client(other)
    try:
        q = torch.randn(1, 1, 4, 8)
        npu_fusion_attention(q, q, q, 1, "BNSD")
        assert other.totals().calls == 1
    finally:
        attnserve.set_default_client(client)
        other.close()


def _metric(port: int, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def test_tensor_sized_requests_are_retried_when_the_queue_is_full():
    """RESOURCE_EXHAUSTED (queue full) is retried, also for requests far beyond gRPC's default
    256 KiB retry buffer, which would otherwise go unretried without a word. The server's log
    counts the attempts."""
    import re
    import time

    import grpc

    from attnserve.client import service_config
    from conftest import ServerProcess

    # Every request here is "large" (one lane with one waiting slot).
    server = ServerProcess(["--workers=1", "--queue_depth=1", "--threads_per_request=1",
                            "--small_request_flops=1000", "--metrics_listen=127.0.0.1:0"])
    try:
        metrics_port = int(re.search(r"metrics on \S+ \(port (\d+)", server.log()).group(1))
        client = attnserve.connect(server.target, timeout=600)
        g = torch.Generator().manual_seed(0)
        # A backward that recomputes its forward keeps the only worker busy for seconds
        # (1 TFLOP: over 7 s even on a fast AVX-512 core).
        big = torch.randn(1, 8, 8192, 128, generator=g)
        blocker = client._callable(client._channel, "uu",
                                   "/attnserve.v1.AttentionService/FlashAttentionScoreGrad")
        request = b"".join(client._encode(
            attnserve.client._GRAD,
            {n: _wire.to_wire(big) for n in ("query", "key", "value", "dy")},
            {"head_num": 8, "input_layout": "BNSD"}))
        running = blocker.future(request, timeout=600)
        deadline = time.monotonic() + 60
        while _metric(metrics_port, "attnserve_running_jobs") != 1:
            assert time.monotonic() < deadline, "the blocking request never started"
            time.sleep(0.02)
        filler = torch.ones(1, 1, 64, 64)
        waiting = client._callable(client._channel, "uu",
                                   "/attnserve.v1.AttentionService/FlashAttentionScore").future(
            b"".join(client._encode(attnserve.client._FORWARD,
                                    {n: _wire.to_wire(filler) for n in ("query", "key", "value")},
                                    {"head_num": 1, "input_layout": "BNSD"})), timeout=600)
        while _metric(metrics_port, "attnserve_queue_depth") != 1:
            assert time.monotonic() < deadline, "the queue never filled"
            time.sleep(0.02)

        def refusals(shape):
            return len(re.findall(rf"q=\[{shape}\][^\n]*status=RESOURCE_EXHAUSTED",
                                  server.log()))

        # 2 MiB per tensor: through the client, all 5 attempts of the retry policy are made.
        probe = torch.randn(1, 4, 1024, 128, generator=g)
        with pytest.raises(attnserve.ResourceExhaustedError) as raised:
            client.flash_attention_score(probe, probe, probe, head_num=4, input_layout="BNSD")
        assert "queue full" in raised.value.message
        # The same service config with gRPC's default retry buffer: one attempt only for the
        # large request, all five for a small one.
        plain = grpc.insecure_channel(server.target, options=[
            ("grpc.service_config", service_config()),
            ("grpc.max_send_message_length", 1 << 30)])
        call = plain.unary_unary("/attnserve.v1.AttentionService/FlashAttentionScore")
        for shape in ((1, 2, 1024, 128), (1, 2, 8, 128)):
            x = torch.randn(shape, generator=g)
            with pytest.raises(grpc.RpcError):
                tensors = {n: _wire.to_wire(x) for n in ("query", "key", "value")}
                call(b"".join(client._encode(attnserve.client._FORWARD, tensors,
                                             {"head_num": 2, "input_layout": "BNSD"})))
        assert _metric(metrics_port, "attnserve_running_jobs") == 1, \
            "the blocking request ended before the probes: the test measured nothing"
        deadline = time.monotonic() + 10
        while refusals("1,2,8,128") < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refusals("1,4,1024,128") == 5
        assert refusals("1,2,1024,128") == 1
        assert refusals("1,2,8,128") == 5
        running.result()
        waiting.result()
        plain.close()
        client.close()
    finally:
        server.close()


def test_malformed_responses_raise_instead_of_giving_wrong_tensors():
    """Every truncation, and corrupted lengths, of a real response are refused."""
    from attnserve.v1 import attention_pb2 as pb

    response = pb.FlashAttentionScoreGradResponse()
    for name, n in (("dq", 12), ("dk", 8), ("dv", 8)):
        getattr(response, name).CopyFrom(pb.Tensor(
            dtype=pb.DATA_TYPE_FLOAT32, shape=[1, n], data=np.arange(n, dtype=np.float32)
            .tobytes()))
    response.stats.compute_seconds = 0.5
    data = response.SerializeToString()
    message, outputs = _wire.parse_response(pb.FlashAttentionScoreGradResponse, data)
    assert message.stats.compute_seconds == 0.5
    assert np.array_equal(outputs["dq"].array, np.arange(12, dtype=np.float32).reshape(1, 12))
    for cut in range(1, len(data)):
        try:
            _, parsed = _wire.parse_response(pb.FlashAttentionScoreGradResponse, data[:cut])
        except _wire.MalformedResponse:
            continue
        # A cut exactly between fields leaves a shorter, valid message: never a wrong tensor.
        for name, tensor in parsed.items():
            assert np.array_equal(tensor.array, outputs[name].array), (cut, name)
    corrupted = bytearray(data)
    corrupted[1] += 4  # dq's length now runs into dk
    with pytest.raises(_wire.MalformedResponse):
        _wire.parse_response(pb.FlashAttentionScoreGradResponse, bytes(corrupted))


def test_targets_name_the_servers_behind_them():
    from attnserve.client import _Targets

    one = _Targets("127.0.0.1:50051")
    assert one.single and one.servers() == ["127.0.0.1:50051"]
    pool = _Targets(["127.0.0.1:1", "127.0.0.2:2", "[::1]:3"])
    assert not pool.single
    assert pool.channel_target == "ipv4:127.0.0.1:1,127.0.0.2:2"
    v6 = _Targets(["[::1]:1", "[::1]:2"])
    assert v6.channel_target == "ipv6:[::1]:1,[::1]:2"
    named = _Targets("dns:///localhost:50051")
    assert not named.single and named.channel_target == "dns:///localhost:50051"
    assert "127.0.0.1:50051" in named.servers()
    assert named.tls_name == "localhost"
    assert _Targets("unix:/tmp/attnserve.sock").single
    listed = _Targets(["localhost:7", "127.0.0.1:8"])
    assert listed.channel_target.startswith("ipv4:") and "127.0.0.1:7" in listed.servers()
    with pytest.raises(ValueError):
        _Targets([])
    with pytest.raises(ValueError):
        _Targets(["127.0.0.1", "127.0.0.2:1"])  # a pool entry without its port
