"""The linear probe's achieved FLOP rate against plain GEMMs of the same shapes, and the old (per-step primal) fit
against the current one: seconds, GFLOP/s and score drift, A/B alternated, medians of ``--repeat`` runs.

    python bench/bench_probe.py [--models 24] [--dims 512,1280] [--items 150,500,2000] [--classes 10]
                                [--epochs 100] [--batch 64] [--repeat 3] [--threads 1] [--drift]

FLOPs are counted as the primal recipe's: forward and weight-gradient GEMMs, 2·M·B·D·C each, per step (so the
rate of a fit that does less arithmetic reads as "effective" GFLOP/s). Ceilings: ``bmm`` = the two per-step
``torch.bmm`` calls in a tight loop; ``gemm`` = one bmm per epoch with all N items as the batch axis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from alsatian_pl.score import LinearProbes, LinearScorer, dual_is_cheaper  # noqa: E402
from bench_scorers import round_features  # noqa: E402


@torch.no_grad()
def old_fit(self, x, y, *, epochs, batch_size, generator):
    """The fit before issue #18 part 3 (per step: index_select, baddbmm forward, softmax, baddbmm_ update)."""
    n, lr, momentum = x.shape[0], self.lr, self.momentum
    sampler = RandomSampler(range(n), generator=generator)
    w, b = self.weight, self.bias.unsqueeze(-1)
    onehot = F.one_hot(y, w.shape[1]).T.to(w.dtype)
    buf = x.new_empty((min(batch_size, n), *x.shape[1:]))
    vel_w = vel_b = None
    for _ in range(epochs):
        order = torch.as_tensor(list(sampler)).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = torch.index_select(x, 0, idx, out=buf[:len(idx)]).transpose(0, 1)
            grad = self.forward(xb).softmax(1).sub_(onehot[:, idx]).div_(len(idx))
            if momentum == 0:
                b.sub_(grad.sum(2, keepdim=True), alpha=lr)
                w.baddbmm_(grad, xb, alpha=-lr)
                continue
            gw, gb = torch.bmm(grad, xb), grad.sum(2, keepdim=True)
            vel_w = gw if vel_w is None else vel_w.mul_(momentum).add_(gw)
            vel_b = gb if vel_b is None else vel_b.mul_(momentum).add_(gb)
            w.sub_(vel_w, alpha=lr)
            b.sub_(vel_b, alpha=lr)


def probe_flops(m: int, n: int, d: int, c: int, epochs: int, batch: int) -> float:
    """Forward + weight-gradient GEMM FLOPs of the primal recipe (the partial last batch counted by its size)."""
    return 2 * 2 * m * n * d * c * epochs


def time_fit(fit, m, n, d, c, epochs, batch) -> float:
    """Seconds of one fit of M fresh heads on random item-major features [N, M, D]."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, m, d, generator=g), torch.randint(0, c, (n,), generator=g)
    probes = LinearProbes(m, d, c)
    t0 = time.perf_counter()
    fit(probes, x, y, epochs=epochs, batch_size=batch, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t0


def time_bmm(m, n, d, c, epochs, batch) -> float:
    """Seconds of the per-step forward and weight-gradient bmm calls alone, epochs × ceil(N/B) times."""
    w, x, g = torch.randn(m, c, d), torch.randn(m, batch, d), torch.randn(m, c, batch)
    out_l, out_w = torch.empty(m, c, batch), torch.empty(m, c, d)
    steps = epochs * -(-n // batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        torch.bmm(w, x.transpose(1, 2), out=out_l)
        torch.bmm(g, x, out=out_w)
    return (time.perf_counter() - t0) * n / (steps // epochs * batch)  # scale a partial last batch to N items


def time_gemm(m, n, d, c, epochs, batch) -> float:
    """Seconds of the same FLOPs as two bmm calls per epoch over all N items (the large-GEMM ceiling)."""
    w, x, g = torch.randn(m, c, d), torch.randn(m, n, d), torch.randn(m, c, n)
    out_l, out_w = torch.empty(m, c, n), torch.empty(m, c, d)
    t0 = time.perf_counter()
    for _ in range(epochs):
        torch.bmm(w, x.transpose(1, 2), out=out_l)
        torch.bmm(g, x, out=out_w)
    return time.perf_counter() - t0


class OldFitProbes(LinearProbes):
    fit = old_fit


class OldFitScorer(LinearScorer):
    """The linear scorer with the old fit (its public ``probes_class``; nothing of the package is patched)."""

    probes_class = OldFitProbes


def drift(m, n, d, c, epochs, batch) -> tuple[float, float]:
    """Max |Δ| of accuracy and test loss between the old fit and the current one through ``LinearScorer.score``."""
    train, y, test, yt = round_features(m, n, max(200, n // 5), d, c, "cpu")
    new = LinearScorer(epochs=epochs, batch_size=batch).score(train, y, test, yt, c)
    old = OldFitScorer(epochs=epochs, batch_size=batch).score(train, y, test, yt, c)
    return (max(abs(old[k].score - new[k].score) for k in old), max(abs(old[k].test_loss - new[k].test_loss)
                                                                     for k in old))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=24)
    p.add_argument("--dims", default="512,1280")
    p.add_argument("--items", default="150,500,2000")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    p.add_argument("--drift", action="store_true", help="also score a round with old and new fit, max |Δ|")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, M={a.models} C={a.classes} "
          f"B={a.batch} epochs={a.epochs}; s = median of {a.repeat}, GF/s counted as the primal recipe's\n")
    print("| D | N | new form | old s | new s | speed-up | old GF/s | new GF/s | bmm GF/s | gemm GF/s "
          "| drift acc | drift loss |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in map(int, a.dims.split(",")):
        for n in map(int, a.items.split(",")):
            shape = (a.models, n, d, a.classes, a.epochs, a.batch)
            runs = {"old": [], "new": [], "bmm": [], "gemm": []}
            for r in range(a.repeat):  # A/B alternated
                pair = [("old", old_fit), ("new", LinearProbes.fit)]
                for name, fit in (pair if r % 2 == 0 else pair[::-1]):
                    runs[name].append(time_fit(fit, *shape))
                runs["bmm"].append(time_bmm(*shape))
                runs["gemm"].append(time_gemm(*shape))
            s = {k: statistics.median(v) for k, v in runs.items()}
            gf = {k: probe_flops(*shape) / v / 1e9 for k, v in s.items()}
            da, dl = drift(*shape) if a.drift else (float("nan"), float("nan"))
            form = "dual" if dual_is_cheaper(n, d, a.classes, a.epochs) else "primal"
            print(f"| {d} | {n} | {form} | {s['old']:.3f} | {s['new']:.3f} | {s['old'] / s['new']:.2f}x | "
                  f"{gf['old']:.1f} | {gf['new']:.1f} | {gf['bmm']:.1f} | {gf['gemm']:.1f} | {da:.2g} | {dl:.2g} |",
                  flush=True)


if __name__ == "__main__":
    main()
