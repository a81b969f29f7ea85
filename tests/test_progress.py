"""The command line's progress bar: its ETA, its terminal and log-file output, and the runs that
feed it."""
import io

from fastmbrl.algorithms.mbrl import MBRLConfig, MBRLRun
from fastmbrl.cli import main
from fastmbrl.progress import Progress, format_seconds


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_eta_follows_the_rate_since_the_first_report():
    clock, out = Clock(), io.StringIO()
    bar = Progress("training", out, clock=clock, tty=True)
    bar(200, 1000)  # a resume starts part way: the rate counts only what this process did
    assert bar.eta() is None and "ETA ?" in out.getvalue()
    clock.t += 40
    bar(400, 1000)  # 200 steps in 40 s: 600 left take 120 s
    assert bar.eta() == 120
    line = out.getvalue().split("\r")[-1]
    assert "400/1000 steps" in line and " 40%" in line and "ETA 2:00" in line
    assert "0:40 elapsed" in line
    assert format_seconds(3725) == "1:02:05"


def test_a_restart_times_the_next_piece_of_work_on_its_own():
    clock, out = Clock(), io.StringIO()
    bar = Progress("collect", out, clock=clock, tty=True, unit="episodes")
    bar(0, 10)
    clock.t += 500
    bar(10, 10)
    bar.restart("V epoch 1/10", "batches")
    bar(0, 100)
    clock.t += 10
    bar(50, 100)  # 50 batches in 10 s, whatever the collection took
    assert bar.eta() == 10
    line = out.getvalue().split("\r")[-1]
    assert line.startswith("V epoch 1/10 [") and "50/100 batches" in line
    assert "0:10 elapsed" in line


def test_a_terminal_redraws_one_line_and_log_lines_go_above_it(capsys):
    clock, err = Clock(), io.StringIO()
    bar = Progress("training", err, clock=clock, tty=True)
    bar(0, 10)
    bar.print("iteration 1")
    assert capsys.readouterr().out == "iteration 1\n"
    assert "\n" not in err.getvalue()  # the bar only ever rewrites its own line
    bar.close()
    assert err.getvalue().endswith("\n")


def test_a_log_file_gets_a_line_per_interval_and_a_last_one():
    clock, out = Clock(), io.StringIO()
    bar = Progress("training", out, clock=clock, tty=False, interval=10)
    for done in range(0, 101, 5):  # 1 s per 5 steps
        bar(done, 100)
        clock.t += 1
    lines = out.getvalue().splitlines()
    assert [ln.split()[2] for ln in lines] == ["50/100", "100/100"]
    quick = Progress("short", io.StringIO(), clock=Clock(), tty=False)
    quick(1, 1)
    assert quick.stream.getvalue() == ""  # a short job prints nothing


def test_a_run_reports_its_steps_after_each_episode_and_iteration():
    cfg = MBRLConfig(task="Pendulum-v1", planner="rs", steps=500, random_steps=200,
                     steps_per_iteration=150, episode_length=100, horizon=4, num_samples=16,
                     hidden=(8,), epochs=1)
    run = MBRLRun(cfg, log=lambda m: None)
    seen = []
    run.progress = lambda done, total: seen.append((done, total))
    run.train()
    assert {t for _, t in seen} == {500}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 100 and done[-1] == 500
    assert 200 in done and 350 in done  # after the random phase's episodes, per iteration


def test_quiet_train_prints_no_progress_and_no_log_lines(tmp_path, capsys):
    args = ["train", "Pendulum-v1", "--planner", "rs", "--steps", "300", "--random-steps",
            "200", "--steps-per-iteration", "100", "--horizon", "4", "--num-samples", "16",
            "--hidden", "8", "--epochs", "1"]
    assert main(args + ["--out", str(tmp_path / "a"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "ETA" not in captured.err and "iteration 1" not in captured.out
