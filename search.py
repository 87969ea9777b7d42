"""Model search entry point: ``python search.py dataset=cars models=resnet152_zoo search=alsatian``.

Composes the ``dataset``, ``models`` and ``search`` config groups (conf/), builds the zoo into the block store once,
ranks its models with successive halving, prints the ranking and writes ``results.json`` to the Hydra run folder.
Any failure ends in one ``error:`` line (alsatian_pl/boundary.py).
"""

from alsatian_pl import boundary

boundary.install()  # first: from here on Ctrl-C, SIGTERM and every error end in one line

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from alsatian_pl.app import print_report, run_search  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
@boundary.user_errors
def main(cfg: DictConfig) -> float:
    out = HydraConfig.get().runtime.output_dir
    result, report = run_search(cfg, out)
    print_report(report)
    print(f"results: {out}/results.json")
    return report["timings_s"]["total"]


if __name__ == "__main__":
    boundary.main(main)
