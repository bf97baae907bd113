"""Shared fixtures: float64 everywhere, and a clean working directory per test."""

from __future__ import annotations

import torch

torch.set_default_dtype(torch.float64)
