r"""Declared theoretical exponents: :math:`N(\varepsilon) = \tilde O(\varepsilon^{-b})` oracle
calls to reach :math:`\|\nabla\Phi(x)\| \le \varepsilon`.

Papers state stationarity either as :math:`\|\nabla\Phi\| \le \varepsilon` or as
:math:`\|\nabla\Phi\|^2 \le \varepsilon`; a bound :math:`O(\varepsilon^{-a})` in the squared
form is :math:`O(\varepsilon^{-2a})` in ours, and every entry below is converted. The bounds
are worst-case upper bounds for a smooth nonconvex :math:`\Phi`; logarithmic factors are
dropped. They are what the fitted exponent is shown beside, not a prediction for an easy
instance: on a strongly convex :math:`\Phi` (``quadratic``) a deterministic method
converges linearly, :math:`N = O(\log 1/\varepsilon)`, so the declared exponent there is 0.

The regime of a run is *stochastic* when its problem has ``noise_std > 0`` or a minibatch
(``batch_size > 0``), *deterministic* otherwise. bibench's noise perturbs every derivative
oracle, which is the *fully* stochastic setting of Chen, Xu, Zhang.

=================  =============  =====  ===================================================
algorithm          regime         b      source (their statement)
=================  =============  =====  ===================================================
aid_cg, itd        deterministic  2      Ji, Yang, Liang, ICML 2021: AID-BiO / ITD-BiO,
                                         :math:`O(\varepsilon^{-1})` for
                                         :math:`\|\nabla\Phi\|^2 \le \varepsilon`
stocbio            deterministic  2      same paper (full batches: AID with Neumann)
stocbio            stochastic     4      same paper, :math:`\tilde O(\varepsilon^{-2})` samples
soba               stochastic     4      Dagréou et al., NeurIPS 2022,
                                         :math:`O(\varepsilon^{-2})` (squared form)
ma_soba            stochastic     4      Chen, Xiao, Balasubramanian 2023,
                                         :math:`O(\varepsilon^{-2})` (squared form)
soba, ma_soba      deterministic  2      their deterministic specialisation (gradient descent)
ttsa               stochastic     5      Hong et al., SIAM J. Optim. 2023,
                                         :math:`\tilde O(\varepsilon^{-5/2})` (squared form)
f2ba               deterministic  2      Chen, Xu, Zhang, COLT 2024 (PL lower level)
f2ba               stochastic     6      same, fully stochastic
unibio(_faithful)  both           5p−6   UniBiO, ICLR 2026, Thm 5.1,
                                         :math:`\tilde O(\varepsilon^{-5p+6})`, ``p`` the
                                         uniform-convexity degree (problem parameter ``p``)
=================  =============  =====  ===================================================

Unknown (NaN): ``hg_ms`` (its rate is governed by the intrinsic dimension of the solution
manifold and was not recovered), ``bgs_opt`` (asymptotic results only), ``bome``, and every
method not listed for a regime.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RATES", "STRONGLY_CONVEX_PHI", "Rate", "regime", "theoretical_exponent"]


@dataclasses.dataclass(frozen=True)
class Rate:
    """``exponent``: ``b``, or a function of the problem parameters giving ``b``."""

    exponent: float | Callable[[Mapping[str, Any]], float]
    source: str

    def value(self, params: Mapping[str, Any]) -> float:
        b = self.exponent
        try:
            return float(b(params)) if callable(b) else float(b)
        except (KeyError, TypeError, ValueError):
            return math.nan


def _unibio(params: Mapping[str, Any]) -> float:
    return 5.0 * float(params["p"]) - 6.0


_JYL = "Ji, Yang, Liang, ICML 2021"
_UNIBIO = "UniBiO (ICLR 2026), Thm 5.1: O~(eps^(-5p+6))"
RATES: dict[tuple[str, str], Rate] = {
    ("aid_cg", "deterministic"): Rate(2, f"{_JYL}, AID-BiO"),
    ("itd", "deterministic"): Rate(2, f"{_JYL}, ITD-BiO"),
    ("stocbio", "deterministic"): Rate(2, f"{_JYL}, full batches"),
    ("stocbio", "stochastic"): Rate(4, f"{_JYL}, StocBiO"),
    ("soba", "deterministic"): Rate(2, "Dagréou et al., NeurIPS 2022, noiseless"),
    ("soba", "stochastic"): Rate(4, "Dagréou et al., NeurIPS 2022"),
    ("ma_soba", "deterministic"): Rate(2, "Chen, Xiao, Balasubramanian 2023, noiseless"),
    ("ma_soba", "stochastic"): Rate(4, "Chen, Xiao, Balasubramanian 2023"),
    ("ttsa", "stochastic"): Rate(5, "Hong et al., SIAM J. Optim. 2023"),
    ("f2ba", "deterministic"): Rate(2, "Chen, Xu, Zhang, COLT 2024"),
    ("f2ba", "stochastic"): Rate(6, "Chen, Xu, Zhang, COLT 2024, fully stochastic"),
    ("unibio", "deterministic"): Rate(_unibio, _UNIBIO),
    ("unibio", "stochastic"): Rate(_unibio, _UNIBIO),
    ("unibio_faithful", "deterministic"): Rate(_unibio, _UNIBIO),
    ("unibio_faithful", "stochastic"): Rate(_unibio, _UNIBIO),
}
STRONGLY_CONVEX_PHI = {"quadratic"}
"""Problems whose :math:`\\Phi` is strongly convex: deterministic methods are linear there."""


def regime(params: Mapping[str, Any]) -> str:
    """``"stochastic"`` if ``noise_std > 0`` or ``batch_size > 0``, else ``"deterministic"``."""
    noisy = float(params.get("noise_std", 0) or 0) > 0
    minibatch = int(params.get("batch_size", 0) or 0) > 0
    return "stochastic" if noisy or minibatch else "deterministic"


def theoretical_exponent(
    algorithm: str, problem: str, params: Mapping[str, Any]
) -> tuple[float, str]:
    """``(b, source)`` for an algorithm on a problem with parameters ``params`` (the
    problem's ``prob_*`` values without the prefix); ``(nan, "")`` when unknown."""
    reg = regime(params)
    rate = RATES.get((algorithm, reg))
    if rate is None:
        return math.nan, ""
    if problem in STRONGLY_CONVEX_PHI and reg == "deterministic":
        return 0.0, "strongly convex Phi: linear convergence, N = O(log 1/eps)"
    return rate.value(params), rate.source
