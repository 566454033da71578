"""The serving benchmarks that scripts/gpu/run.sh runs on GPUs, as a short dry run on the CPU
(tiny model, rank processes, Gloo): each finishes, loses no request and writes what its table
says. A broken script would otherwise first show on a GPU machine, where time is scarce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(os.environ.get("TIDAL_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BINARY = Path(os.environ.get("TIDAL_BINARY", SOURCE / "build" / "tidal"))
CONFIG = SOURCE / "tests" / "fixtures" / "tiny-qwen3-moe" / "config.json"


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SOURCE / "bench" / script), "--binary",
                           str(BINARY), "--device", "cpu", "--config", str(CONFIG), *args],
                          capture_output=True, text=True, timeout=240)


def test_elastic_bench_scales_without_losing_requests(tmp_path: Path):
    out = tmp_path / "elastic.json"
    result = run_bench("elastic_bench.py", "--start", "2", "--sizes", "3,2-0", "--expert-slots",
                       "4", "--clients", "8", "--max-tokens", "32", "--settle", "0.5", "--out",
                       str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [row["transition"] for row in report["transitions"]] == ["2->3", "3->2 (-0)"]
    assert report["num_request_failures"] == 0 and report["requests_finished"] > 0
    assert all(row["total_s"] > 0 for row in report["transitions"])


def test_failure_bench_recovers_without_losing_requests(tmp_path: Path):
    # 2 ranks x 4 slots for 8 experts: one survivor cannot hold them, so a replacement joins.
    out = tmp_path / "failure.json"
    result = run_bench("failure_bench.py", "--ranks", "2", "--expert-slots", "4", "--clients", "8",
                       "--max-tokens", "32", "--settle", "0.5", "--out", str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    failure = report["failure"]
    assert report["num_request_failures"] == 0 and report["requests_finished"] > 0
    assert failure["replacement_in_recovery"] and failure["ranks_after"] == 2, failure
    assert failure["experts_reloaded"] > 0 and 0 < failure["recovery_s"] < 30, failure
    assert 0 <= failure["detection_s"] < 5, failure


def test_eplb_bench_balances_skewed_routing(tmp_path: Path):
    out = tmp_path / "eplb.json"
    # Experts 2 and 3 start together on rank 0 with no replica (the spares copy experts 0, 1).
    result = run_bench("eplb_bench.py", "--ranks", "2", "--expert-slots", "5", "--bias",
                       "2:6,3:6", "--eplb-interval", "300", "--eplb-window", "150", "--clients",
                       "8", "--max-tokens", "32", "--settle", "0.3", "--measure", "1", "--out",
                       str(out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    first = report["first_rebalance"]
    assert first["balancedness_after"] > first["balancedness_before"]
    assert first["bytes_moved"] > 0
    assert report["phases"]["before"]["seconds"] > 0 and report["phases"]["after"]["tokens_per_s"] > 0
    # The step's phases come from the server: every step runs the model, and a group agrees.
    for phase in report["phases"].values():
        assert phase["step_phases_ms"]["forward"] > 0 and phase["step_phases_ms"]["agree"] > 0
        assert sum(phase["step_phases_ms"].values()) <= phase["step_ms"] * 1.05
    assert report["num_request_failures"] == 0
