"""Small numba helpers that keep the planners' per-call path free of NumPy temporaries.

Each one works in place on buffers the planner allocated at construction. They are sequential
(the work is tiny next to the rollout kernel) and therefore deterministic: random numbers are
drawn by the planner's numpy Generator before they are called.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH

_F0 = np.float32(0)
_F1 = np.float32(1)
_TWO = np.float32(2)
_NEG_INF = np.float32(-np.inf)


@njit(cache=True, fastmath=FASTMATH)
def load_obs(src, dst):
    """dst[:] = src cast to float32; True if every value is finite."""
    ok = True
    for i in range(dst.shape[0]):
        v = np.float32(src[i])
        dst[i] = v
        if not np.isfinite(v):
            ok = False
    return ok


@njit(cache=True, fastmath=FASTMATH)
def affine_clip(cand, shift, scale, low, high, beta):
    """cand[k] = clip(shift + scale * cand[k], low, high) for (K, H, A) cand and (H, A) shift
    and scale; with 0 <= beta <= 1 the values are low-pass filtered along the horizon first
    (a_t = beta a_t + (1 - beta) a_{t-1}, before clipping)."""
    smooth = beta >= 0
    for k in range(cand.shape[0]):
        for a in range(cand.shape[2]):
            prev = _F0
            for t in range(cand.shape[1]):
                v = shift[t, a] + scale[t, a] * cand[k, t, a]
                if smooth and t > 0:
                    v = beta * v + (_F1 - beta) * prev
                prev = v
                cand[k, t, a] = min(max(v, low[a]), high[a])


@njit(cache=True, fastmath=FASTMATH)
def color_clip(cand, white, coloring, mean, std, low, high):
    """cand[k, t, a] = clip(mean + std * sum_m coloring[m, t] white[k, a, m]) for the first
    white.shape[0] candidates: colored noise along the horizon (coloring is (M, H))."""
    for k in range(white.shape[0]):
        for t in range(cand.shape[1]):
            for a in range(cand.shape[2]):
                s = _F0
                for m in range(coloring.shape[0]):
                    s += coloring[m, t] * white[k, a, m]
                v = mean[t, a] + std[t, a] * s
                cand[k, t, a] = min(max(v, low[a]), high[a])


@njit(cache=True, fastmath=FASTMATH)
def truncate_normals(z, spare):
    """Replace entries of z outside [-2, 2] by the next entries of `spare` inside it, in order.
    Returns how many are still outside (spare ran out: draw it again and call again)."""
    j = 0
    n_spare = spare.shape[0]
    left = 0
    flat = z.reshape(-1)
    for i in range(flat.shape[0]):
        if abs(flat[i]) > _TWO:
            while j < n_spare and abs(spare[j]) > _TWO:
                j += 1
            if j < n_spare:
                flat[i] = spare[j]
                j += 1
            else:
                left += 1
    return left


@njit(cache=True, fastmath=FASTMATH)
def cap_std(std, mean, low, high):
    """std = min(std, (mean - low) / 2, (high - mean) / 2): mean +- 2 std stays in bounds."""
    for t in range(std.shape[0]):
        for a in range(std.shape[1]):
            room = min(mean[t, a] - low[a], high[a] - mean[t, a]) / _TWO
            std[t, a] = min(std[t, a], room)


@njit(cache=True, fastmath=FASTMATH)
def score_stats(returns):
    """(index of the best return, number of -inf returns); the first index on ties."""
    best = 0
    n_inf = 0
    for i in range(returns.shape[0]):
        v = returns[i]
        if v == _NEG_INF:
            n_inf += 1
        if v > returns[best]:
            best = i
    return best, n_inf


@njit(cache=True, fastmath=FASTMATH)
def member_mean(raw, out):
    """out[k] = mean over members m of raw[m * K + k], for raw (B * K,) and out (K,): the
    ensemble's score of each candidate (-inf if any member's rollout diverged)."""
    k = out.shape[0]
    b = raw.shape[0] // k
    inv = np.float32(1.0 / b)
    for i in range(k):
        s = raw[i]
        for m in range(1, b):
            s += raw[m * k + i]
        out[i] = s * inv


@njit(cache=True, fastmath=FASTMATH)
def top_k(returns, n, idx):
    """Write the indices of the n best returns to idx[:n], best first (earlier index first on
    ties), by insertion into the sorted prefix: O(K n) at worst, O(K + n^2 log K) typically."""
    size = 0
    for i in range(returns.shape[0]):
        v = returns[i]
        if size == n and not v > returns[idx[n - 1]]:
            continue
        j = size if size < n else n - 1
        while j > 0 and v > returns[idx[j - 1]]:
            idx[j] = idx[j - 1]
            j -= 1
        idx[j] = i
        if size < n:
            size += 1


@njit(cache=True, fastmath=FASTMATH)
def elite_update(cand, idx, n, mean, std, alpha, blend_variance):
    """Moment update from the elites cand[idx[:n]]: mean = alpha mean + (1 - alpha) elite mean;
    std = sqrt(alpha std^2 + (1 - alpha) elite var) if blend_variance (CEM) else
    alpha std + (1 - alpha) elite std (iCEM). Population statistics, accumulated in float64."""
    for t in range(mean.shape[0]):
        for a in range(mean.shape[1]):
            s = 0.0
            for e in range(n):
                s += cand[idx[e], t, a]
            mu = s / n
            q = 0.0
            for e in range(n):
                d = cand[idx[e], t, a] - mu
                q += d * d
            var = q / n
            sd = std[t, a]
            if blend_variance:
                sd = np.sqrt(alpha * sd * sd + (1.0 - alpha) * var)
            else:
                sd = alpha * sd + (1.0 - alpha) * np.sqrt(var)
            mean[t, a] = alpha * mean[t, a] + (1.0 - alpha) * mu
            std[t, a] = sd


@njit(cache=True, fastmath=FASTMATH)
def mppi_update(cand, returns, temperature, weights, mean):
    """mean = sum_k w_k cand[k] with w_k ∝ exp((R_k - max R) / temperature) (-inf scores get
    weight 0). Returns False, leaving mean alone, if every return is -inf."""
    top = _NEG_INF
    for k in range(returns.shape[0]):
        top = max(top, returns[k])
    if top == _NEG_INF:
        return False
    total = 0.0
    for k in range(returns.shape[0]):
        w = np.exp((returns[k] - top) / temperature)
        weights[k] = w
        total += w
    for t in range(mean.shape[0]):
        for a in range(mean.shape[1]):
            s = 0.0
            for k in range(returns.shape[0]):
                s += weights[k] * cand[k, t, a]
            mean[t, a] = s / total
    return True


@njit(cache=True, fastmath=FASTMATH)
def take_row(src, i, dst):
    """dst[:] = src[i] for a (K, H, A) src."""
    for t in range(dst.shape[0]):
        for a in range(dst.shape[1]):
            dst[t, a] = src[i, t, a]


@njit(cache=True, fastmath=FASTMATH)
def put_row(dst, i, src):
    """dst[i] = src for a (K, H, A) dst."""
    for t in range(src.shape[0]):
        for a in range(src.shape[1]):
            dst[i, t, a] = src[t, a]


@njit(cache=True, fastmath=FASTMATH)
def gather_rows(src, idx, n, dst, start):
    """dst[start + j] = src[idx[j]] for j < n."""
    for j in range(n):
        for t in range(src.shape[1]):
            for a in range(src.shape[2]):
                dst[start + j, t, a] = src[idx[j], t, a]


@njit(cache=True, fastmath=FASTMATH)
def finish_plan(solution, low, high, out):
    """Clip the (H, A) solution to the bounds in place and copy it to `out` ((H, A) or the
    first action, (A,))."""
    for t in range(solution.shape[0]):
        for a in range(solution.shape[1]):
            solution[t, a] = min(max(solution[t, a], low[a]), high[a])
    if out.ndim == 1:
        for a in range(out.shape[0]):
            out[a] = solution[0, a]
    else:
        for t in range(out.shape[0]):
            for a in range(out.shape[1]):
                out[t, a] = solution[t, a]


@njit(cache=True, fastmath=FASTMATH)
def shift_rows(src, dst, n, fill):
    """Warm start: dst[j, :-1] = src[j, 1:], dst[j, -1] = fill for j < n ((N, H, A) arrays;
    src may be dst)."""
    h = src.shape[1]
    for j in range(n):
        for t in range(h - 1):
            for a in range(src.shape[2]):
                dst[j, t, a] = src[j, t + 1, a]
        for a in range(src.shape[2]):
            dst[j, h - 1, a] = fill[a]


@njit(cache=True, fastmath=FASTMATH)
def ts1_sources(u, per_member, sources, perm):
    """TS1's member draws: for each candidate k and step t, a uniform permutation of its P
    particles (Fisher-Yates on the uniforms u[k, t]) moves particle perm[p] into particle p's
    slot, so every particle sits with a uniformly drawn member at every step while each member
    keeps P / B of them. sources (K P, H) in slot order (kernels.rollout.slot_of); perm (P,)
    is scratch."""
    k_all, horizon, n_p = u.shape
    for k in range(k_all):
        for t in range(horizon):
            for p in range(n_p):
                perm[p] = p
            for i in range(n_p - 1, 0, -1):
                j = min(np.int64(u[k, t, i] * (i + 1)), i)
                perm[i], perm[j] = perm[j], perm[i]
            for p in range(n_p):
                q = perm[p]
                dst = (p // per_member) * k_all * per_member + k * per_member + p % per_member
                src = (q // per_member) * k_all * per_member + k * per_member + q % per_member
                sources[dst, t] = src


@njit(cache=True, fastmath=FASTMATH)
def particle_scores(slot_returns, n_cand, per_member, n_members, risk, out):
    """out[k] = mean - risk * std of candidate k's particle returns (slot order, see
    ts1_sources); -inf if any particle diverged."""
    n_p = per_member * n_members
    for k in range(n_cand):
        total = 0.0
        sq = 0.0
        bad = False
        for m in range(n_members):
            base = m * n_cand * per_member + k * per_member
            for j in range(per_member):
                v = np.float64(slot_returns[base + j])
                if not np.isfinite(v):
                    bad = True
                total += v
                sq += v * v
        if bad:
            out[k] = _NEG_INF
            continue
        mean = total / n_p
        score = mean
        if risk > 0:
            score -= risk * np.sqrt(max(sq / n_p - mean * mean, 0.0))
        out[k] = np.float32(score)


# --- beam search (planning.planners.BeamSearch) ---------------------------------------------
@njit(cache=True, fastmath=FASTMATH)
def beam_root(obs, beam_states, beam_live, beam_earned, beam_ret):
    """One beam at the observation: every row of beam 0 (B, 1, R O) holds obs, alive (B, 1, R),
    with nothing earned (beam_earned (B, 1, R), or R = 0: the scorer keeps no earnings)."""
    n_obs = obs.shape[0]
    for m in range(beam_states.shape[0]):
        for x in range(beam_states.shape[2]):
            beam_states[m, 0, x] = obs[x % n_obs]
        for j in range(beam_live.shape[2]):
            beam_live[m, 0, j] = True
        for j in range(beam_earned.shape[2]):
            beam_earned[m, 0, j] = _F0
    beam_ret[0] = _F0


@njit(cache=True, fastmath=FASTMATH)
def beam_parent(c, n_parents, k):
    """The parent of child c when k children share n_parents as evenly as possible."""
    return c * n_parents // k


@njit(cache=True, fastmath=FASTMATH)
def _copy_row(src, i, dst, j):
    """dst[:, j] = src[:, i] for (B, rows, X) arrays."""
    for b in range(src.shape[0]):
        for x in range(src.shape[2]):
            dst[b, j, x] = src[b, i, x]


@njit(cache=True, fastmath=FASTMATH)
def beam_children(beam_states, beam_live, beam_earned, n_parents, states, live, earned,
                  actions, nominal):
    """The k = actions.shape[0] children of n_parents beams (child c's parent: beam_parent):
    each starts from its parent's states, alive flags and earnings (rows (B, ., X) of any X);
    the first child of each parent takes the nominal action (A,) instead of its sampled one."""
    k = actions.shape[0]
    for c in range(k):
        p = beam_parent(c, n_parents, k)
        _copy_row(beam_states, p, states, c)
        _copy_row(beam_live, p, live, c)
        _copy_row(beam_earned, p, earned, c)
        if c == 0 or beam_parent(c - 1, n_parents, k) != p:
            for a in range(actions.shape[2]):
                actions[c, 0, a] = nominal[a]


@njit(cache=True, fastmath=FASTMATH)
def beam_values(parent_ret, n_parents, step_ret, child_ret, value):
    """child_ret[c] = its parent's return + step_ret[c]; value starts as child_ret."""
    k = step_ret.shape[0]
    for c in range(k):
        v = parent_ret[beam_parent(c, n_parents, k)] + step_ret[c]
        child_ret[c] = v
        value[c] = v


@njit(cache=True, fastmath=FASTMATH)
def add_returns(value, ret):
    """value += ret (a -inf in either stays -inf)."""
    for c in range(value.shape[0]):
        value[c] = value[c] + ret[c]


@njit(cache=True, fastmath=FASTMATH)
def tile_rows(src, start, dst):
    """dst[k] = src[start:start + t] for every k of a (K, t, A) dst."""
    for k in range(dst.shape[0]):
        for t in range(dst.shape[1]):
            for a in range(dst.shape[2]):
                dst[k, t, a] = src[start + t, a]


@njit(cache=True, fastmath=FASTMATH)
def beam_select(idx, n, n_parents, depth, actions, states, live, earned, child_ret, prefix,
                new_prefix, beam_states, beam_live, beam_earned, beam_ret):
    """Beam j becomes child idx[j] (j < n): its parent's action prefix up to `depth` and its own
    action at `depth` in new_prefix[j], its states, alive flags, earnings and return."""
    k = actions.shape[0]
    for j in range(n):
        c = idx[j]
        p = beam_parent(c, n_parents, k)
        for t in range(depth):
            for a in range(prefix.shape[2]):
                new_prefix[j, t, a] = prefix[p, t, a]
        for a in range(prefix.shape[2]):
            new_prefix[j, depth, a] = actions[c, 0, a]
        _copy_row(states, c, beam_states, j)
        _copy_row(live, c, beam_live, j)
        _copy_row(earned, c, beam_earned, j)
        beam_ret[j] = child_ret[c]


@njit(cache=True, fastmath=FASTMATH)
def finish_prefix(prefix, j, depth, nominal, out):
    """out = prefix[j, :depth] followed by nominal[depth:] ((H, A) arrays)."""
    for t in range(out.shape[0]):
        for a in range(out.shape[1]):
            out[t, a] = prefix[j, t, a] if t < depth else nominal[t, a]
