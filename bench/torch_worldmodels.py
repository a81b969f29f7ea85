"""World Models' training throughput against PyTorch: the VAE in images/s, M in sequence-steps/s.

PyTorch is never a dependency of fastmbrl. This script runs in two interpreters: the one with
fastmbrl (`fastmbrl bench vae --json`, `fastmbrl bench mdnrnn --json`) and a scratch one with
PyTorch (this file with `--side torch`, which imports only torch and numpy). It alternates the
two sides in fresh processes, `--rounds` times each, and prints the medians and their ratio:

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 numpy
    python bench/torch_worldmodels.py --torch-python /tmp/tv/bin/python [--threads 2] [--json]

The PyTorch twins are the same networks as fastmbrl's defaults (bench vae's "paper" config and
bench mdnrnn's CarRacing sizes), the same batch, loss and Adam, timed the same way (median of
per-step times after a warm-up step, uint8 frames converted inside the VAE step).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time


# -- the PyTorch side (runs in the scratch interpreter) ------------------------------------------
def _torch_vae(torch, nn, batch: int, steps: int) -> float:
    class VAE(nn.Module):
        def __init__(self, z=32):
            super().__init__()
            self.z = z
            self.enc = nn.Sequential(
                nn.Conv2d(3, 32, 4, 2), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                nn.Conv2d(64, 128, 4, 2), nn.ReLU(), nn.Conv2d(128, 256, 4, 2), nn.ReLU())
            self.head = nn.Linear(1024, 2 * z)
            self.dense = nn.Linear(z, 1024)
            self.dec = nn.Sequential(
                nn.ConvTranspose2d(1024, 128, 5, 2), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 5, 2), nn.ReLU(),
                nn.ConvTranspose2d(64, 32, 6, 2), nn.ReLU(),
                nn.ConvTranspose2d(32, 3, 6, 2), nn.Sigmoid())

        def forward(self, x):
            mu, logvar = self.head(self.enc(x).flatten(1)).chunk(2, dim=1)
            zz = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.dec(self.dense(zz).view(-1, 1024, 1, 1)), mu, logvar

    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (steps + 1, batch, 3, 64, 64), dtype=torch.uint8,
                           generator=gen)
    floor = 0.5 * 32  # the KL tolerance 0.5 times z

    def step(b):
        x = frames[b].float() / 255
        recon, mu, logvar = model(x)
        r = ((recon - x) ** 2).sum(dim=(1, 2, 3))
        kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(dim=1)
        loss = (r + kl.clamp(min=floor)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / _median(step, steps)


def _torch_mdnrnn(torch, nn, batch: int, seq: int, steps: int, z_dim=32, act_dim=3,
                  hidden=256, n_mix=5) -> float:
    lstm = nn.LSTM(z_dim + act_dim, hidden, batch_first=True)
    zk = z_dim * n_mix
    out = nn.Linear(hidden, 3 * zk + 2)
    params = list(lstm.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch, seq + 1, z_dim, generator=gen)
    a = torch.rand(batch, seq, act_dim, generator=gen) * 2 - 1
    r = torch.randn(batch, seq, generator=gen)
    d = torch.zeros(batch, seq)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def step(_):
        h, _state = lstm(torch.cat([z[:, :-1], a], dim=2))
        y = out(h).reshape(-1, 3 * zk + 2)
        logits, mu, log_s = (y[:, k * zk:(k + 1) * zk].reshape(-1, z_dim, n_mix)
                             for k in range(3))
        target = z[:, 1:].reshape(-1, z_dim, 1)
        log_pi = torch.log_softmax(logits, dim=-1)
        u = (target - mu) * torch.exp(-log_s)
        nll = -torch.logsumexp(log_pi - log_s - half_log_2pi - 0.5 * u * u, dim=-1).mean()
        loss = (nll + ((y[:, 3 * zk] - r.reshape(-1)) ** 2).mean()
                + nn.functional.binary_cross_entropy_with_logits(y[:, 3 * zk + 1],
                                                                 d.reshape(-1)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, 1.0)
        opt.step()

    return batch * seq / _median(step, steps)


def _median(step, steps: int) -> float:
    step(steps)  # warm-up
    times = []
    for b in range(steps):
        t0 = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_side(threads: int, steps: int) -> dict:
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return {"side": "torch", "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads,
            "vae_images_per_s": _torch_vae(torch, nn, 100, steps),
            "mdnrnn_seq_steps_per_s": _torch_mdnrnn(torch, nn, 100, 100, steps)}


# -- the driver (runs in the interpreter with fastmbrl) -----------------------------------------
def _run_json(cmd, env) -> dict:
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(torch_python: str, threads: int, rounds: int, steps: int) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    fm = [sys.executable, "-m", "fastmbrl", "bench"]
    ours_vae, ours_m, theirs, info = [], [], [], {}
    for _ in range(rounds):
        row = _run_json(fm + ["vae", "--json", "--no-reference", "--steps", str(steps)], env)
        ours_vae.append(row["images_per_s"])
        info.update(cpu=row.get("cpu"), blas=row.get("blas"))
        row = _run_json(fm + ["mdnrnn", "--json", "--no-reference", "--repeats", str(steps)],
                        env)
        ours_m.append(row["seq_steps_per_s"])
        theirs.append(_run_json([torch_python, __file__, "--side", "torch", "--threads",
                                 str(threads), "--steps", str(steps)], env))
    t_vae = statistics.median(r["vae_images_per_s"] for r in theirs)
    t_m = statistics.median(r["mdnrnn_seq_steps_per_s"] for r in theirs)
    f_vae, f_m = statistics.median(ours_vae), statistics.median(ours_m)
    return {"threads": threads, "rounds": rounds, "steps": steps, **info,
            "torch": theirs[0]["torch"], "torch_cpu_capability": theirs[0]["cpu_capability"],
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
            "vae_images_per_s": f_vae, "torch_vae_images_per_s": t_vae,
            "vae_ratio": f_vae / t_vae,
            "mdnrnn_seq_steps_per_s": f_m, "torch_mdnrnn_seq_steps_per_s": t_m,
            "mdnrnn_ratio": f_m / t_m,
            "all": {"vae": ours_vae, "mdnrnn": ours_m, "torch": theirs}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", choices=["torch"], help="(internal) run the PyTorch side")
    p.add_argument("--torch-python", help="the scratch interpreter that has PyTorch")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per side and round")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.side == "torch":
        print(json.dumps(torch_side(args.threads, args.steps)))
        return 0
    if not args.torch_python:
        p.error("--torch-python is required: the interpreter of a scratch venv with PyTorch")
    row = compare(args.torch_python, args.threads, args.rounds, args.steps)
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['cpu']}, {args.threads} threads, medians of {args.rounds} alternating "
              f"rounds; PyTorch {row['torch']} ({row['torch_cpu_capability']}), NumPy BLAS "
              f"{row['blas']}")
        print(f"VAE  {row['vae_images_per_s']:9.1f} images/s   PyTorch "
              f"{row['torch_vae_images_per_s']:9.1f}   x{row['vae_ratio']:.2f}")
        print(f"M    {row['mdnrnn_seq_steps_per_s']:9.0f} seq-steps/s PyTorch "
              f"{row['torch_mdnrnn_seq_steps_per_s']:9.0f}   x{row['mdnrnn_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
