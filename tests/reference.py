"""Slow, obviously-right NumPy twins of the numba kernels (float64 where it matters)."""
from __future__ import annotations

import numba
import numpy as np

from fastmbrl.kernels import FASTMATH
from fastmbrl.kernels.rollout import slot_of
from fastmbrl.models.dynamics import DynamicsModel


def mlp_forward_reference(weights, biases, activation, x):
    """Plain float64 MLP forward: hidden layers use `activation`, the output layer is linear."""
    act = {
        "relu": lambda v: np.maximum(v, 0.0),
        "tanh": np.tanh,
        "silu": lambda v: v / (1.0 + np.exp(-v)),
        "swish": lambda v: v / (1.0 + np.exp(-v)),
    }[activation]
    h = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if i < len(weights) - 1:
            h = act(h)
    return h


def features_reference(obs, angle_dims=()):
    """The network's observation inputs: angles replaced by their sine, their cosines appended."""
    angle_dims = list(angle_dims)
    out = np.array(obs, np.float64, copy=True)
    out[..., angle_dims] = np.sin(out[..., angle_dims])
    return np.concatenate([out, np.cos(np.asarray(obs, np.float64)[..., angle_dims])], axis=-1)


def rollout_reference(weights, biases, activation, input_mean, input_scale, delta_mean,
                      delta_std, obs, actions, reward, terminated=None, angle_dims=(),
                      absolute_dims=(), live=None, ends=False):
    """Returns (K,) of the delta model rolled out step by step (see `returns_reference`).
    `absolute_dims` are predicted as values, not deltas."""
    def step(state, a):
        net_in = (np.concatenate([features_reference(state, angle_dims), a], axis=1)
                  - input_mean) * input_scale
        carried = state.copy()
        carried[:, list(absolute_dims)] = 0
        return carried + delta_mean + delta_std * mlp_forward_reference(weights, biases,
                                                                        activation, net_in)
    return returns_reference(step, obs, actions, reward, terminated, np.float64, live, ends)


def known_rollout_reference(dynamics, obs, actions, reward, terminated=None):
    """Returns (K,) of known dynamics `dynamics(obs, act, next_obs)` stepped in float32, one
    call per step on every candidate (see `returns_reference`)."""
    def step(state, a):
        nxt = np.empty_like(state)
        dynamics(np.ascontiguousarray(state), np.ascontiguousarray(a), nxt)
        return nxt
    return returns_reference(step, obs, actions, reward, terminated, np.float32)


def returns_reference(step, obs, actions, reward, terminated, dtype, live=None, ends=False):
    """Returns (K,) of `step(state (K, O), act (K, A)) -> next state` from `obs` for H steps;
    rewards/terminations are called on float32 copies, as their contract says. Diverged
    candidates (non-finite state while running, or non-finite return) score -inf; a terminated
    rollout keeps the reward of its terminating step and earns nothing after. `obs` (K, O):
    one start state per candidate, `live` (K,) which of them are still running; `ends`: also
    return the end states and which rollouts still run."""
    actions = np.asarray(actions, dtype)
    k, horizon, _ = actions.shape
    obs = np.asarray(obs, dtype)
    state = obs.copy() if obs.ndim == 2 else np.repeat(obs[None], k, axis=0)
    returns = np.zeros(k)
    alive = np.ones(k, bool) if live is None else np.array(live, bool)
    rew = np.empty(k, np.float32)
    done = np.zeros(k, np.bool_)
    for t in range(horizon):
        a = actions[:, t]
        nxt = step(state, a)
        with np.errstate(invalid="ignore", over="ignore"):
            f32 = [np.ascontiguousarray(v, np.float32) for v in (state, a, nxt)]
            reward(*f32, rew)
            done[:] = False
            if terminated is not None:
                terminated(*f32, done)
            diverged = alive & ~np.isfinite(nxt).all(axis=1)
            returns[diverged] = -np.inf
            alive &= ~diverged
            returns[alive] += rew[alive]
            alive &= ~done
        state = nxt
    returns[~np.isfinite(returns)] = -np.inf
    return (returns, state, alive) if ends else returns


def particle_rollout_reference(weights, biases, activation, input_mean, input_scale, delta_mean,
                               delta_std, logvar_bounds, obs, actions, reward, particles, noise,
                               sources=None, terminated=None, states=None, alive=None,
                               returns=None, ends=False):
    """Returns (K, P): PETS trajectory sampling written per particle, in float64. `weights` /
    `biases`: per-member lists (B members); particle p of candidate k belongs to member
    p // (P / B) and sits in slot slot_of(K, P / B, k, p); at step t it first takes the state
    of the particle in slot sources[slot, t] (ts1; None: it keeps its own, tsinf), then
    next = obs + delta_mean + delta_std (mean + exp(lv / 2) noise[slot, t]), with mean and lv
    the member's normalised mean and soft-bounded log-variance (upper logvar_bounds[m, 0],
    lower [m, 1]). `states` (K, P, O), `alive` (K, P) and `returns` (K, P): where each particle
    starts and what it has earned (default: obs, alive, 0); `ends`: also its end states and
    alive flags."""
    actions = np.asarray(actions, np.float64)
    k, horizon, _ = actions.shape
    b = len(weights)
    pm = particles // b
    slot = slot_of(k, pm, *np.meshgrid(np.arange(k), np.arange(particles), indexing="ij"))
    member = np.arange(particles) // pm
    o = len(delta_mean)
    if states is None:
        state = np.repeat(np.repeat(np.asarray(obs, np.float64)[None, None], k, 0), particles, 1)
    else:
        state = np.array(states, np.float64)
    returns = np.zeros((k, particles)) if returns is None else np.array(returns, np.float64)
    alive = np.ones((k, particles), bool) if alive is None else np.array(alive, bool)
    rew = np.empty(k, np.float32)
    done = np.zeros(k, np.bool_)
    softplus = lambda v: np.logaddexp(0.0, v)  # noqa: E731
    for t in range(horizon):
        if sources is not None:  # who moves in: slot -> (candidate, particle)
            where = {int(s): (kk, pp) for (kk, pp), s in np.ndenumerate(slot)}
            take = np.array([[where[int(sources[slot[kk, pp], t])][1]
                              for pp in range(particles)] for kk in range(k)])
            rows = np.arange(k)[:, None]
            state, returns, alive = state[rows, take], returns[rows, take], alive[rows, take]
        nxt = np.empty_like(state)
        for p in range(particles):
            m = member[p]
            net_in = (np.concatenate([state[:, p], actions[:, t]], axis=1) - input_mean) * input_scale
            raw = mlp_forward_reference(weights[m], biases[m], activation, net_in)
            hi, lo = (np.asarray(v, np.float64) for v in logvar_bounds[m])
            lv = lo + softplus(hi - softplus(hi - raw[:, o:]) - lo)
            eps = np.asarray(noise, np.float64)[slot[:, p], t]
            nxt[:, p] = state[:, p] + delta_mean + delta_std * (raw[:, :o] + np.exp(lv / 2) * eps)
        for p in range(particles):
            with np.errstate(invalid="ignore", over="ignore"):
                f32 = [np.ascontiguousarray(v, np.float32)
                       for v in (state[:, p], actions[:, t], nxt[:, p])]
                reward(*f32, rew)
                done[:] = False
                if terminated is not None:
                    terminated(*f32, done)
                a = alive[:, p]
                diverged = a & ~np.isfinite(nxt[:, p]).all(axis=1)
                returns[diverged, p] = -np.inf
                a &= ~diverged
                returns[a, p] += rew[a]
                a &= ~done
                alive[:, p] = a
        state = nxt
    returns[~np.isfinite(returns)] = -np.inf
    return (returns, state, alive) if ends else returns


# --- small reward/termination functions and real models for the planner tests ---

@numba.njit(cache=True, fastmath=FASTMATH)
def quadratic_reward(obs, act, next_obs, out):
    for i in range(obs.shape[0]):
        s = np.float32(0)
        for j in range(next_obs.shape[1]):
            s += next_obs[i, j] * next_obs[i, j]
        for j in range(act.shape[1]):
            s += np.float32(0.1) * act[i, j] * act[i, j]
        out[i] = -s


@numba.njit(cache=True, fastmath=FASTMATH)
def leaves_box(obs, act, next_obs, out):
    for i in range(obs.shape[0]):
        out[i] = abs(next_obs[i, 0]) > np.float32(1.0)


def dynamics_model(model, activation="relu"):
    """A DynamicsModel holding the arrays of `model` (the dict pack_model and rollout_reference
    take: one member's weight lists, or per-member lists for an ensemble; shared (D,)
    statistics), set through load_state."""
    ensemble = isinstance(model["weights"][0], (list, tuple))
    weights = model["weights"] if ensemble else [model["weights"]]
    biases = model["biases"] if ensemble else [model["biases"]]
    first = [np.shape(w) for w in weights[0]]
    obs_dim = first[-1][1]
    dm = DynamicsModel(obs_dim, first[0][0] - obs_dim, tuple(s[1] for s in first[:-1]),
                       activation, ensemble_size=len(weights))
    state = {k: model[k] for k in ("input_mean", "input_scale", "delta_mean", "delta_std")}
    for m, (ws, bs) in enumerate(zip(weights, biases)):
        prefix = f"m{m}_" if ensemble else ""
        for i, (w, b) in enumerate(zip(ws, bs)):
            state[f"{prefix}W{i}"], state[f"{prefix}b{i}"] = w, b
    dm.load_state(state)
    return dm


def gae_reference(rewards, values, next_values, terminated, episode_end, gamma, lam):
    """GAE as the explicit sum Â_t = Σ_l (γλ)^l δ_{t+l} up to the end of t's episode segment,
    with δ_t = r_t + γ V(s_{t+1}) (0 after a termination) - V(s_t). Twin of kernels.trpo.gae."""
    n = len(rewards)
    deltas = [rewards[t] + (0.0 if terminated[t] else gamma * next_values[t]) - values[t]
              for t in range(n)]
    out = np.zeros(n)
    for t in range(n):
        total, weight = 0.0, 1.0
        for u in range(t, n):
            total += weight * deltas[u]
            if episode_end[u]:
                break
            weight *= gamma * lam
        out[t] = total
    return out


def mse_epoch_reference(weights, biases, activation, x, y, order, batch, lr, betas, eps,
                        weight_decay, t0, m, v, noise=None):
    """One epoch of minibatch Adam on the MSE in float64, written out step by step: the twin of
    kernels.train. `order` (n,) rows of x/y in visiting order, `noise` (n, in) added to the
    inputs; `m`/`v` lists shaped like [W0, b0, W1, ...], updated in place with the weights.
    Returns the mean batch loss weighted by batch rows."""
    f = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh,
         "silu": lambda z: z / (1.0 + np.exp(-z))}[activation]
    df = {"relu": lambda z: (z > 0).astype(float), "tanh": lambda z: 1 - np.tanh(z) ** 2,
          "silu": lambda z: (s := 1 / (1 + np.exp(-z))) + z * s * (1 - s)}[activation]
    params = [p for pair in zip(weights, biases) for p in pair]
    total, n, t = 0.0, len(order), t0
    for s0 in range(0, n, batch):
        idx = order[s0:s0 + batch]
        h = np.asarray(x, np.float64)[idx]
        if noise is not None:
            h = h + noise[s0:s0 + batch]
        hs, zs = [h], []
        for i, (w, b) in enumerate(zip(weights, biases)):
            z = hs[-1] @ w + b
            zs.append(z)
            hs.append(f(z) if i < len(weights) - 1 else z)
        diff = hs[-1] - np.asarray(y, np.float64)[idx]
        total += (diff ** 2).mean() * len(idx)
        g = 2 * diff / diff.size
        grads = [None] * len(params)
        for i in range(len(weights) - 1, -1, -1):
            grads[2 * i], grads[2 * i + 1] = hs[i].T @ g, g.sum(axis=0)
            if i:
                g = (g @ weights[i].T) * df(zs[i - 1])
        t += 1
        for p, gr, mi, vi in zip(params, grads, m, v):
            gr = gr + weight_decay * p
            mi[...] = betas[0] * mi + (1 - betas[0]) * gr
            vi[...] = betas[1] * vi + (1 - betas[1]) * gr * gr
            p -= lr * (mi / (1 - betas[0] ** t)) / (np.sqrt(vi / (1 - betas[1] ** t)) + eps)
    return total / n


# -- run directory outputs ------------------------------------------------------------------------
def metrics_table(rows):
    """metrics.csv as it should be for metrics rows `rows` (as read back from metrics.jsonl):
    (header, cells), every scalar field a column, its cell the field's JSON text ('' for null, a
    string without quotes), list fields left out."""
    import json

    header = ["iteration", "env_steps"]
    for row in rows:
        header += [k for k, v in row.items() if not isinstance(v, (list, dict))
                   and k not in header]
    cells = [["" if row.get(k) is None or isinstance(row.get(k), (list, dict))
              else row[k] if isinstance(row[k], str) else json.dumps(row[k])
              for k in header] for row in rows]
    return header, cells


def read_csv_table(path):
    """(header, cells) of a CSV file."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        header, *cells = list(csv.reader(fh))
    return header, cells


def tensorboard_scalars(logdir):
    """{tag: [(step, value)]} that TensorBoard shows for the event files in `logdir`, read with
    tensorboardX's protobuf messages: files in name order, and a SessionLog START at step P
    hides the events at steps >= P read before it (TensorBoard's rule for a restarted run)."""
    import struct
    from pathlib import Path

    from tensorboardX.proto.event_pb2 import Event, SessionLog

    shown = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (size,) = struct.unpack_from("<Q", data, pos)
            if pos + 16 + size > len(data):
                break  # a torn last record
            event = Event.FromString(data[pos + 12:pos + 12 + size])
            pos += 16 + size
            if event.session_log.status == SessionLog.START:
                shown = {t: [p for p in pts if p[0] < event.step] for t, pts in shown.items()}
            for value in event.summary.value:
                shown.setdefault(value.tag, []).append((event.step, value.simple_value))
    return shown


# --- a linear-quadratic problem with a known optimum, for the planners ---
LQ_DT = 0.1


@numba.njit(cache=True)
def double_integrator(obs, act, next_obs):
    """x = (position, velocity), u = acceleration: x' = A x + B u, exact in float32."""
    for i in range(obs.shape[0]):
        next_obs[i, 0] = obs[i, 0] + np.float32(LQ_DT) * obs[i, 1]
        next_obs[i, 1] = obs[i, 1] + np.float32(LQ_DT) * act[i, 0]


def lq_optimum(x0, horizon, act_weight=0.1, dt=LQ_DT):
    """(u*, J*) of max -sum_t |x_{t+1}|^2 + w |u_t|^2 under double_integrator from x0, unbounded:
    the stacked states are X = F x0 + G u, so u* solves (G'G + w I) u = -G' F x0."""
    a = np.array([[1.0, dt], [0.0, 1.0]])
    b = np.array([[0.0], [dt]])
    f = np.zeros((2 * horizon, 2))
    g = np.zeros((2 * horizon, horizon))
    power = np.eye(2)
    for t in range(horizon):
        power = a @ power
        f[2 * t: 2 * t + 2] = power
        for s in range(t + 1):
            g[2 * t: 2 * t + 2, s] = (np.linalg.matrix_power(a, t - s) @ b)[:, 0]
    x0 = np.asarray(x0, np.float64)
    u = -np.linalg.solve(g.T @ g + act_weight * np.eye(horizon), g.T @ f @ x0)
    return u, lq_return(u, x0, act_weight, dt)


def lq_return(u, x0, act_weight=0.1, dt=LQ_DT):
    """The return of the action sequence u (H,) or (H, 1) from x0, in float64."""
    x = np.asarray(x0, np.float64).copy()
    total = 0.0
    for ut in np.ravel(u):
        x = np.array([x[0] + dt * x[1], x[1] + dt * ut])
        total -= x @ x + act_weight * ut * ut
    return total
def conv2d_reference(x, w, b, stride):
    """'valid' NHWC convolution by loops over output pixels: x (N, H, W, Ci), w (kh, kw, Ci,
    Co)."""
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.empty((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            y[:, i, j, :] = np.tensordot(patch, w, axes=3) + b
    return y


def conv_transpose2d_reference(x, w, b, stride):
    """NHWC transposed convolution by scattering each input pixel: x (N, H, W, Ci), w (Ci, kh,
    kw, Co)."""
    n, h, wd, _ = x.shape
    _, kh, kw, co = w.shape
    y = np.zeros((n, (h - 1) * stride + kh, (wd - 1) * stride + kw, co))
    for i in range(h):
        for j in range(wd):
            y[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :] += (
                np.tensordot(x[:, i, j, :], w, axes=1))
    return y + b


def conv2d_grads_reference(x, w, stride, dout):
    """(dx, dw, db) of a convolution by the same loops, given dL/dy."""
    kh, kw = w.shape[:2]
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for i in range(dout.shape[1]):
        for j in range(dout.shape[2]):
            sl = (slice(None), slice(i * stride, i * stride + kh),
                  slice(j * stride, j * stride + kw))
            dx[sl] += np.tensordot(dout[:, i, j, :], w, axes=([1], [3]))
            dw += np.tensordot(x[sl], dout[:, i, j, :], axes=([0], [0]))
    return dx, dw, dout.sum(axis=(0, 1, 2))


def conv_transpose2d_grads_reference(x, w, stride, dout):
    """(dx, dw, db) of a transposed convolution by the same loops, given dL/dy."""
    _, kh, kw, _ = w.shape
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            g = dout[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            dx[:, i, j, :] = np.tensordot(g, w, axes=([1, 2, 3], [1, 2, 3]))
            dw += np.tensordot(x[:, i, j, :], g, axes=([0], [0]))
    return dx, dw, dout.sum(axis=(0, 1, 2))


def vae_loss_reference(vae, x, eps):
    """The loss of a ConvVAE written from its definition with the reference layers (float64):
    sum of squared pixel errors plus max(KL, kl_tolerance * z), averaged over the batch."""
    cfg = vae.config
    h = np.asarray(x, np.float64)
    for w, b in zip(vae.enc_w, vae.enc_b):
        h = np.maximum(conv2d_reference(h, w, b, cfg.stride), 0.0)
    head = h.reshape(len(h), -1) @ vae.enc_dense.weights[0] + vae.enc_dense.biases[0]
    mu, logvar = head[:, :cfg.z_size], head[:, cfg.z_size:]
    z = mu + np.exp(0.5 * logvar) * eps
    h = (z @ vae.dec_dense.weights[0] + vae.dec_dense.biases[0]).reshape(len(z), 1, 1, -1)
    for k, (w, b) in enumerate(zip(vae.dec_w, vae.dec_b)):
        h = conv_transpose2d_reference(h, w, b, cfg.stride)
        h = np.maximum(h, 0.0) if k < len(vae.dec_w) - 1 else 1.0 / (1.0 + np.exp(-h))
    r = ((h - x) ** 2).sum(axis=(1, 2, 3))
    kl = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum(axis=1)
    return float(np.mean(r + np.maximum(kl, cfg.kl_tolerance * cfg.z_size)))


def mdnrnn_reference(params, z_dim, n_mix, z, actions, rewards, dones, mask=None,
                     reward_weight=1.0, done_weight=1.0, h0=None, c0=None):
    """The MDN-RNN's forward pass and loss, one episode and one step at a time in float64.

    params: {"W", "b", "Wo", "bo"} as in MDNRNN. Returns (loss, head outputs (B, T, out), h_T,
    c_T); the loss averages over the masked-in (episode, step) pairs."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    n_b, n_t = np.shape(actions)[:2]
    hd = p["b"].size // 4
    n_in = p["W"].shape[0] - hd
    mask = np.ones((n_b, n_t)) if mask is None else np.asarray(mask, np.float64)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    total, count = 0.0, 0.0
    ys = np.zeros((n_b, n_t, p["bo"].size))
    hs, cs = [], []
    for e in range(n_b):
        h = np.zeros(hd) if h0 is None else np.asarray(h0[e], np.float64)
        c = np.zeros(hd) if c0 is None else np.asarray(c0[e], np.float64)
        for t in range(n_t):
            x = np.concatenate([z[e][t], actions[e][t]]).astype(np.float64)
            g = x @ p["W"][:n_in] + h @ p["W"][n_in:] + p["b"]
            i, f, gg, o = sig(g[:hd]), sig(g[hd:2 * hd]), np.tanh(g[2 * hd:3 * hd]), sig(g[3 * hd:])
            c = f * c + i * gg
            h = o * np.tanh(c)
            y = h @ p["Wo"] + p["bo"]
            ys[e, t] = y
            zk = z_dim * n_mix
            nll = 0.0
            for d in range(z_dim):
                logits = y[d * n_mix:(d + 1) * n_mix]
                mu = y[zk + d * n_mix: zk + (d + 1) * n_mix]
                ls = y[2 * zk + d * n_mix: 2 * zk + (d + 1) * n_mix]
                m = logits.max()
                log_pi = logits - m - np.log(np.sum(np.exp(logits - m)))
                xd = float(z[e][t + 1][d])
                lk = log_pi - ls - 0.5 * np.log(2 * np.pi) - 0.5 * ((xd - mu) / np.exp(ls)) ** 2
                m2 = lk.max()
                nll -= m2 + np.log(np.sum(np.exp(lk - m2)))
            q = y[3 * zk + 1]
            d_t = float(dones[e][t])
            bce = -(d_t * np.log(sig(q)) + (1 - d_t) * np.log(1 - sig(q)))
            loss = (nll / z_dim + reward_weight * (y[3 * zk] - rewards[e][t]) ** 2
                    + done_weight * bce)
            total += mask[e, t] * loss
            count += mask[e, t]
        hs.append(h)
        cs.append(c)
    return total / max(count, 1.0), ys, np.array(hs), np.array(cs)


def dream_reference(model, population, z0, low, high, pick, noise, temperature,
                    done_threshold, clip=None):
    """(returns (P, R), steps (P, R)) of World Models controllers in M's dream, vectorised over
    the P R rollouts in NumPy: M's own `step`, C's formula (`clip`: the actions clipped rather
    than mapped) and the mixture drawn with the given uniforms `pick` and normals `noise`
    (P, R, T, Z)."""
    p, r = population.shape[0], z0.shape[0]
    zd, hid, a = model.z_dim, model.hidden, model.act_dim
    rows = p * r
    theta = np.repeat(population, r, axis=0)  # row p R + r: candidate p, rollout r
    w = theta[:, :a * (zd + hid)].reshape(rows, a, zd + hid)
    bias = theta[:, a * (zd + hid):]
    z = np.tile(z0, (p, 1)).astype(np.float64)
    h, c = np.zeros((rows, hid)), np.zeros((rows, hid))
    pick = pick.reshape(rows, -1, zd)
    noise = noise.reshape(rows, -1, zd)
    total, steps = np.zeros(rows), np.zeros(rows, np.int64)
    alive = np.ones(rows, bool)
    for t in range(pick.shape[1]):
        s = np.einsum("nij,nj->ni", w, np.concatenate([z, h], axis=1)) + bias
        u = np.tanh(s)
        act = low + (high - low) * (u + 1) / 2
        if clip is not None:
            act = np.where(np.asarray(clip, bool), np.clip(u, low, high), act)
        mix, reward, done, h, c = model.step(z, act, h, c)
        total[alive] += reward[alive]
        steps[alive] += 1
        alive &= ~(done > done_threshold)
        if temperature == 0:
            k = np.argmax(mix.log_pi, axis=-1)
            z = np.take_along_axis(mix.mu, k[..., None], -1)[..., 0]
            continue
        logits = mix.log_pi / temperature
        prob = np.exp(logits - logits.max(axis=-1, keepdims=True))
        cum = np.cumsum(prob, axis=-1)
        u = pick[:, t][..., None] * cum[..., -1:]
        k = np.minimum((cum <= u).sum(-1), model.n_mix - 1)
        mu = np.take_along_axis(mix.mu, k[..., None], -1)[..., 0]
        ls = np.take_along_axis(mix.log_std, k[..., None], -1)[..., 0]
        z = mu + np.exp(ls) * np.sqrt(temperature) * noise[:, t]
    return total.reshape(p, r), steps.reshape(p, r)
