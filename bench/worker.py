"""Run one search in a process of its own and write its result as JSON (``bench/run.py`` uses it for figure 16):
``ru_maxrss`` is a process-lifetime peak, so each cache budget gets a fresh process to measure its peak host memory
(read as VmHWM: a child's ``ru_maxrss`` starts from the RSS its parent had at fork).

    python bench/worker.py SPEC.json OUT.json

SPEC holds store_root, models, data (SearchDataModule arguments), strategy, cache_budget (bytes or null) and
settings (SearchSettings fields).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SearchSettings, ru_maxrss, rss_now, run_search, vm_hwm, write_json  # noqa: E402


def main() -> None:
    spec_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec = json.loads(spec_path.read_text())
    settings = SearchSettings(**spec["settings"])
    settings.apply_threads()
    rss_before, hwm_before = rss_now(), vm_hwm()
    try:
        result = run_search(Path(spec["store_root"]), spec["models"], spec["data"], spec["strategy"], settings,
                            cache_budget=spec["cache_budget"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which records it
        write_json(out_path, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        sys.exit(1)
    # The search resets VmHWM when it starts (where the library supports it), so vm_hwm() is then its own peak.
    result["process"] = {"rss_before_search_bytes": rss_before, "vm_hwm_before_search_bytes": hwm_before,
                         "vm_hwm_bytes": vm_hwm(), "rss_after_search_bytes": rss_now(),
                         "ru_maxrss_bytes": ru_maxrss()}
    write_json(out_path, result)


if __name__ == "__main__":
    main()
