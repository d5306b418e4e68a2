"""Theoretical occupancy of a compiled CUDA kernel: how many of its blocks fit
on one streaming multiprocessor at once.

The same arithmetic as CUDA's occupancy calculator (cuda_occupancy.h), from
what a cubin records: registers per thread, static shared memory, and the
block size (from `__launch_bounds__`, or the num_warps of a Triton launch).
Registers are allocated per warp in units of 256 out of each of the SM's four
sub-partitions; every block also reserves 1 KiB of shared memory for the
system on sm_80 and later. (cuobjdump's SHARED for an sm_90 kernel that uses
shared memory already includes that reserve, so there the count errs by at
most 1 KiB a block on the safe side.)

    blocks_per_sm(arch=90, regs=64, threads=256, shared=0) -> Occupancy(blocks=4, limiter="registers", ...)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SMLimits:
    registers: int = 65536          # 32-bit registers per SM
    sub_partitions: int = 4         # the register file is split between them
    register_unit: int = 256        # registers are allocated per warp in these units
    max_warps: int = 64
    max_blocks: int = 32
    shared: int = 0                 # bytes of shared memory per SM available to blocks
    reserved_shared: int = 1024     # bytes reserved per block by the system
    shared_unit: int = 128


SM_LIMITS = {
    80: SMLimits(shared=164 * 1024),   # A100
    90: SMLimits(shared=228 * 1024),   # H100 / H200
}


@dataclass(frozen=True)
class Occupancy:
    blocks: int        # resident blocks per SM
    warps: int         # resident warps per SM
    fraction: float    # warps / max_warps
    limiter: str       # "registers", "warps", "shared memory" or "blocks"


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def blocks_per_sm(arch: int, regs: int, threads: int, shared: int = 0) -> Occupancy:
    """Resident blocks per SM of a kernel using `regs` registers per thread,
    `threads` threads per block and `shared` bytes of shared memory per block."""
    if arch not in SM_LIMITS:
        raise ValueError(f"sm_occupancy: no limits for sm_{arch} (known: {sorted(SM_LIMITS)})")
    if threads <= 0 or regs < 0 or shared < 0:
        raise ValueError(f"sm_occupancy: expected threads > 0, regs >= 0, shared >= 0, "
                         f"got threads={threads}, regs={regs}, shared={shared}")
    sm = SM_LIMITS[arch]
    warps_per_block = -(-threads // 32)
    limits = {"warps": sm.max_warps // warps_per_block, "blocks": sm.max_blocks}
    if regs > 0:
        regs_per_warp = _round_up(regs * 32, sm.register_unit)
        warps_per_partition = (sm.registers // sm.sub_partitions) // regs_per_warp
        limits["registers"] = (warps_per_partition * sm.sub_partitions) // warps_per_block
    limits["shared memory"] = sm.shared // _round_up(shared + sm.reserved_shared, sm.shared_unit)
    limiter = min(limits, key=lambda k: (limits[k], k != "registers"))
    blocks = limits[limiter]
    return Occupancy(blocks, blocks * warps_per_block, blocks * warps_per_block / sm.max_warps, limiter)
