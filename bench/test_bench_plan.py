"""The `fastmbrl bench plan` configurations under pytest-benchmark:
    PYTHONPATH=$PWD python -m pytest bench/test_bench_plan.py --benchmark-only
Speed is reported, never asserted (shared cores make timings noisy)."""
import numpy as np
import pytest

from fastmbrl.cli.bench import pets
from fastmbrl.cli.bench.plan import (CONFIGS, NumpyPlanner, _cheetah_reward_np, cheetah_reward,
                                     make_planner, random_model)

pytest.importorskip("pytest_benchmark")
#: the rows of ordinary planners (pets_plan brings its own model and reference, below)
PLAIN = [name for name, cfg in CONFIGS.items() if not hasattr(cfg, "measure")]


@pytest.mark.parametrize("name", PLAIN)
def test_plan(benchmark, name):
    cfg = CONFIGS[name]
    planner = make_planner(cfg, random_model(cfg))
    obs = np.zeros(cfg.obs_dim, np.float32)
    benchmark.extra_info["model_steps"] = cfg.model_steps
    benchmark.extra_info["flops"] = planner.packed.flops_per_step() * benchmark.extra_info["model_steps"]
    plan = benchmark(planner.plan, obs)
    assert plan.shape == (cfg.horizon, cfg.act_dim) and np.isfinite(plan).all()


@pytest.mark.parametrize("name", PLAIN)
def test_plan_numpy_reference(benchmark, name):
    cfg = CONFIGS[name]
    model = random_model(cfg)
    reference = NumpyPlanner(make_planner(cfg, model), model, cfg.rewards[1])
    plan = benchmark.pedantic(reference.plan, args=(np.zeros(cfg.obs_dim, np.float32),),
                              rounds=3, warmup_rounds=1)
    assert plan.shape == (cfg.horizon, cfg.act_dim)


def test_pets_plan(benchmark):
    cfg = pets.CONFIG
    planner = cfg.make_planner(pets.random_model(cfg), cheetah_reward)
    plan = benchmark.pedantic(planner.plan, args=(np.zeros(cfg.obs_dim, np.float32),),
                              rounds=3, warmup_rounds=1)
    assert plan.shape == (cfg.horizon, cfg.act_dim) and np.isfinite(plan).all()


def test_pets_plan_numpy_reference(benchmark):
    cfg = pets.CONFIG
    reference = pets.NumpyPets(cfg, pets.random_model(cfg), _cheetah_reward_np)
    plan = benchmark.pedantic(reference.plan, args=(np.zeros(cfg.obs_dim, np.float32),),
                              rounds=1, warmup_rounds=0)
    assert plan.shape == (cfg.horizon, cfg.act_dim)
