"""A 20-step training loop of a small causal attention model: with attention on attnserve (the
SDPA function and the torch_npu call) the loss curve matches the same loop with eager PyTorch
attention."""

import copy
import math

import pytest
import torch
from torch import nn

from attnserve.functional import scaled_dot_product_attention
from attnserve.npu import npu_fusion_attention

VOCAB, EMBED, HEADS, KV_HEADS, SEQ, BATCH, STEPS = 64, 64, 4, 2, 48, 4, 20


def eager_attention(q, k, v):
    """Causal attention in plain PyTorch ([B, N, S, D], GQA by repeating kv heads)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sdpa_attention(q, k, v):
    return scaled_dot_product_attention(q, k, v, is_causal=True)


def npu_attention(q, k, v):
    # torch_npu style: BSND tensors, sparse_mode 2 (top-left causal).
    out = npu_fusion_attention(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(),
                               v.transpose(1, 2).contiguous(), HEADS, "BSND",
                               scale=1.0 / math.sqrt(q.shape[-1]), sparse_mode=2)[0]
    return out.transpose(1, 2)


class TinyModel(nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.head_dim = EMBED // HEADS
        self.qkv = nn.Linear(EMBED, (HEADS + 2 * KV_HEADS) * self.head_dim)
        self.proj = nn.Linear(EMBED, EMBED)
        self.out = nn.Linear(EMBED, VOCAB)

    def forward(self, tokens):
        b, s = tokens.shape
        x = self.embed(tokens)
        q, k, v = self.qkv(x).split([HEADS * self.head_dim, KV_HEADS * self.head_dim,
                                     KV_HEADS * self.head_dim], dim=-1)
        q = q.view(b, s, HEADS, self.head_dim).transpose(1, 2)
        k = k.view(b, s, KV_HEADS, self.head_dim).transpose(1, 2)
        v = v.view(b, s, KV_HEADS, self.head_dim).transpose(1, 2)
        y = self.attention(q, k, v).transpose(1, 2).reshape(b, s, EMBED)
        x = x + self.proj(y)
        return self.out(x)


def train(model, batches):
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for tokens in batches:
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("attention", [sdpa_attention, npu_attention], ids=["sdpa", "npu"])
def test_loss_curve_matches_eager_pytorch(client, attention):
    torch.manual_seed(0)
    # A learnable sequence task: each token is the previous one plus 3 (mod VOCAB).
    starts = torch.randint(0, VOCAB, (STEPS, BATCH, 1))
    batches = [(s + 3 * torch.arange(SEQ + 1)) % VOCAB for s in starts]
    eager = TinyModel(eager_attention)
    served = TinyModel(attention)
    served.load_state_dict(copy.deepcopy(eager.state_dict()))
    eager_losses = train(eager, batches)
    served_losses = train(served, batches)
    assert eager_losses[-1] < 0.8 * eager_losses[0], "the task should be learnable"
    for step, (a, b) in enumerate(zip(served_losses, eager_losses)):
        assert abs(a - b) <= 2e-5 * abs(b), \
            f"step {step}: attnserve loss {a} vs eager {b}\n{served_losses}\n{eager_losses}"
