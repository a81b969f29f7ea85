"""`fastmbrl bench dream`: World Models controllers rolled out inside M, the MDN-RNN (the
dream), in rollout steps and rollouts per second.

A CMA-ES generation of linear controllers C (population P, R rollouts each, T steps; sizes
default to the paper's CarRacing M and C: z 32, LSTM 256, 5 mixtures, 3 actions, 867
parameters, the CMA-ES default population 4 + 3 ln 867 = 24), timed through
`fastmbrl.models.wm_controller.dream` next to the same rollouts written the plain NumPy way
(every product over all P R rollouts at once, per step) in the same process, on the same random
M and draws. The done head is biased off so that every rollout runs its T steps and the two do
the same work. Figures are medians over repeats.
"""
from __future__ import annotations

import json

import numpy as np

from fastmbrl._validate import check_positive_int
from fastmbrl.models.mdnrnn import MDNRNN
from fastmbrl.models.wm_controller import dream, num_params

from .common import add_mdnrnn_sizes, blas_info, machine, machine_line, median_time

F32 = np.float32


def make_case(z_dim=32, act_dim=3, hidden=256, n_mix=5, population=24, rollouts=2, seed=0):
    """(model, population, z0, low, high): a random M whose done head never fires, controllers
    of CMA-ES-like spread and start latents of unit scale."""
    model = MDNRNN(z_dim, act_dim, hidden, n_mix, seed=seed)
    prm = model.params
    zk = z_dim * n_mix
    prm["bo"][3 * zk + 1] = -30.0  # done probability ~1e-13: every rollout runs its T steps
    rng = np.random.default_rng(seed)
    pop = (0.1 * rng.standard_normal((population, num_params(z_dim, hidden, act_dim)))
           ).astype(model.dtype)
    z0 = rng.standard_normal((rollouts, z_dim)).astype(model.dtype)
    low, high = -np.ones(act_dim, F32), np.ones(act_dim, F32)
    low[1:] = 0.0  # CarRacing's gas and brake are in [0, 1]
    return model, pop, z0, low, high


def numpy_dream(model, population, z0, low, high, pick, noise, temperature, clip=None):
    """The reference: returns (P, R) of the same rollouts in float32 NumPy, all P R rows per
    step (batched products for C, the LSTM and the heads; the mixture drawn with `pick` and
    `noise` as the kernel draws it; `clip`: C's clipped actions). Every rollout runs all its
    steps (no done)."""
    prm = model.params
    w, b, wo, bo = (np.asarray(prm[k], F32) for k in ("W", "b", "Wo", "bo"))
    p, r = population.shape[0], z0.shape[0]
    zd, hid, a, k = model.z_dim, model.hidden, model.act_dim, model.n_mix
    zk, rows = zd * k, p * r
    theta = np.repeat(np.asarray(population, F32), r, axis=0)
    wc = theta[:, :a * (zd + hid)].reshape(rows, a, zd + hid)
    bc = theta[:, a * (zd + hid):]
    z = np.tile(np.asarray(z0, F32), (p, 1))
    h, c = np.zeros((rows, hid), F32), np.zeros((rows, hid), F32)
    pick = pick.reshape(rows, -1, zd)
    noise = noise.reshape(rows, -1, zd)
    total = np.zeros(rows, np.float64)
    span = (high - low) / 2
    sig = lambda x: 0.5 + 0.5 * np.tanh(0.5 * x)  # noqa: E731
    cols = np.arange(zd)[:, None]
    for t in range(pick.shape[1]):
        zh = np.concatenate([z, h], axis=1)
        u = np.tanh(np.matmul(wc, zh[:, :, None])[..., 0] + bc)
        act = low + span * (u + 1)
        if clip is not None:
            act = np.where(np.asarray(clip, bool), np.clip(u, low, high), act)
        g = np.concatenate([z, act, h], axis=1) @ w + b
        c = sig(g[:, hid:2 * hid]) * c + sig(g[:, :hid]) * np.tanh(g[:, 2 * hid:3 * hid])
        h = sig(g[:, 3 * hid:]) * np.tanh(c)
        y = h @ wo + bo
        total += y[:, 3 * zk]
        logits = y[:, :zk].reshape(rows, zd, k) / temperature
        prob = np.exp(logits - logits.max(axis=-1, keepdims=True))
        cum = np.cumsum(prob, axis=-1)
        pk = np.minimum((cum <= pick[:, t, :, None] * cum[..., -1:]).sum(-1), k - 1)
        mu = y[:, zk:2 * zk].reshape(rows, zd, k)[np.arange(rows)[:, None], cols.T, pk]
        ls = y[:, 2 * zk:3 * zk].reshape(rows, zd, k)[np.arange(rows)[:, None], cols.T, pk]
        z = (mu + np.exp(ls) * np.sqrt(temperature) * noise[:, t]).astype(F32)
    return total.reshape(p, r)



def measure(z_dim=32, act_dim=3, hidden=256, n_mix=5, population=24, rollouts=2, horizon=1000,
            repeats=3, reference=True, temperature=1.0) -> dict:
    model, pop, z0, low, high = make_case(z_dim, act_dim, hidden, n_mix, population, rollouts)
    run = lambda: dream(model, pop, z0, horizon, low, high, temperature)  # noqa: E731
    secs = median_time(run, repeats)
    n = population * rollouts
    row = {"z_dim": z_dim, "act_dim": act_dim, "hidden": hidden, "n_mix": n_mix,
           "population": population, "rollouts": rollouts, "horizon": horizon,
           "controller_params": pop.shape[1], "repeats": repeats,
           "rollouts_per_s": n / secs, "steps_per_s": n * horizon / secs}
    if reference:
        shape = (population, rollouts, horizon, z_dim)
        rng = np.random.default_rng(0)
        pick, noise = rng.random(shape, dtype=F32), rng.standard_normal(shape, dtype=F32)
        ref = lambda: numpy_dream(model, pop, z0, low, high, pick, noise, temperature)  # noqa: E731
        ref_secs = median_time(ref, repeats)
        row["numpy_steps_per_s"] = n * horizon / ref_secs
        row["speedup_vs_numpy"] = ref_secs / secs
    row["blas"] = blas_info()
    row.update(machine())
    return row


def add_arguments(parser):
    add_mdnrnn_sizes(parser)
    parser.add_argument("--population", type=int, default=24,
                        help="controllers (default 24, CMA-ES's default at 867 parameters)")
    parser.add_argument("--rollouts", type=int, default=2, help="rollouts per controller")
    parser.add_argument("--horizon", type=int, default=1000,
                        help="steps per rollout (default 1000, a CarRacing episode)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed generations; the median is reported")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the plain NumPy reference")


def run(args) -> int:
    sizes = {k: check_positive_int(getattr(args, k), f"--{k.replace('_', '-')}")
             for k in ("z_dim", "act_dim", "hidden", "mixtures", "population", "rollouts",
                       "horizon", "repeats")}
    if not args.json:
        print(f"{machine_line()}\nWorld Models dream: a population's rollouts inside M, median "
              f"of {sizes['repeats']} (NumPy BLAS: {blas_info()})")
    row = measure(sizes["z_dim"], sizes["act_dim"], sizes["hidden"], sizes["mixtures"],
                  sizes["population"], sizes["rollouts"], sizes["horizon"], sizes["repeats"],
                  not args.no_reference)
    if args.json:
        print(json.dumps(row), flush=True)
    else:
        ref = ("" if args.no_reference else
               f"   numpy {row['numpy_steps_per_s']:9.0f} steps/s   "
               f"x{row['speedup_vs_numpy']:.2f}")
        print(f"z {row['z_dim']} LSTM {row['hidden']} K {row['n_mix']} C "
              f"{row['controller_params']} params, {row['population']} x {row['rollouts']} "
              f"rollouts of {row['horizon']} steps: {row['rollouts_per_s']:8.1f} rollouts/s, "
              f"{row['steps_per_s']:9.0f} steps/s{ref}", flush=True)
    return 0
