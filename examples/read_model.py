"""A reference reader for fastmbrl's model.npz, with NumPy and the standard library only.

It does not import fastmbrl: it is the format of docs/formats.md written out as code, short
enough to translate into C or another language. tests/test_formats.py checks that `predict`
here agrees with fastmbrl's `DynamicsModel.predict`.

    model = load("runs/pendulum/model.npz")
    next_obs = predict(model, obs, act)      # obs (obs_dim,) or (N, obs_dim)

Run it as a script to print a model's summary:  python examples/read_model.py MODEL.npz
"""
import json
import sys

import numpy as np

KIND = "dynamics_model"
# 2 added ensembles (arrays "m0_W0", ...), 3 absolute_obs_dims, 4 probabilistic members and
# elites; all read the same way
FORMAT_VERSIONS = (1, 2, 3, 4)
#: the header fields this reader understands; another one might change what the file means
HEADER_FIELDS = {"kind", "format_version", "obs_dim", "act_dim", "hidden", "activation", "dtype",
                 "ensemble_size", "angle_obs_dims", "absolute_obs_dims", "ignore_obs_dims",
                 "seed", "probabilistic", "num_elites"}


def load(path):
    """Read model.npz into a dict of plain values and arrays.

    Keys: the header's fields (obs_dim, act_dim, hidden, activation, dtype, ensemble_size,
    angle_obs_dims, absolute_obs_dims, ignore_obs_dims, seed, kind, format_version, with the
    defaults of older files filled in), "members" (one list of (W, b) layers per ensemble
    member) and the statistics input_mean, input_scale, delta_mean, delta_std.
    """
    # An .npz is a zip archive of .npy files, one per array, stored uncompressed.
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}

    # The header: UTF-8 JSON text held as a 1-D uint8 array named "__header__".
    model = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
    if model.get("kind") != KIND or model.get("format_version") not in FORMAT_VERSIONS:
        raise ValueError(f"{path}: not a dynamics model of format version {FORMAT_VERSIONS} "
                         f"(kind {model.get('kind')!r}, version {model.get('format_version')!r})")
    unknown = sorted(set(model) - HEADER_FIELDS)
    if unknown:
        raise ValueError(f"{path}: header fields {unknown} are unknown to this reader")
    model.setdefault("ensemble_size", 1)      # absent from version 1 files
    model.setdefault("angle_obs_dims", [])    # absent from older files
    model.setdefault("absolute_obs_dims", [])  # written only when non-empty
    model.setdefault("probabilistic", False)  # version 4 only
    model.setdefault("num_elites", model["ensemble_size"])
    dtype = np.dtype(model["dtype"])          # "float32" or "float64"
    model["dtype"] = dtype

    # Weights: layer i is y = x @ W{i} + b{i}, W{i} of shape (fan_in, fan_out).
    # A single model names them W0, b0, W1, b1, ...; ensemble member m names them m{m}_W0, ...
    n_layers = len(model["hidden"]) + 1
    ensemble = model["ensemble_size"]
    prefixes = [""] if ensemble == 1 else [f"m{m}_" for m in range(ensemble)]
    model["members"] = [
        [(arrays[f"{p}W{i}"].astype(dtype), arrays[f"{p}b{i}"].astype(dtype))
         for i in range(n_layers)]
        for p in prefixes
    ]
    for name in ("input_mean", "input_scale", "delta_mean", "delta_std"):
        model[name] = arrays[name].astype(dtype)
    # The members prediction uses; "elites" is written when they are not all of them.
    model["elites"] = [int(m) for m in arrays.get("elites", range(model["num_elites"]))]

    # The shapes must chain: inputs -> hidden widths -> obs_dim outputs (a probabilistic
    # network has 2 obs_dim: the mean, then a log-variance, which prediction does not need).
    n_in = model["obs_dim"] + len(model["angle_obs_dims"]) + model["act_dim"]
    n_out = model["obs_dim"] * (2 if model["probabilistic"] else 1)
    sizes = [n_in, *model["hidden"], n_out]
    for layers in model["members"]:
        for i, (w, b) in enumerate(layers):
            if w.shape != (sizes[i], sizes[i + 1]) or b.shape != (sizes[i + 1],):
                raise ValueError(f"{path}: layer {i} has shapes {w.shape}, {b.shape}; "
                                 f"expected {(sizes[i], sizes[i + 1])}, {(sizes[i + 1],)}")
    if model["input_mean"].shape != (n_in,) or model["delta_mean"].shape != (model["obs_dim"],):
        raise ValueError(f"{path}: statistics of the wrong length")
    return model


def activation(name, z):
    """The hidden layers' activation, element-wise."""
    if name == "relu":
        return np.where(z <= 0, z.dtype.type(0), z)   # max(z, 0); NaN stays NaN
    if name == "tanh":
        return np.tanh(z)
    if name in ("silu", "swish"):
        # z * sigmoid(z), written as fastmbrl computes it: sigmoid(z) = (1 + tanh(z/2)) / 2
        half = z.dtype.type(0.5)
        return z * (half + half * np.tanh(z * half))
    raise ValueError(f"unknown activation {name!r}")


def network(layers, act_name, x):
    """One member's MLP: every layer but the last is followed by the activation.

    In C, for one input row x (fan_in) and W stored row-major (fan_in rows of fan_out):
        y[j] = b[j] + sum_i x[i] * W[i * fan_out + j]
    """
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = activation(act_name, h)
    return h


def predict(model, obs, act):
    """The next observation: obs (obs_dim,) and act (act_dim,), or batches (N, ...) of each.

    Computed in the file's dtype, as fastmbrl's DynamicsModel.predict does.
    """
    dt = model["dtype"]
    obs = np.asarray(obs, dt)
    act = np.asarray(act, dt)
    single = obs.ndim == 1
    obs, act = obs.reshape(-1, model["obs_dim"]), act.reshape(-1, model["act_dim"])

    # 1. Features: the observation with each angle entry replaced by its sine, then the
    #    cosines of the angle entries (in increasing index order), then the action.
    angles = list(model["angle_obs_dims"])
    obs_part = obs.copy()
    obs_part[:, angles] = np.sin(obs[:, angles])
    x = np.concatenate([obs_part, np.cos(obs[:, angles]), act], axis=1)

    # 2. Normalise. An ignored observation entry has input_scale 0, so it never matters.
    x = (x - model["input_mean"]) * model["input_scale"]

    # 3. The networks; an ensemble averages its elite members' outputs (their means).
    o = model["obs_dim"]
    elites = model["elites"]
    y = network(model["members"][elites[0]], model["activation"], x)[:, :o]
    for m in elites[1:]:
        y = y + network(model["members"][m], model["activation"], x)[:, :o]
    if len(elites) > 1:
        y = y / dt.type(len(elites))

    # 4. De-normalise into a change of the observation, except for the absolute entries,
    #    where it is the next value itself.
    out = y * model["delta_std"] + model["delta_mean"]
    delta = np.ones(model["obs_dim"], bool)
    delta[list(model["absolute_obs_dims"])] = False
    out[:, delta] += obs[:, delta]
    return out[0] if single else out


def summary(model):
    """A few lines describing `model`."""
    n_params = sum(w.size + b.size for layers in model["members"] for w, b in layers)
    lines = [
        f"fastmbrl dynamics model, format version {model['format_version']}, {model['dtype'].name}",
        f"  obs_dim {model['obs_dim']}, act_dim {model['act_dim']}, hidden {model['hidden']}, "
        f"activation {model['activation']}",
        f"  ensemble of {model['ensemble_size']} ({n_params} parameters in all)",
        f"  angle entries {model['angle_obs_dims']}, absolute entries "
        f"{model['absolute_obs_dims']}, ignored entries {model['ignore_obs_dims']}",
    ]
    obs = np.zeros(model["obs_dim"])
    act = np.zeros(model["act_dim"])
    nxt = np.array2string(predict(model, obs, act), precision=4)
    lines.append(f"  predict(zeros, zeros) = {nxt}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python read_model.py MODEL.npz")
    print(summary(load(sys.argv[1])))
