"""`fastmbrl bench mdnrnn`: training throughput of World Models' M, the MDN-RNN, in sequence
steps per second (batch rows x steps of a truncated-BPTT chunk, per second).

One training step (forward over the chunk, the mixture/reward/done loss, backward through
time, Adam) through `MDNRNN.fit`, timed next to the same step written the plain NumPy way
(every product per step, NumPy transcendentals, unfused Adam) in the same process, on the same
random data. Figures are medians over repeats; sizes default to the paper's CarRacing M.
"""
from __future__ import annotations

import json

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.models.mdnrnn import MDNRNN
from .common import add_mdnrnn_sizes, blas_info, machine, machine_line, median_time


def make_data(z_dim, act_dim, batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    f = np.float32
    return (rng.standard_normal((batch, seq + 1, z_dim), dtype=f),
            rng.uniform(-1, 1, (batch, seq, act_dim)).astype(f),
            rng.standard_normal((batch, seq), dtype=f), np.zeros((batch, seq), f))


def numpy_step(z_dim, act_dim, hidden, n_mix, data, seed=0):
    """The reference: one training step of the same network, written the obvious NumPy way."""
    z, a, r, d = data
    rng = np.random.default_rng(seed)
    n_in, h, zk = z_dim + act_dim, hidden, z_dim * n_mix
    out = 3 * zk + 2
    bound = 1 / np.sqrt(h)
    params = [rng.uniform(-bound, bound, (n_in + h, 4 * h)).astype(np.float32),
              np.zeros(4 * h, np.float32),
              rng.uniform(-bound, bound, (h, out)).astype(np.float32), np.zeros(out, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    state = {"t": 0}
    sig = lambda x: 0.5 + 0.5 * np.tanh(0.5 * x)  # noqa: E731

    def step():
        w, b, wo, bo = params
        n_b, n_t = a.shape[:2]
        hs, cs = [np.zeros((n_b, h), np.float32)], [np.zeros((n_b, h), np.float32)]
        acts, xs = [], []
        for t in range(n_t):
            x = np.concatenate([z[:, t], a[:, t]], 1)
            g = x @ w[:n_in] + hs[-1] @ w[n_in:] + b
            i, f, o = sig(g[:, :h]), sig(g[:, h:2 * h]), sig(g[:, 3 * h:])
            gg = np.tanh(g[:, 2 * h:3 * h])
            c = f * cs[-1] + i * gg
            xs.append(x)
            acts.append((i, f, gg, o, np.tanh(c)))
            cs.append(c)
            hs.append(o * acts[-1][4])
        hcat = np.stack(hs[1:], 1).reshape(-1, h)
        y = hcat @ wo + bo
        x_next = z[:, 1:].reshape(-1, z_dim)[:, :, None]
        logits, mu, ls = (y[:, k * zk:(k + 1) * zk].reshape(-1, z_dim, n_mix) for k in range(3))
        log_pi = logits - logits.max(-1, keepdims=True)
        log_pi -= np.log(np.exp(log_pi).sum(-1, keepdims=True))
        u = (x_next - mu) * np.exp(-ls)
        lk = log_pi - ls - 0.5 * np.log(2 * np.pi) - 0.5 * u * u
        mx = lk.max(-1, keepdims=True)
        lse = mx + np.log(np.exp(lk - mx).sum(-1, keepdims=True))
        gam = np.exp(lk - lse)
        n_rows = y.shape[0]
        s = 1.0 / (n_rows * z_dim)
        dy = np.empty_like(y)
        dy[:, :zk] = (s * (np.exp(log_pi) - gam)).reshape(n_rows, -1)
        dy[:, zk:2 * zk] = (-s * gam * u * np.exp(-ls)).reshape(n_rows, -1)
        dy[:, 2 * zk:3 * zk] = (s * gam * (1 - u * u)).reshape(n_rows, -1)
        dy[:, 3 * zk] = 2 * (y[:, 3 * zk] - r.reshape(-1)) / n_rows
        dy[:, 3 * zk + 1] = (sig(y[:, 3 * zk + 1]) - d.reshape(-1)) / n_rows
        grads = [np.zeros_like(w), np.zeros_like(b), hcat.T @ dy, dy.sum(0)]
        dhs = (dy @ wo.T).reshape(n_b, n_t, h)
        dh, dc = np.zeros((n_b, h), np.float32), np.zeros((n_b, h), np.float32)
        for t in range(n_t - 1, -1, -1):
            i, f, gg, o, tc = acts[t]
            dh = dhs[:, t] + dh
            dct = dc + dh * o * (1 - tc * tc)
            dg = np.concatenate([dct * gg * i * (1 - i), dct * cs[t] * f * (1 - f),
                                 dct * i * (1 - gg * gg), dh * tc * o * (1 - o)], 1)
            grads[0] += np.concatenate([xs[t], hs[t]], 1).T @ dg
            grads[1] += dg.sum(0)
            dh = dg @ w[n_in:].T
            dc = dct * f
        state["t"] += 1
        t = state["t"]
        for p, gr, mi, vi in zip(params, grads, m, v):
            gr = np.clip(gr, -1, 1)
            mi[...] = 0.9 * mi + 0.1 * gr
            vi[...] = 0.999 * vi + 0.001 * gr * gr
            p -= 1e-3 * (mi / (1 - 0.9 ** t)) / (np.sqrt(vi / (1 - 0.999 ** t)) + 1e-8)

    return step



def measure(z_dim=32, act_dim=3, hidden=256, n_mix=5, batch=100, seq=100, repeats=5,
            reference=True) -> dict:
    data = make_data(z_dim, act_dim, batch, seq)
    model = MDNRNN(z_dim, act_dim, hidden, n_mix)
    fit = lambda: model.fit(*data, epochs=1, batch_size=batch, seq_len=seq)  # noqa: E731
    rate = batch * seq / median_time(fit, repeats)
    row = {"z_dim": z_dim, "act_dim": act_dim, "hidden": hidden, "n_mix": n_mix,
           "batch_size": batch, "seq_len": seq, "params": model.num_params,
           "repeats": repeats, "seq_steps_per_s": rate}
    if reference:
        ref = numpy_step(z_dim, act_dim, hidden, n_mix, data)
        row["numpy_seq_steps_per_s"] = batch * seq / median_time(ref, repeats)
        row["speedup_vs_numpy"] = rate / row["numpy_seq_steps_per_s"]
    row["blas"] = blas_info()
    row.update(machine())
    return row


def add_arguments(parser):
    add_mdnrnn_sizes(parser)
    parser.add_argument("--batch", type=int, default=100, help="sequences per step (default 100)")
    parser.add_argument("--seq-len", type=int, default=100,
                        help="steps of a truncated-BPTT chunk (default 100)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed steps; the median is reported")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the plain NumPy reference")


def run(args) -> int:
    sizes = {k: check_positive_int(getattr(args, k), f"--{k.replace('_', '-')}")
             for k in ("z_dim", "act_dim", "hidden", "mixtures", "batch", "seq_len", "repeats")}
    if not args.json:
        print(f"{machine_line()}\nMDN-RNN training throughput, one truncated-BPTT step, median "
              f"of {sizes['repeats']} (NumPy BLAS: {blas_info()})")
    row = measure(sizes["z_dim"], sizes["act_dim"], sizes["hidden"], sizes["mixtures"],
                  sizes["batch"], sizes["seq_len"], sizes["repeats"], not args.no_reference)
    if args.json:
        print(json.dumps(row), flush=True)
    else:
        ref = ("" if args.no_reference else
               f"   numpy {row['numpy_seq_steps_per_s']:9.0f}/s   x{row['speedup_vs_numpy']:.2f}")
        print(f"z {row['z_dim']} a {row['act_dim']} LSTM {row['hidden']} K {row['n_mix']} "
              f"batch {row['batch_size']} x seq {row['seq_len']}: "
              f"{row['seq_steps_per_s']:9.0f} sequence-steps/s{ref}", flush=True)
    return 0
