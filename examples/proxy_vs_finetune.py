"""Does the search's proxy score predict fine-tuned accuracy?

Searches the zoo (the embedded default: EfficientNet-Lite0 variants on Fashion-MNIST), fine-tunes the top three and
the bottom three of the ranking for the same short budget (default: whole network, 2 epochs) and prints the Spearman
correlation between the search's ranking (and raw proxy score) and fine-tuned test accuracy.

    python examples/proxy_vs_finetune.py [train.yaml overrides, e.g. trainer.max_epochs=3 finetune=default]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from torchmetrics.functional import spearman_corrcoef

from alsatian_pl.app import run_search
from alsatian_pl.app import run_finetune

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULTS = {"finetune": "full", "finetune.optimizer.lr": "3e-4", "trainer.max_epochs": "2",
            "trainer.enable_progress_bar": "false", "trainer.enable_model_summary": "false",
            "finetune.checkpoint": "null", "search.progress": "false",
            "output_dir": f"outputs/proxy_vs_finetune/{time.strftime('%Y-%m-%d_%H-%M-%S')}"}


def main(argv: list[str]) -> float:
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    overrides = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in given] + argv
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    out = Path(cfg.output_dir)
    console = Console()
    _, report = run_search(cfg, out)
    ranking = report["ranking"]
    picks = [(i + 1, r) for i, r in enumerate(ranking)][:3] + [(i + 1, r) for i, r in enumerate(ranking)][-3:]
    rows = []
    for pos, row in picks:
        job = OmegaConf.merge(cfg, {"finetune": {"results": str(out / "results.json"), "model": row["model"]},
                                    "output_dir": str(out / row["model"])})
        start = time.perf_counter()
        _, trainer, _ = run_finetune(job)
        acc = float(trainer.callback_metrics["val/acc"])
        rows.append((pos, row, acc, time.perf_counter() - start))
        console.print(f"#{pos} {row['model']}: proxy {row['score']:.4f} → fine-tuned accuracy {acc:.4f}")
    table = Table(title=f"proxy score vs fine-tuned accuracy ({cfg.trainer.max_epochs} epochs, "
                        f"train_blocks={cfg.finetune.train_blocks})")
    for col in ("search rank", "model", "proxy score", "eliminated in round", "fine-tuned acc", "time (s)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for pos, row, acc, secs in rows:
        out_round = "-" if row["eliminated_in_round"] is None else str(row["eliminated_in_round"] + 1)
        table.add_row(str(pos), row["model"], f"{row['score']:.4f}", out_round, f"{acc:.4f}", f"{secs:.1f}")
    console.print(table)
    accs = torch.tensor([a for _, _, a, _ in rows])
    rho_rank = float(spearman_corrcoef(-torch.tensor([float(p) for p, *_ in rows]), accs))
    rho_score = float(spearman_corrcoef(torch.tensor([r["score"] for _, r, _, _ in rows]), accs))
    console.print(f"Spearman(search ranking, fine-tuned accuracy) = {rho_rank:.3f}; "
                  f"Spearman(proxy score, fine-tuned accuracy) = {rho_score:.3f} over {len(rows)} models")
    return rho_rank


if __name__ == "__main__":
    main(sys.argv[1:])
