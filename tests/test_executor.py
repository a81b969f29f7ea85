"""fastmbrl.executor: jobs side by side in worker processes or Ray tasks, outcomes as they end."""
import math
import os
import time

import pytest

from fastmbrl.errors import FastMBRLError
from fastmbrl.executor import plan_local, run_jobs


def thread_limits(_job):
    """What a worker runs with (a module-level function: spawned workers import it)."""
    import numba

    return numba.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def double_or_die(x):
    if x < 0:
        os._exit(3)  # a worker killed under its job, as by the kernel's OOM killer
    return 2 * x


def sleep_or_die(x):
    if x < 0:
        os._exit(3)
    time.sleep(x)
    return x


def test_plan_local_fills_the_cores_without_oversubscribing():
    assert plan_local(8, cores=4) == (4, 1)
    assert plan_local(8, threads=2, cores=4) == (2, 2)
    assert plan_local(8, workers=3, cores=4) == (3, 1)
    assert plan_local(1, cores=4) == (1, 4)
    with pytest.raises(FastMBRLError, match="oversubscribe the 4 cores"):
        plan_local(8, workers=3, threads=2, cores=4)
    with pytest.raises(FastMBRLError, match="jobs must be a positive integer"):
        plan_local(8, workers=0, cores=4)


def test_local_jobs_report_their_values_and_errors_and_the_others_go_on():
    outcomes = list(run_jobs(math.sqrt, [4.0, -1.0, 9.0], workers=2, threads=1,
                             keys=["a", "b", "c"]))
    assert sorted(o.key for o in outcomes) == ["a", "b", "c"]
    by = {o.key: o for o in outcomes}
    assert by["a"].value == 2.0 and by["c"].value == 3.0 and by["a"].ok
    assert not by["b"].ok and by["b"].error == "ValueError: math domain error"
    assert "Traceback" in by["b"].details


def test_workers_run_with_their_share_of_threads():
    for value in run_jobs(thread_limits, [0, 1], workers=2, threads=1):
        assert value.value == (1, "1")


def test_a_worker_that_dies_fails_its_job_alone():
    outcomes = {o.key: o for o in run_jobs(double_or_die, [1, -1, 2, 3], workers=2, threads=1)}
    assert [outcomes[k].value for k in (0, 2, 3)] == [2, 4, 6]
    assert not outcomes[1].ok and "BrokenProcessPool" in outcomes[1].error
    # jobs queued behind the culprit share both of its pools unless the retries go one by one
    # (they all failed so before)
    outcomes = {o.key: o for o in run_jobs(sleep_or_die, [0.2, -1, 0.2, 0.2, 0.2, 0.2],
                                           workers=2, threads=1)}
    assert [k for k, o in outcomes.items() if not o.ok] == [1]


def test_bad_backend_and_key_counts_are_refused():
    with pytest.raises(FastMBRLError, match="unknown backend 'slurm'"):
        list(run_jobs(math.sqrt, [1.0], backend="slurm"))
    with pytest.raises(FastMBRLError, match="2 keys for 1 jobs"):
        list(run_jobs(math.sqrt, [1.0], keys=["a", "b"]))


def test_ray_tasks_report_values_and_errors():
    pytest.importorskip("ray")
    outcomes = {o.key: o for o in run_jobs(math.sqrt, [4.0, -1.0, 9.0], backend="ray",
                                           threads=1)}
    assert outcomes[0].value == 2.0 and outcomes[2].value == 3.0
    assert not outcomes[1].ok and "math domain error" in outcomes[1].error
