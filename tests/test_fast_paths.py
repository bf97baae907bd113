"""The shortcuts of the hot path give the numbers of the plain eager path they replaced.

The hat's reuse of its ``x``-only and ``(x, y)`` pieces (``last_call``), CG's guards in
fewer ops, SOBA's skipped constant step schedule, the oracle's skipped minibatch path
and the runner's bound check change no arithmetic. The numbers below are the last
checkpoint's metrics after 8 steps of seeds 0 and 1, computed by bibench at commit
add347c, before these changes (float64 default dtype, as in conftest); they must come
back to 1e-12 (relative).
"""

from __future__ import annotations

import pytest
import torch

from bibench.bench import workload_specs
from bibench.registry import discover
from bibench.runner import execute_batch

discover([])

EAGER = {
    "quadratic:aid_cg[n_cg=4]": {
        "phi": [56.83208446829062, 58.683307595804564],
        "hypergrad_norm": [3.7221412913396894, 4.5449520915077155],
        "lower_gap": [0.06448089135459156, 0.1091612042213228],
    },
    "quadratic:aid_cg[warm_start_v=false,n_cg=3]": {
        "phi": [54.9266160872053, 56.42032291691841],
        "hypergrad_norm": [3.348104656911467, 4.069199837693814],
        "lower_gap": [0.05768227660106362, 0.11857985026302487],
    },
    "quadratic:soba": {
        "phi": [129.5247228085833, 223.28264585630845],
        "hypergrad_norm": [19.80475153802205, 30.643550609104803],
        "lower_gap": [1.838188690485861, 2.910720174547521],
    },
    "quadratic:soba[decay_y=0.4]": {
        "phi": [131.25648855929055, 229.68108433592425],
        "hypergrad_norm": [20.00713544020336, 31.2224321426601],
        "lower_gap": [4.25994479698069, 6.512482666248079],
    },
    "quadratic:soba[decay_x=0.6]": {
        "phi": [142.1304579905032, 231.11634841694098],
        "hypergrad_norm": [23.493617877726386, 32.4987635661997],
        "lower_gap": [1.8598746957945131, 2.9303191746443247],
    },
    "hat:aid_cg[lr_y=0.05,lr_x=0.05]": {
        "phi": [1.7727085790455628, 0.3701643056239665],
        "hypergrad_norm": [2.1090773726825716, 0.8703808936123716],
        "lower_gap": [0.0005101667901818217, 0.00020750593849022097],
        "selection_gap": [0.7290979955109056, 0.39958021916982833],
    },
    "hat:soba[lr_y=0.5]": {
        "phi": [3.6294125985589654, 0.7459471353660702],
        "hypergrad_norm": [2.913327256509892, 1.2706327975814518],
        "lower_gap": [0.0003328283009627532, 1.3765626371254028e-05],
        "selection_gap": [1.0616023627319384, 0.5925143626775248],
    },
    "hat[dim_y=6,k=2]:aid_cg[lr_y=0.05,lr_x=0.05,n_cg=4]": {
        "phi": [1.5761617605044473, 0.4583471255718332],
        "hypergrad_norm": [2.7089979210609965, 0.9661594264659925],
        "lower_gap": [0.003901179567255263, 0.0021542575324906684],
        "selection_gap": [0.08403674390635918, 0.26369482690919144],
    },
}


@pytest.mark.parametrize("workload", list(EAGER))
def test_metrics_equal_the_eager_path(workload):
    frames = execute_batch(workload_specs(workload, 2, 8))
    assert [f["status"].iloc[-1] for f in frames] == ["done", "done"]
    for column, expected in EAGER[workload].items():
        got = torch.tensor([float(f[column].iloc[-1]) for f in frames], dtype=torch.float64)
        want = torch.tensor(expected, dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0, msg=column)
