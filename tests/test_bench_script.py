"""The benchmark script runs end to end on a tiny model and emits a row for every method (not a timing test)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import run_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_methods.py"


@pytest.mark.slow
def test_bench_methods_emits_every_method(tmp_path):
    out_file = tmp_path / "bench.json"
    out = run_script(SCRIPT, "--in-process", "--hidden", "48", "--layers", "1", "--vocab", "100", "--batch", "2",
                     "--seq-len", "8", "--steps", "1", "--warmup", "1", "--out", out_file, cwd=tmp_path)
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


@pytest.mark.slow
def test_bench_methods_prints_ratio_tables_per_precision_side_by_side(tmp_path):
    out_file = tmp_path / "bench.json"
    out = run_script(SCRIPT, "--in-process", "--hidden", "48", "--layers", "1", "--vocab", "100", "--batch", "2",
                     "--seq-len", "8", "--steps", "1", "--warmup", "1",
                     "--methods", "full_ft,lora:large,adalora:large,dora:large", "--precision", "fp32,bf16",
                     "--out", out_file, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out_file.read_text())["rows"]
    assert sorted((r["method"], r["precision"]) for r in rows) == sorted(
        (m, p) for m in ("full_ft", "lora", "adalora", "dora") for p in ("fp32", "bf16"))
    assert all(r["step_vs_lora"] > 0 and r["memory_vs_lora"] > 0 for r in rows)  # full_ft against the large LoRA
    assert "bf16 on cpu" in out.stdout and "fp32 on cpu" in out.stdout
    side = out.stdout[out.stdout.index("| method | budget | step ×LoRA fp32 | step ×LoRA bf16 |"):]
    dora = next(line for line in side.splitlines() if line.startswith("| dora | large |"))
    measured = [next(r for r in rows if r["method"] == "dora" and r["precision"] == p) for p in ("fp32", "bf16")]
    assert dora == ("| dora | large | " + " | ".join(f"{r['step_vs_lora']:.3f}" for r in measured) + " | "
                    + " | ".join(f"{r['memory_vs_lora']:.3f}" for r in measured) + f" | {7.8 / 7.2:.3f} | "
                    f"{4112 / 4094:.3f} |")  # the paper's Table 9: minutes per epoch and MiB, ×LoRA


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: fp16 is allowed here")
def test_bench_methods_refuses_fp16_without_cuda(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--precision", "fp32,fp16", "--out", str(tmp_path / "b.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and out.stderr.strip() == "--precision fp16 needs a CUDA GPU; allowed here: fp32, bf16"
