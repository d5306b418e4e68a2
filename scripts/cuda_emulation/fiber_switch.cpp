// The fiber context switch of the CUDA emulation (cuda_on_cpu.h), kept apart
// from torch so that programs without torch (the emulator's own tests) link it.
#include "cuda_on_cpu.h"

#if defined(__x86_64__)
// cuda_emu_switch_context(void** save_sp, void* load_sp): push the
// callee-saved registers of the System V ABI, save the stack pointer, load
// the other one, pop its registers and return into it.
asm(R"(
  .text
  .p2align 4
  .globl cuda_emu_switch_context
  .hidden cuda_emu_switch_context
  .type cuda_emu_switch_context, @function
cuda_emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuda_emu_switch_context, .-cuda_emu_switch_context
)");
#endif
