"""A corpus of hostile run directories: every file of a real MBRL and TRPO run truncated,
bit-flipped, crafted (non-finite, huge, mistyped and missing values, deep nesting, sizes that
disagree with the data) or missing, run through `fastmbrl eval` and `fastmbrl train --resume`.

Each must be refused with exit status 2 and one line `fastmbrl: error: ...` naming the file
(or the setting) without a traceback, leave every file of the directory as it was, and stay
within a bounded amount of memory. The run directories are black boxes: only their files and
the CLI are used (a `.lock` file is ignored when comparing).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from fastmbrl.cli import main  # noqa: E402

# tiny budgets (as in test_agent/test_trpo): a run is a second, a resume or an eval a few ms
MBRL_ARGS = ["--planner", "rs", "--steps", "300", "--random-steps", "200",
             "--steps-per-iteration", "100", "--horizon", "4", "--num-samples", "16",
             "--hidden", "16,16", "--epochs", "1", "--batch-size", "64"]
TRPO_ARGS = ["--algo", "trpo", "--steps", "400", "--steps-per-iteration", "200", "--hidden",
             "16", "--value-hidden", "16", "--value-epochs", "1"]
EVAL, RESUME = "eval", "resume"
#: files each command reads: a mutation of another file may rightly go unnoticed by it
#: (resume rebuilds the controller from config.json; eval needs no config.json beside a
#: saved controller)
READS = {(EVAL, "mbrl"): {"model.npz", "controller.json", "config.json"},
         (EVAL, "trpo"): {"policy.npz", "config.json"},
         (RESUME, "mbrl"): {"model.npz", "buffer.npz", "config.json", "state.json",
                            "metrics.jsonl"},
         (RESUME, "trpo"): {"policy.npz", "trpo_state.npz", "config.json", "state.json",
                            "metrics.jsonl"}}
IGNORED = {".lock"}
#: headroom of address space (beyond the process's at the start of a case) and of resident set
ADDRESS_HEADROOM = 2 << 30
RSS_HEADROOM = 300 << 20
CASE_SECONDS = 20


# -- crafting files (independently of fastmbrl's readers) ---------------------------------------
def npz_members(path) -> dict:
    """{member name: .npy bytes} of a zip archive."""
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def npy_bytes(arr, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=True, **kwargs)
    return buf.getvalue()


def npy_load(data: bytes):
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def write_members(path, members: dict, compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def npz_header(path) -> dict:
    return json.loads(npy_load(npz_members(path)["__header__.npy"]).tobytes())


def with_header_text(text):
    """A mutation replacing the npz header's JSON by `text` (str or bytes), CRCs intact."""
    data = text.encode() if isinstance(text, str) else text

    def mutate(path):
        members = npz_members(path)
        members["__header__.npy"] = npy_bytes(np.frombuffer(data, np.uint8))
        write_members(path, members)
    return mutate


def with_header(**changes):
    """Header keys set (a value of DELETE removes the key), written as Python's json writes
    (so NaN and Infinity come out as those tokens)."""
    def mutate(path):
        header = npz_header(path)
        for k, v in changes.items():
            if v is DELETE:
                header.pop(k, None)
            else:
                header[k] = v
        with_header_text(json.dumps(header))(path)
    return mutate


def with_array(name, value=None, delete=False, raw: bytes | None = None):
    """Member `name` replaced by `value` (an array), by `raw` .npy bytes, or removed."""
    def mutate(path):
        members = npz_members(path)
        key = f"{name}.npy"
        if delete:
            del members[key]
        else:
            members[key] = raw if raw is not None else npy_bytes(
                value(npy_load(members[key])) if callable(value) else value)
        write_members(path, members)
    return mutate


def claimed_shape(name, shape):
    """Member `name` whose .npy header claims `shape` while holding its few real bytes."""
    def mutate(path):
        members = npz_members(path)
        arr = npy_load(members[f"{name}.npy"])
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(
            arr.dtype), "fortran_order": False, "shape": shape})
        members[f"{name}.npy"] = buf.getvalue() + arr.tobytes()
        write_members(path, members)
    return mutate


def zip_bomb(name, nbytes=256 << 20):
    """Member `name` deflated: a few hundred KB on disk that inflate to `nbytes` of zeros."""
    def mutate(path):
        members = npz_members(path)
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (nbytes // 4,)})
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for member, data in members.items():
                if member != f"{name}.npy":
                    zf.writestr(member, data, zipfile.ZIP_STORED)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                fh.write(buf.getvalue())
                zeros = bytes(1 << 20)
                for _ in range(nbytes >> 20):
                    fh.write(zeros)
    return mutate


def compressed(path):
    write_members(path, npz_members(path), zipfile.ZIP_DEFLATED)


def flip_in_member(member_index, where=0.5):
    """One bit flipped inside the data of the archive's `member_index`-th member (its .npy
    header when `where` is small)."""
    def mutate(path):
        data = bytearray(Path(path).read_bytes())
        with zipfile.ZipFile(path) as zf:
            info = zf.infolist()[member_index]
        n, m = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + n + m
        data[start + int(where * (info.file_size - 1))] ^= 0x10
        Path(path).write_bytes(bytes(data))
    return mutate


def flip_at(fraction):
    def mutate(path):
        data = bytearray(Path(path).read_bytes())
        data[int(fraction * (len(data) - 1))] ^= 0x01
        Path(path).write_bytes(bytes(data))
    return mutate


def truncate(fraction):
    def mutate(path):
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:int(fraction * len(data))])
    return mutate


def garbage(path):
    n = Path(path).stat().st_size
    Path(path).write_bytes(np.random.default_rng(0).integers(0, 256, n, np.uint8).tobytes())


def missing(path):
    os.remove(path)


def directory_instead(path):
    os.remove(path)
    os.mkdir(path)


DELETE = object()
DEEP = "[" * 100_000 + "]" * 100_000


def json_set(*keys, value=None, raw: str | None = None):
    """The JSON file with the entry at `keys` set to `value`, to the literal text `raw`
    (NaN, Infinity, 1e400, a 5,000-digit integer, deep nesting), or removed (DELETE)."""
    marker = "\x00RAW\x00"

    def mutate(path):
        obj = json.loads(Path(path).read_text())
        node = obj
        for k in keys[:-1]:
            node = node[k]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = marker if raw is not None else value
        text = json.dumps(obj, indent=2)
        Path(path).write_text(text.replace(json.dumps(marker), raw) if raw is not None else text)
    return mutate


def json_text(text):
    def mutate(path):
        Path(path).write_text(text)
    return mutate


def metrics_row(index, **changes):
    """metrics.jsonl with row `index` changed (DELETE removes a key), or replaced by the raw
    line `changes['line']`."""
    def mutate(path):
        lines = Path(path).read_text().splitlines()
        if "line" in changes:
            lines[index] = changes["line"]
        else:
            row = json.loads(lines[index])
            for k, v in changes.items():
                if v is DELETE:
                    row.pop(k)
                else:
                    row[k] = v
            lines[index] = json.dumps(row)
        Path(path).write_text("".join(line + "\n" for line in lines))
    return mutate


# -- the corpus ---------------------------------------------------------------------------------
@dataclass
class Case:
    algo: str
    file: str
    name: str
    mutate: object
    key: str | None = None  # a setting or field the message may name instead of the file
    commands: tuple | None = None  # default: resume, and eval if it reads the file

    @property
    def id(self):
        return f"{self.algo}-{self.file}-{self.name}"


def _generic(algo, file):
    """What every file gets: missing, empty, truncated, garbage, a directory in its place."""
    # eval of a saved controller needs no config.json
    yield Case(algo, file, "missing", missing, None,
               (RESUME,) if (algo, file) == ("mbrl", "config.json") else None)
    yield Case(algo, file, "empty", truncate(0))
    for f in (0.1, 0.5, 0.9, 0.999):
        yield Case(algo, file, f"truncated-{f}", truncate(f))
    yield Case(algo, file, "garbage", garbage)
    yield Case(algo, file, "directory", directory_instead)


def _npz(algo, file, members):
    yield from _generic(algo, file)
    for i in (0, 1, len(members) - 1):
        for where in (0.02, 0.5, 1.0):
            yield Case(algo, file, f"bitflip-member{i}-{where}", flip_in_member(i, where))
    yield Case(algo, file, "bitflip-central-directory", flip_at(0.97))
    yield Case(algo, file, "compressed", compressed)
    yield Case(algo, file, "zip-bomb", zip_bomb(members[-1]))
    yield Case(algo, file, "header-missing", with_array("__header__", delete=True))
    for name, text in (("NaN", '{"kind": NaN}'), ("deep", DEEP), ("array", "[1, 2]"),
                       ("not-json", "{kind"), ("not-utf8", b'{"kind": "\xff"}')):
        yield Case(algo, file, f"header-{name}", with_header_text(text))
    yield Case(algo, file, "header-kind", with_header(kind="something_else"))
    yield Case(algo, file, "header-version", with_header(format_version=99))
    yield Case(algo, file, "header-version-NaN", with_header(format_version=float("nan")))
    yield Case(algo, file, "unknown-member", with_array("surprise", np.zeros(3)))
    yield Case(algo, file, "pickled-member", with_array(
        members[-1], raw=npy_bytes(np.array([{"x": 1}], dtype=object))))
    yield Case(algo, file, "huge-claimed-shape", claimed_shape(members[0], (10**12,)))
    yield Case(algo, file, "short-claimed-shape", claimed_shape(members[0], (1,)))
    for m in members:
        yield Case(algo, file, f"no-{m}", with_array(m, delete=True))


FLOAT_ARRAYS = {"model.npz": "W0", "buffer.npz": "obs", "policy.npz": "log_std",
                "trpo_state.npz": "value_adam_m"}


def _npz_values(algo, file, header):
    a = FLOAT_ARRAYS[file]
    yield Case(algo, file, f"{a}-NaN", with_array(a, lambda x: np.full_like(x, np.nan)))
    yield Case(algo, file, f"{a}-inf", with_array(a, lambda x: np.full_like(x, np.inf)))
    yield Case(algo, file, f"{a}-wrong-shape", with_array(a, lambda x: np.zeros(x.size + 1,
                                                                                 x.dtype)))
    yield Case(algo, file, f"{a}-complex", with_array(a, lambda x: x.astype(np.complex128)))
    yield Case(algo, file, f"{a}-strings", with_array(a, lambda x: x.astype(str)))
    for key, value in header.items():
        if key in ("kind", "format_version"):
            continue
        for label, bad in (("missing", DELETE), ("string", "3"), ("NaN", float("nan")),
                           ("list", [[]]), ("null", None)):
            if bad is DELETE and key in OPTIONAL.get(file, ()):
                continue
            yield Case(algo, file, f"header-{key}-{label}", with_header(**{key: bad}), key)


#: header entries the reader may rightly do without (older files lack them)
OPTIONAL = {"model.npz": {"dtype", "ensemble_size", "angle_obs_dims"}}

#: header values a hostile file sets to sizes its arrays do not have (allocations follow them)
HUGE = {
    "model.npz": {"ensemble_size": 10**9, "hidden": [20000, 20000], "obs_dim": 10**9},
    "buffer.npz": {"capacity": 10**12, "size": 10**12, "obs_dim": 10**9},
    "policy.npz": {"hidden": [20000, 20000], "obs_dim": 10**9, "act_dim": 10**9},
}


def _huge(algo, file):
    for key, value in HUGE.get(file, {}).items():
        yield Case(algo, file, f"header-{key}-huge", with_header(**{key: value}), key)


def _json_parse_level(algo, file, key_path):
    """Values JSON itself must refuse, wherever they are: the reader refuses before looking."""
    yield Case(algo, file, "not-an-object", json_text("[1, 2, 3]"))
    yield Case(algo, file, "deep", json_text(DEEP))
    yield Case(algo, file, "deep-value", json_set(*key_path, raw=DEEP))
    for raw in ("NaN", "Infinity", "-Infinity", "1e400", "1" * 5000):
        yield Case(algo, file, f"value-{raw[:9]}", json_set(*key_path, raw=raw))
    yield Case(algo, file, "not-utf8", lambda p: Path(p).write_bytes(
        Path(p).read_bytes().replace(b'"', b'"\xff', 1)))


def _label(value) -> str:
    return "missing" if value is DELETE else json.dumps(value, separators=(",", ":"))[:40]


def _controller(algo="mbrl", file="controller.json"):
    yield from _generic(algo, file)
    yield from _json_parse_level(algo, file, ("horizon",))
    cases = {
        "format_version": [DELETE, 2, "1"],
        "task": [DELETE, "Nope-v0", "HalfCheetah-v5", 3],
        "planner": [DELETE, "nope", 1],
        "horizon": [DELETE, "4", -1, 0, 1.5, True, None, [4], 10**9],
        "num_samples": [DELETE, "16", -1, 0, 2.5, 10**12],
        "seed": [DELETE, "abc", 1.5, -1, None],
        "planner_options": [DELETE, {"bogus": 1}, "x", [1], {"horizon": 3}],
        "shaping": ["yes", 2],
    }
    yield from _set_each(algo, file, cases)


def _set_each(algo, file, table, under=(), commands=None):
    """A case per value of each entry of `table` (key -> values), set at `under` + key."""
    for key, values in table.items():
        for v in values:
            yield Case(algo, file, f"{key}-{_label(v)}", json_set(*under, key, value=v), key,
                       commands)


def _config(algo):
    file = "config.json"
    yield from _generic(algo, file)
    yield from _json_parse_level(algo, file, ("config", "steps"))
    yield from _set_each(algo, file, {"run_format": [DELETE, 2, "1"],
                                      "config": [DELETE, "x", []]})
    other = "trpo" if algo == "mbrl" else "mbrl"
    yield Case(algo, file, f"algo-{other}", json_set("config", "algo", value=other), "algo")
    yield Case(algo, file, "algo-bogus", json_set("config", "algo", value="bogus"), "algo")
    yield Case(algo, file, "algo-missing", json_set("config", "algo", value=DELETE), "algo")
    yield from _set_each(algo, file, {"tensorboard": ["yes", 1, None]}, (), (RESUME,))
    # settings: only resume reads them
    settings = {
        "task": ["Nope-v0", 3, DELETE],
        "seed": ["abc", 1.5, -5, True],
        "steps": ["300", -1, 2.5, True, 10**10],
        "hidden": ["16,16", [0], [-3], [20000, 20000]],
        "surprise_setting": [1],
    }
    if algo == "mbrl":
        settings.update({
            "horizon": ["4", -1, 10**9],
            "num_samples": [0, 10**12],
            "planner": ["nope"],
            "planner_options": [{"bogus": 1}, "x"],
            "ensemble_size": [10**9],
            "lr": [-1.0],
        })
    else:
        # TRPO's budget sizes nothing: a larger steps is a longer run, not a hostile file
        settings["steps"].remove(10**10)
        settings.update({"gamma": [2.0, "x"], "value_hidden": [[20000, 20000]]})
    yield from _set_each(algo, file, settings, ("config",), (RESUME,))


def _state(algo):
    file = "state.json"
    yield from _generic(algo, file)
    yield from _json_parse_level(algo, file, ("iteration",))
    fields = {
        "iteration": [DELETE, "1", -1, 1.5, None, 0, 99, 10**30],
        "episodes": [DELETE, "x", -1],
        "env_steps": [DELETE, "x", -1],
        "rng": [DELETE, "x", {}, {"bit_generator": "PCG64", "state": {"state": "x"}},
                {"bit_generator": "Nope"}],
    }
    if algo == "mbrl":
        fields["model_rng"] = ["x", {}]
    yield from _set_each(algo, file, fields)


def _metrics(algo):
    file = "metrics.jsonl"
    yield from _generic(algo, file)
    yield Case(algo, file, "row-deep", metrics_row(0, line=DEEP))
    yield Case(algo, file, "row-NaN", metrics_row(0, line='{"iteration": NaN}'))
    yield Case(algo, file, "row-array", metrics_row(0, line="[1]"))
    yield Case(algo, file, "row-garbage", metrics_row(0, line="{iteration"))
    yield Case(algo, file, "row-iteration-string", metrics_row(0, iteration="1"), "iteration")
    yield Case(algo, file, "row-iteration-missing", metrics_row(0, iteration=DELETE),
               "iteration")
    yield Case(algo, file, "row-iteration-99", metrics_row(0, iteration=99), "iteration")


def _cases():
    mbrl_model = ["W0", "b0", "W1", "b1", "W2", "b2", "input_mean", "input_scale",
                  "delta_mean", "delta_std"]
    buffer = ["obs", "action", "next_obs", "reward", "terminated", "truncated"]
    policy = ["W0", "b0", "W1", "b1", "log_std", "action_low", "action_high", "obs_mean",
              "obs_var", "obs_count"]
    trpo_state = ["value_W0", "value_b0", "value_W1", "value_b1", "value_adam_m",
                  "value_adam_v", "value_adam_t", "ret_mean", "ret_var", "ret_count"]
    headers = {  # as a tiny run writes them (kind and format_version aside)
        "model.npz": dict.fromkeys(["obs_dim", "act_dim", "hidden", "activation", "dtype",
                                    "ensemble_size", "ignore_obs_dims", "angle_obs_dims",
                                    "seed"]),
        "buffer.npz": dict.fromkeys(["obs_dim", "act_dim", "capacity", "pos", "size",
                                     "total_added"]),
        "policy.npz": dict.fromkeys(["obs_dim", "act_dim", "hidden", "activation", "task"]),
        "trpo_state.npz": dict.fromkeys(["iteration"]),
    }
    for algo, files in (("mbrl", {"model.npz": mbrl_model, "buffer.npz": buffer}),
                        ("trpo", {"policy.npz": policy, "trpo_state.npz": trpo_state})):
        for file, members in files.items():
            yield from _npz(algo, file, ["__header__"] + members)
            yield from _npz_values(algo, file, headers[file])
            yield from _huge(algo, file)
        yield from _config(algo)
        yield from _state(algo)
        yield from _metrics(algo)
    yield from _controller()
    yield Case("trpo", "trpo_state.npz", "header-iteration-other", with_header(iteration=1),
               "iteration")
    yield Case("mbrl", "buffer.npz", "terminated-2.5", with_array(
        "terminated", lambda x: np.full(x.shape, 2.5, np.float32)), "terminated")
    yield Case("mbrl", "buffer.npz", "size-above-capacity", with_header(size=301), "size")
    yield Case("trpo", "policy.npz", "task-other-sizes", with_header(task="HalfCheetah-v5"),
               "task")


CASES = list(_cases())


# -- running a case -----------------------------------------------------------------------------
def snapshot(d: Path) -> dict:
    """Every file (bytes, mtime) and directory under `d`, a lock file aside."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.name in IGNORED:
            continue
        rel = str(p.relative_to(d))
        out[rel] = (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "dir"
    return out


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class CaseTimeout(BaseException):
    """Not an Exception: main's handlers must not turn it into a one-line error."""


@contextlib.contextmanager
def time_limit(seconds):
    """A command that got past the file it should refuse may start training: stop it."""
    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def address_space_limit(headroom):
    """Cap the process's address space at its current size plus `headroom` (Linux), so a
    file that makes us allocate gigabytes fails here instead of exhausting the machine."""
    try:
        with open("/proc/self/statm") as fh:
            size = int(fh.read().split()[0]) * resource.getpagesize()
    except OSError:  # pragma: no cover - not Linux
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + headroom if hard == resource.RLIM_INFINITY else min(size + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished tiny MBRL and TRPO run, each evaluated and resumed once (numba's and
    gymnasium's first-call costs paid before any case is measured)."""
    root = tmp_path_factory.mktemp("pristine")
    runs = {}
    for algo, args in (("mbrl", MBRL_ARGS), ("trpo", TRPO_ARGS)):
        d = root / algo
        assert main(["train", "Pendulum-v1", *args, "--out", str(d), "--quiet"]) == 0
        assert main(["eval", str(d), "--episodes", "1", "--json"]) == 0
        assert main(["train", "--resume", str(d), "--quiet"]) == 0
        runs[algo] = d
    return runs


def test_corpus_is_broad():
    assert len(CASES) > 300 and len({c.id for c in CASES}) == len(CASES)
    assert {c.file for c in CASES} == {"model.npz", "buffer.npz", "controller.json",
                                       "config.json", "state.json", "metrics.jsonl",
                                       "policy.npz", "trpo_state.npz"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file_is_refused(case, pristine, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(pristine[case.algo], d)
    capsys.readouterr()
    case.mutate(d / case.file)
    before = snapshot(d)
    commands = case.commands or [c for c in (EVAL, RESUME) if case.file in READS[c, case.algo]]
    for command in commands:
        argv = (["eval", str(d), "--episodes", "1"] if command == EVAL
                else ["train", "--resume", str(d), "--quiet"])
        rss = max_rss()
        with address_space_limit(ADDRESS_HEADROOM), time_limit(CASE_SECONDS):
            code = main(argv)  # an exception escaping main fails the case as it should
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2, f"{command}: exit {code}, stderr {err!r}"
        assert len(lines) == 1 and lines[0].startswith("fastmbrl: error: "), err
        named = (case.file, Path(case.file).stem) + ((case.key,) if case.key else ())
        assert any(n in lines[0] for n in named), f"{command}: names none of {named}: {err}"
        assert snapshot(d) == before, f"{command} changed the directory"
        assert max_rss() - rss < RSS_HEADROOM, f"{command}: resident memory grew by " \
                                               f"{(max_rss() - rss) >> 20} MiB"
