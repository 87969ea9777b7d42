"""What a search run leaves next to results.json: the logger group's files (CSV by default), the ranking and time
plots; the printed ranking table with short names and a pointer to the rows it leaves out."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from rich.console import Console

from alsatian_pl.app import make_logger, print_report, run_search
from alsatian_pl.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = ["models=store", "dataset.num_items=300", "dataset.image_size=32", "++search.scorer.kwargs.epochs=5",
         "search.progress=false", "search.checkpoint_dir=null"]
PNG = b"\x89PNG\r\n\x1a\n"


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=[*SMALL, *overrides])


@pytest.fixture(scope="module")
def searched(zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result, report = run_search(_compose(f"store.root={zoo.store.root}"), out)
    return out, result, report


def test_the_csv_logger_writes_each_rounds_metrics_into_the_run_folder(searched):
    out, result, report = searched
    files = list((out / "logs").glob("version_*/metrics.csv"))
    assert len(files) == 1
    rows = list(csv.DictReader(files[0].open()))
    assert len(rows) == len(report["rounds"]) and [float(r["round/models"]) for r in rows] == [6, 3, 2][:len(rows)]
    assert (files[0].parent / "hparams.yaml").is_file()


def test_ranking_and_time_plots_lie_next_to_results_json(searched):
    out, _, _ = searched
    for name in ("results.json", "ranking.png", "time.png"):
        assert (out / name).is_file(), name
    assert all((out / n).read_bytes()[:8] == PNG for n in ("ranking.png", "time.png"))


def test_the_ranking_table_shows_short_names_and_says_where_the_other_rows_are(searched):
    out, _, report = searched
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=80), top=4)
    text = buffer.getvalue()
    models = [r["model"] for r in report["ranking"]]
    assert models[0].rpartition("-")[2] in text and models[0] not in text  # the distinguishing part, not the id
    assert f"2 more rows in {out / 'results.json'}" in text.replace("\n", "")
    whole = io.StringIO()
    print_report(report, Console(file=whole, width=80), top=10)
    assert "more rows" not in whole.getvalue()


def test_no_logger_and_a_missing_logger_package(zoo, tmp_path):
    assert make_logger(None, tmp_path) is None
    assert make_logger(_compose(f"store.root={zoo.store.root}").logger, None) is None  # no run folder: no logs
    for group, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        if importlib.util.find_spec(package) is not None:
            continue
        cfg = _compose(f"store.root={zoo.store.root}", f"logger={group}")
        with pytest.raises(ConfigError, match=f"needs a package that is not installed.*pip install {package}"):
            run_search(cfg, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="logger.flush_every is not an option of CSVLogger"):
        make_logger({"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": None, "flush_every": 3},
                    tmp_path)
