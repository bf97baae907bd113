"""bibench: a benchmark suite for bilevel optimization algorithms.

Public surface: the problem and algorithm contracts, the counting oracle, the shared
inverse-HVP estimators, and the plugin registries.
"""

from __future__ import annotations

from bibench.algorithm import Algorithm, HyperParams, State
from bibench.errors import UserError
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.problem import Problem, ProblemParams
from bibench.registry import register_algorithm, register_problem
from bibench.rng import BatchedRNG

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
