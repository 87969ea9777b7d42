"""Model search entry point: ``python search.py dataset=cars models=resnet152_zoo search=alsatian``.

Composes the ``dataset``, ``models`` and ``search`` config groups (conf/), builds the zoo into the block store once,
ranks its models with successive halving, prints the ranking and writes ``results.json``, ``ranking.png``,
``time.png`` and the logger's files (``logger=csv``: ``logs/``) to the Hydra run folder. ``search.devices=2`` runs
it on two processes (Lightning Fabric); rank 0 reports.
Any failure ends in one ``error:`` line (alsatian_pl/app/boundary.py).
"""

from alsatian_pl.app import boundary

boundary.install()  # first: from here on Ctrl-C, SIGTERM and every error end in one line

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
@boundary.user_errors
def main(cfg: DictConfig) -> float:
    from alsatian_pl.app import print_report, run_search  # the engine (torch, Lightning): not for --help or --cfg

    out = HydraConfig.get().runtime.output_dir
    result, report = run_search(cfg, out)
    if report is None:  # a rank other than 0 of a distributed search (search.devices): rank 0 reports
        return 0.0
    print_report(report, results=f"{out}/results.json")
    print(f"results: {out}/results.json (plots: ranking.png, time.png)")
    return report["timings_s"]["total"]


if __name__ == "__main__":
    boundary.main(main)
