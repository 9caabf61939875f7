"""benchmarks/gpu_suite.py runs end to end at tiny sizes on the CPU and prints every figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_tiny_runs_every_section_on_cpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "0 section(s) failed" in out and "device cpu" in out
    for figure in (
        "| cr-train fp32 ", "| cr-train bf16-mixed ", "| cr-train channels-last ",
        "| cr-train torch.compile ", "| cr-predict ", "| glacier-train ", "| risk-train ",
        "| sliding window, 1 tile per call ", "| sliding window, auto = 2 tiles per call ",
        "| stage 1 tiny, 1 steps, batch 1, 32 ", "| stage 2 prithvi_eo_tiny LoRA r8 + int8 ",
    ):  # fmt: skip
        assert figure in out, figure
    assert "samples/s" in out and "Mpx/s" in out and "tiles/s" in out and "s/step" in out
