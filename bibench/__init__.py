"""bibench: a benchmark suite for bilevel optimization algorithms.

Public surface: the problem and algorithm contracts, the counting oracle, the shared
inverse-HVP estimators, and the plugin registries.
"""

from __future__ import annotations

import importlib
from typing import Any

from bibench.errors import UserError

# The public names load on first use (PEP 562): ``bibench --help`` and the analysis
# commands must not pay for importing torch.
_LAZY = {
    "Algorithm": "bibench.algorithm",
    "HyperParams": "bibench.algorithm",
    "State": "bibench.algorithm",
    "ORACLE_TYPES": "bibench.oracle",
    "Oracle": "bibench.oracle",
    "Problem": "bibench.problem",
    "ProblemParams": "bibench.problem",
    "register_algorithm": "bibench.registry",
    "register_problem": "bibench.registry",
    "BatchedRNG": "bibench.rng",
}

__version__ = "0.1.0"

__all__ = [
    "ORACLE_TYPES",
    "Algorithm",
    "BatchedRNG",
    "HyperParams",
    "Oracle",
    "Problem",
    "ProblemParams",
    "State",
    "UserError",
    "__version__",
    "register_algorithm",
    "register_problem",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bibench' has no attribute '{name}'")
