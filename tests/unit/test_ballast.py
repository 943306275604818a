"""The ballast's CPU-side behaviour: sizing, and clear failures where there is no CUDA driver.
(Holding memory needs a GPU: benchmarks/gpu/run.sh h200-stats proves it there.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.sandbox import ballast

ROOT = Path(__file__).resolve().parents[2]
GIB = ballast.GIB


def test_the_first_block_leaves_the_kept_memory_and_a_chunk_for_the_context():
    first = ballast.plan_first_block(free=70 * GIB, total=80 * GIB, keep_gib=24, device=0)
    assert first == 70 * GIB - 24 * GIB - ballast.CHUNK


@pytest.mark.parametrize(
    ("free", "total", "text"),
    [(70, 80, "has 80.0 GiB in all"), (10, 80, "has only 10.0 GiB free")],
)
def test_a_gpu_that_cannot_offer_the_size_is_a_clear_error(free, total, text):
    keep = 100 if "in all" in text else 24
    with pytest.raises(SystemExit, match=text):
        ballast.plan_first_block(free * GIB, total * GIB, keep, 1)


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="a GPU machine has the driver")
def test_without_a_cuda_driver_the_ballast_fails_fast_naming_libcuda_and_never_imports_torch():
    probe = (
        "import sys, runpy; sys.argv = ['ballast', '--keep-gib', '1', '--devices', '0']\n"
        "try:\n    runpy.run_module('lab.sandbox.ballast', run_name='__main__')\n"
        "finally:\n    print('torch imported:', 'torch' in sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert r.returncode != 0
    assert "ballast: libcuda.so.1" in r.stderr
    assert "torch imported: False" in r.stdout
