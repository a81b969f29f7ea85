"""The `fastmbrl bench controller` configurations under pytest-benchmark:
    PYTHONPATH=$PWD python -m pytest bench/test_bench_controller.py --benchmark-only
Latency of Controller.act is reported, never asserted (shared cores make timings noisy)."""
import numpy as np
import pytest

from fastmbrl.cli.bench.controller import (
    CONFIGS,
    allocations,
    make_controller,
    observations,
)

pytest.importorskip("pytest_benchmark")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_controller_act(benchmark, name):
    controller = make_controller(CONFIGS[name])
    obs = observations(controller)
    state = {"i": 0}

    def act():
        state["i"] += 1
        return controller.act(obs[state["i"] % len(obs)])

    benchmark.extra_info.update(allocations(act))
    action = benchmark.pedantic(act, rounds=200, warmup_rounds=5)
    assert action.shape == (controller.task.act_dim,) and np.isfinite(action).all()
