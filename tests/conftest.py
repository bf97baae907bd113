"""Shared setup: float64 everywhere (the synthetic problems' closed forms are float64)."""

from __future__ import annotations

import torch

torch.set_default_dtype(torch.float64)
