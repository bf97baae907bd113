r"""Models whose parameters are a flat, batched vector ``y`` of shape ``(R, dim_y)``.

A problem's ``y`` is one float64 vector per run, so the framework's ``torch.func``
oracles (gradients, forward-over-reverse HVPs, cross products) apply unchanged. A
:class:`ParamLayout` cuts ``y`` into named views ``(R, *shape)``, and every model below
is written with batched matrix products over the run dimension (no ``vmap``, no
per-run loop): run ``r`` uses its own weights on its own minibatch.

* :func:`linear_logits` — multinomial logistic regression, :math:`z = a^\top W + b`;
* :func:`rnn_encode` — a tanh RNN (``torch.nn.RNN(nonlinearity="tanh")`` semantics,
  one bias per layer) over GloVe inputs, max-pooled over the valid time steps;
* :func:`nli_logits` — InferSent-style head: sentence codes ``u`` (premise) and ``v``
  (hypothesis), features :math:`[u, v, |u-v|, u\odot v]`, one linear layer to the classes.

The recurrence is written out with tensor operations instead of calling ``nn.RNN``: on
CUDA, ``nn.RNN`` dispatches to cuDNN's fused kernel, which has no double backward (the
UniBiO code has to set ``torch.backends.cudnn.enabled = False`` for its HVPs). Written
out, the HVP and cross-derivative oracles work on every device and the runs stay
batched; the tests check equality with ``nn.RNN`` on the same weights.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ParamLayout", "linear_logits", "nli_logits", "rnn_encode", "rnn_layout"]


class ParamLayout:
    """Named parameter shapes packed, in order, into one flat vector."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = dict(shapes)
        self.offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, shape in self.shapes.items():
            self.offsets[name] = (start, start + math.prod(shape))
            start += math.prod(shape)
        self.size = start

    def unflatten(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views ``name -> (R, *shape)`` of ``y (R, size)``."""
        return {
            name: y[:, a:b].reshape(y.shape[0], *self.shapes[name])
            for name, (a, b) in self.offsets.items()
        }

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`unflatten`."""
        return torch.cat([params[n].reshape(params[n].shape[0], -1) for n in self.shapes], -1)


def linear_logits(params: dict[str, torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """``W (R, d, K)``, ``b (R, K)``; features ``a (R, m, d)`` or shared ``(m, d)``
    -> logits ``(R, m, K)``."""
    w, b = params["W"], params["b"]
    z = torch.einsum("md,rdk->rmk", a, w) if a.dim() == 2 else torch.bmm(a, w)
    return z + b[:, None, :]


def rnn_layout(dim_in: int, hidden: int, layers: int, n_classes: int) -> ParamLayout:
    """Parameters of :func:`rnn_encode` + :func:`nli_logits`: per layer ``l`` the input
    weights ``w_ih{l} (H, D_l)``, recurrent weights ``w_hh{l} (H, H)`` and bias ``b{l} (H)``;
    then the head ``W_out (K, 4H)``, ``b_out (K)``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        shapes[f"w_ih{layer}"] = (hidden, dim_in if layer == 0 else hidden)
        shapes[f"w_hh{layer}"] = (hidden, hidden)
        shapes[f"b{layer}"] = (hidden,)
    shapes["W_out"] = (n_classes, 4 * hidden)
    shapes["b_out"] = (n_classes,)
    return ParamLayout(shapes)


def rnn_encode(
    params: dict[str, torch.Tensor], inputs: torch.Tensor, lengths: torch.Tensor, layers: int
) -> torch.Tensor:
    r"""Tanh RNN, :math:`h_t = \tanh(W_{ih} x_t + W_{hh} h_{t-1} + b)`, :math:`h_0 = 0`,
    stacked ``layers`` deep, then the max over the valid steps ``t < length``.

    ``inputs (R, B, T, D)`` with ``lengths (R, B)``, or shared by the runs ``(B, T, D)``
    with ``(B,)`` (each length >= 1) -> codes ``(R, B, H)``.
    Padded steps come after the valid ones, so they never reach a valid output, and
    they are masked out of the max (the UniBiO code lets padded zeros into it).
    """
    seq = inputs
    for layer in range(layers):
        w_ih, w_hh, b = params[f"w_ih{layer}"], params[f"w_hh{layer}"], params[f"b{layer}"]
        shared = "btd" if seq.dim() == 3 else "rbtd"
        drive = torch.einsum(f"{shared},rhd->rbth", seq, w_ih) + b[:, None, None, :]
        h = torch.zeros_like(drive[:, :, 0])
        outs = []
        for t in range(drive.shape[2]):
            h = torch.tanh(drive[:, :, t] + torch.bmm(h, w_hh.transpose(1, 2)))
            outs.append(h)
        seq = torch.stack(outs, dim=2)
    steps = torch.arange(seq.shape[2], device=seq.device)
    pad = (steps >= lengths[..., None])[..., None]  # (R, B, T, 1) or (B, T, 1)
    return seq.masked_fill(pad, -math.inf).amax(dim=2)


def nli_logits(params: dict[str, torch.Tensor], u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""Logits ``(R, B, K)`` from :math:`[u, v, |u-v|, u\odot v] W_{out}^\top + b_{out}`."""
    feats = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
    return torch.bmm(feats, params["W_out"].transpose(1, 2)) + params["b_out"][:, None, :]
