"""scripts/sass_per_pixel.py's counting, on a hand-written disassembly (no
nvcc needed): what it calls the warp loop and the channel loop, the runs
through them, and what it leaves out of the kernel's code."""
from __future__ import annotations

import pytest

SASS = """
	.section	.text._ZN5cwarp4cuda25local_warp_forward_kernelIfiEEvv,"ax",@progbits
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   ISETP.GE.AND P0, PT, R0, RZ, PT ;
        /*0020*/               @P0 EXIT ;
.L_x_1:
        /*0030*/                   FADD R2, R2, R3 ;
        /*0040*/              @!P1 BRA `(.L_x_2) ;
        /*0050*/                   MUFU.RCP R4, R2 ;
        /*0060*/                   CALL.REL.NOINC `($slowpath) ;
        /*0070*/                   FMUL R4, R4, R4 ;
.L_x_2:
        /*0080*/                   MUFU.EX2 R5, R2 ;
        /*0090*/                   MUFU.EX2 R6, R2 ;
        /*00a0*/               @P2 BRA `(.L_x_1) ;
        /*00b0*/                   NOP ;
.L_x_3:
        /*00c0*/                   LDG.E.CONSTANT R7, desc[UR4][R8.64] ;
        /*00d0*/                   STG.E.64 desc[UR4][R10.64], R6 ;
        /*00e0*/               @P3 BRA `(.L_x_3) ;
        /*00f0*/                   EXIT ;
$slowpath:
        /*0100*/                   FFMA R4, R4, R4, R4 ;
        /*0110*/                   RET.REL.NODEC R20 `(_ZN5cwarp4cuda25local_warp_forward_kernelIfiEEvv) ;
.L_x_4:
        /*0120*/                   BRA `(.L_x_4);
	.section	.text._ZN5cwarp4cuda26local_warp_backward_kernelIdiEEvv,"ax",@progbits
        /*0000*/                   EXIT ;
"""


@pytest.fixture(scope="module")
def sass(load_script):
    return load_script("scripts/sass_per_pixel.py")


def test_counts_the_loops_and_leaves_out_slow_paths(sass):
    found = list(sass.kernels_of(iter(SASS.splitlines(True)), lambda n: "IfiE" in n))
    assert [name for name, _ in found] == ["_ZN5cwarp4cuda25local_warp_forward_kernelIfiEEvv"]
    insns = found[0][1]
    assert len(insns) == 18  # the NOP left out
    body = sass.main_body(insns)
    assert len(body) == 15  # the subroutine (2) and the self-branch (1) left out
    assert sass.innermost_loops(body) == [(3, 10), (11, 13)]
    c = sass.count(insns, K=4, C=3, P=2)
    # Warp loop: 5 instructions skipping the branch's body, 8 through it
    # (the CALL counted as one); two exps, so two (warp, pixel) pairs.
    assert c["warp_loop"] == {"instructions": 8, "per_iteration": 2, "shortest": 2.5, "longest": 4.0}
    # Channel loop: 3 instructions storing 2 float values.
    assert c["exp_loops"] == [c["warp_loop"]]
    assert c["channel_loop"] == {"instructions": 3, "per_iteration": 2, "shortest": 1.5, "longest": 1.5}
    # The rest: entry -> warp head (4), warp close -> channel head (2), channel close -> EXIT (2).
    assert c["fixed"] == 8
    assert c["estimate"]["per_pixel"] == 8 / 2 + 4 * 2.5 + 3 * 1.5
