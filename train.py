"""Search, then fine-tune: ``python train.py dataset=cars models=resnet152_zoo trainer.max_epochs=20``.

Composes the search's config groups (``dataset``, ``models``, ``search``) plus ``trainer`` and ``finetune`` (conf/),
searches the zoo (or reads ``finetune.results=path/to/results.json``), fine-tunes the winner on the same data, logs
with the trainer's logger (CSV by default) and writes ``finetuned.safetensors`` with its provenance. Any failure ends
in one ``error:`` line (alsatian_pl/app/boundary.py).
"""

from alsatian_pl.app import boundary

boundary.install()  # first: from here on Ctrl-C, SIGTERM and every error end in one line

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@boundary.user_errors
def main(cfg: DictConfig) -> float:
    from alsatian_pl.app import print_report, run_finetune  # the engine (torch, Lightning): not for --help or --cfg

    module, trainer, hand_off = run_finetune(cfg, on_search=print_report)
    acc = float(trainer.callback_metrics.get(f"val/{module.metric_key}", float("nan")))
    p = module.provenance
    metric = {"acc": "accuracy", "ap": "average precision", "r2": "R²"}[module.metric_key]
    rank = "" if p.get("search_rank") is None else f"search rank {p['search_rank']}, "
    print(f"fine-tuned {p['model']} ({rank}{module.frozen_blocks}/{len(module.backbone)} blocks frozen, "
          f"{module.task}): val {metric} {acc:.4f}")
    if p.get("confirmation"):
        c = p["confirmation"]
        tried = ", ".join(f"{r['model']} {r['val_acc']:.4f}" for r in c["candidates"])
        print(f"confirmed by {c['epochs']}-epoch fine-tunes of the search's top {len(c['candidates'])}: {tried}; "
              f"chosen: {c['winner']} (the search's winner: {c['search_winner']})")
    if cfg.finetune.get("checkpoint"):
        print(f"checkpoint: {cfg.finetune.checkpoint}")
    return acc


if __name__ == "__main__":
    boundary.main(main)
