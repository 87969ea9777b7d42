"""bench/gpu_check.py: its CPU dry run exercises every path that is not CUDA-specific on a tiny zoo, and the script
fails loudly (nonzero exit, the failed check named) instead of skipping quietly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_check
    return gpu_check


def test_the_cpu_dry_run_passes_every_check_and_writes_the_section(gpu_check, tmp_path, capsys):
    # in this process (the script's main; its 2-process stage still launches its own processes): the dry run sets
    # one torch thread, put back after
    threads = torch.get_num_threads()
    out = tmp_path / "gpu-check.md"
    try:
        status = gpu_check.main(["--cpu-dry-run", "--store", str(tmp_path / "store"), "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert status == 0, capsys.readouterr().err[-3000:]
    text = out.read_text()
    assert text.startswith("## GPU check: CPU dry run") and "Verdict: every check passed." in text
    for row in ("alsatian, shift and base exact", "host tier (device_capacity=1KB) | ok", "prefetch=true | ok",
                "16-mixed refused on the CPU | ok", "cpu bf16-mixed: alsatian, shift and base exact | ok",
                "paper-scale cell (tiny, 4 models, 32px): exact | ok", "2-process search (cpu) against one process | ok"):
        assert row in text, row


def test_without_cuda_and_without_the_dry_run_it_says_so_and_exits_2(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, on any runner
    assert gpu_check.main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_a_failed_check_or_a_crashed_stage_exits_1_and_names_it(gpu_check, monkeypatch, tmp_path, capsys):
    def fails(ctx, report):
        report.check("features: CUDA against CPU", False, "largest relative error 1.0e-01")
        return {"alsatian": {}}

    monkeypatch.setattr(gpu_check, "setup", lambda args: gpu_check.Context("cpu", args.store, gpu_check.TINY, 4,
                                                                             None, dry_run=True))
    monkeypatch.setattr(gpu_check, "device_vs_cpu", fails)
    for step in ("tiers_and_prefetch", "paper_cell", "distributed"):
        monkeypatch.setattr(gpu_check, step, lambda *a: None)

    def crashes(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(gpu_check, "precisions", crashes)
    out = tmp_path / "x.md"
    assert gpu_check.main(["--cpu-dry-run", "--out", str(out)]) == 1
    assert "GPU CHECK FAILED: features: CUDA against CPU, precisions: ran" in capsys.readouterr().err
    text = out.read_text()
    assert "| features: CUDA against CPU | FAILED |" in text
    assert "| precisions: ran | FAILED | RuntimeError: CUDA error: an illegal memory access" in text
