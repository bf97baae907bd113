"""Batched models on a flat parameter vector: the RNN equals torch.nn.RNN on the same weights."""

from __future__ import annotations

import torch

from bibench.data.models import ParamLayout, linear_logits, nli_logits, rnn_encode, rnn_layout


def _rnn_params(gen, runs, dim_in, hidden, layers):
    layout = rnn_layout(dim_in, hidden, layers, 3)
    y = 0.5 * torch.randn(runs, layout.size, generator=gen)
    return layout, y


def test_rnn_matches_torch_rnn_with_max_pool_over_valid_steps():
    gen = torch.Generator().manual_seed(0)
    runs, batch, steps, dim_in, hidden, layers = 2, 5, 7, 4, 3, 2
    layout, y = _rnn_params(gen, runs, dim_in, hidden, layers)
    inputs = torch.randn(runs, batch, steps, dim_in, generator=gen)
    lengths = torch.randint(1, steps + 1, (runs, batch), generator=gen)
    codes = rnn_encode(layout.unflatten(y), inputs, lengths, layers)
    for r in range(runs):
        params = layout.unflatten(y[r : r + 1])
        rnn = torch.nn.RNN(dim_in, hidden, layers, nonlinearity="tanh", batch_first=True)
        with torch.no_grad():
            for layer in range(layers):
                getattr(rnn, f"weight_ih_l{layer}").copy_(params[f"w_ih{layer}"][0])
                getattr(rnn, f"weight_hh_l{layer}").copy_(params[f"w_hh{layer}"][0])
                getattr(rnn, f"bias_ih_l{layer}").copy_(params[f"b{layer}"][0])
                getattr(rnn, f"bias_hh_l{layer}").zero_()
        for b in range(batch):
            n = int(lengths[r, b])
            out, _ = rnn(inputs[r, b : b + 1, :n])  # the sequence alone, no padding
            assert torch.allclose(codes[r, b], out[0].amax(0), atol=1e-12)


def test_shared_inputs_equal_per_run_copies():
    gen = torch.Generator().manual_seed(1)
    layout, y = _rnn_params(gen, 3, 4, 5, 1)
    inputs = torch.randn(6, 4, 4, generator=gen)
    lengths = torch.tensor([1, 4, 2, 3, 4, 1])
    shared = rnn_encode(layout.unflatten(y), inputs, lengths, 1)
    copies = rnn_encode(layout.unflatten(y), inputs.expand(3, 6, 4, 4), lengths.expand(3, 6), 1)
    assert torch.allclose(shared, copies, atol=1e-14)


def test_nli_head_features_and_linear_logits():
    gen = torch.Generator().manual_seed(2)
    w_out, b_out = torch.randn(1, 3, 8, generator=gen), torch.randn(1, 3, generator=gen)
    params = {"W_out": w_out, "b_out": b_out}
    u, v = torch.randn(1, 1, 2, generator=gen), torch.randn(1, 1, 2, generator=gen)
    feats = torch.cat([u[0, 0], v[0, 0], (u - v).abs()[0, 0], (u * v)[0, 0]])
    ref = params["W_out"][0] @ feats + params["b_out"][0]
    assert torch.allclose(nli_logits(params, u, v)[0, 0], ref, atol=1e-14)
    layout = ParamLayout({"W": (4, 3), "b": (3,)})
    y = torch.randn(2, layout.size, generator=gen)
    a = torch.randn(5, 4, generator=gen)
    p = layout.unflatten(y)
    assert torch.allclose(linear_logits(p, a)[1], a @ p["W"][1] + p["b"][1], atol=1e-14)
    assert torch.equal(layout.flatten(p), y)
