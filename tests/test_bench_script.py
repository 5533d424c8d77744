"""The benchmark script runs end to end on a tiny model and emits a row for every method (not a timing test)."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_methods.py"


def test_bench_methods_emits_every_method(tmp_path):
    out_file = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, str(SCRIPT), "--in-process", "--hidden", "48", "--layers", "1",
                          "--vocab", "100", "--batch", "2", "--seq-len", "8", "--steps", "1", "--warmup", "1",
                          "--out", str(out_file)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out_file.read_text())["rows"]
    assert {(r["method"], r["budget"]) for r in rows} == {("full_ft", None), ("bitfit", None)} | {
        (m, b) for m in ("h_adapter", "p_adapter", "lora", "lora_rprime", "adalora", "dora") for b in ("small", "large")}
    for r in rows:
        assert r["step_s"] > 0 and r["peak_memory_mb"] > 0 and r["trainable_paper"] > 0
        assert r["method"] == "full_ft" or r["step_vs_full_ft"] > 0
    assert next(r for r in rows if r["method"] == "lora" and r["budget"] == "large")["step_vs_lora"] == 1.0
    assert "| dora | small |" in out.stdout and "controller share" in out.stdout
    rprime = next(r for r in rows if r["method"] == "lora_rprime" and r["budget"] == "small")
    lora = next(r for r in rows if r["method"] == "lora" and r["budget"] == "small")
    assert rprime["trainable_paper"] * 2 == lora["trainable_paper"] * 3  # r' = 3 components vs r = 2
