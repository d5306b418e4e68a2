"""scripts/sm_occupancy.py: resident blocks per SM, against figures worked
out by hand from the sm_90 limits (65,536 registers in four sub-partitions,
allocated per warp in units of 256; 64 warps; 32 blocks; 228 KiB of shared
memory with 1 KiB reserved per block)."""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("sm_occupancy", os.path.join(ROOT, "scripts", "sm_occupancy.py"))
sm_occupancy = importlib.util.module_from_spec(_spec)
sys.modules["sm_occupancy"] = sm_occupancy  # its dataclasses look their module up there
_spec.loader.exec_module(sm_occupancy)


@pytest.mark.parametrize("regs, threads, blocks, limiter", [
    (64, 256, 4, "registers"),     # 2,048 registers per warp: 8 warps per sub-partition
    (92, 256, 2, "registers"),     # rounded to 96 per thread: 5 warps per sub-partition, 20 warps
    (80, 256, 3, "registers"),
    (32, 256, 8, "registers"),     # 64 warps: registers and warps both allow 8
    (16, 128, 16, "warps"),
    (16, 32, 32, "blocks"),
    (255, 1024, 0, "registers"),   # 8,192 registers per warp: 8 warps fit, a block needs 32
])
def test_register_warp_and_block_limits_sm90(regs, threads, blocks, limiter):
    occ = sm_occupancy.blocks_per_sm(90, regs, threads)
    assert (occ.blocks, occ.limiter) == (blocks, limiter)
    assert occ.warps == blocks * -(-threads // 32)
    assert occ.fraction == pytest.approx(occ.warps / 64)


def test_shared_memory_limit():
    # 100 KiB + the 1 KiB reserve: two blocks in sm_90's 228 KiB, one in sm_80's 164 KiB.
    assert sm_occupancy.blocks_per_sm(90, 32, 128, 100 * 1024).blocks == 2
    occ = sm_occupancy.blocks_per_sm(80, 32, 128, 100 * 1024)
    assert (occ.blocks, occ.limiter) == (1, "shared memory")


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no limits for sm_75"):
        sm_occupancy.blocks_per_sm(75, 32, 128)
    with pytest.raises(ValueError, match="threads > 0"):
        sm_occupancy.blocks_per_sm(90, 32, 0)
