"""The transformer's attention window: exact semantics, bounded cache, streaming beyond the window."""

from __future__ import annotations

import pytest
import torch

from backbones.transformer import TransformerBackbone


def model(*, depth: int, context_len: int) -> TransformerBackbone:
    torch.manual_seed(0)
    return TransformerBackbone(d_model=16, depth=depth, heads=2, context_len=context_len).eval()


def test_one_layer_attends_to_exactly_the_last_context_len_tokens() -> None:
    backbone = model(depth=1, context_len=4)
    x = torch.randn(1, 12, 16)
    t = 9
    with torch.no_grad():
        y = backbone(x)[0][:, t]
        inside, outside = x.clone(), x.clone()
        # not a constant shift, which the layer norms would remove
        inside[:, t - 3] = torch.randn(16)  # 4th token back, counting the current one: inside
        outside[:, t - 4] = torch.randn(16)  # 5th token back: outside the window
        assert not torch.allclose(backbone(inside)[0][:, t], y)
        torch.testing.assert_close(backbone(outside)[0][:, t], y, atol=0, rtol=0)


@pytest.mark.parametrize("length", [6, 8, 30])
def test_the_window_equals_x_transformers_own_max_attend_past(length: int) -> None:
    """The window switched on only when needed is the library's sliding window."""
    from x_transformers import Decoder

    backbone = model(depth=2, context_len=8)
    reference = Decoder(
        dim=16,
        depth=2,
        heads=2,
        attn_dim_head=8,
        rotary_pos_emb=True,
        attn_flash=True,
        attn_max_attend_past=7,
        verbose=False,
    ).eval()
    reference.load_state_dict(backbone.decoder.state_dict())
    x = torch.randn(2, length, 16)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], reference(x), atol=1e-5, rtol=0)
    assert (backbone.window_for(length) is None) == (length <= 8)


def test_stream_keeps_a_ring_of_context_len_keys_and_values_per_layer() -> None:
    backbone = model(depth=3, context_len=5)
    state = backbone.init_state(2)
    for _ in range(12):
        _, state = backbone.step(torch.randn(2, 16), state=state)
    assert len(state.keys) == len(state.values) == 3
    assert all(k.shape == (2, 2, 5, 8) for k in (*state.keys, *state.values))
    assert state.seen == 12


def test_steps_and_chunks_mix_past_the_window() -> None:
    """A chunk (x-transformers' decoder, the ring converted to its cache and back) and single
    steps (the ring itself) continue each other in any order, long after the ring has wrapped."""
    backbone = model(depth=2, context_len=5)
    x = torch.randn(2, 60, 16)
    with torch.no_grad():
        y, _ = backbone(x)
        head, state = backbone(x[:, :13])
        parts = [head]
        for t in range(13, 31):
            y_t, state = backbone.step(x[:, t], state=state)
            parts.append(y_t[:, None])
        middle, state = backbone(x[:, 31:40], state=state)
        parts.append(middle)
        for t in range(40, 60):
            y_t, state = backbone.step(x[:, t], state=state)
            parts.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(parts, 1), y, atol=1e-5, rtol=0)


def test_context_len_one_attends_only_to_itself() -> None:
    backbone = model(depth=2, context_len=1)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        alone = torch.cat([backbone(x[:, t : t + 1])[0] for t in range(6)], 1)
        state = backbone.init_state(2)
        steps = []
        for t in range(6):
            y_t, state = backbone.step(x[:, t], state=state)
            steps.append(y_t)
    torch.testing.assert_close(backbone(x)[0], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(steps, 1), alone, atol=1e-5, rtol=0)


def test_long_stream_equals_sliding_window_forward() -> None:
    """Rotary positions restart inside the trimmed cache; only distances matter."""
    backbone = model(depth=2, context_len=8)
    x = torch.randn(1, 200, 16)
    with torch.no_grad():
        y, _ = backbone(x)
        state = backbone.init_state(1)
        chunks = []
        for start in range(0, 200, 7):
            y_chunk, state = backbone(x[:, start : start + 7], state=state)
            chunks.append(y_chunk)
    torch.testing.assert_close(torch.cat(chunks, 1), y, atol=1e-5, rtol=0)


def test_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match="heads=3 must divide d_model=16"):
        TransformerBackbone(d_model=16, depth=1, heads=3, context_len=4)
    with pytest.raises(ValueError, match="context_len must be >= 1"):
        TransformerBackbone(d_model=16, depth=1, heads=2, context_len=0)
