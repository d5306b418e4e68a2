"""Python glue of the compiled ops: fake (meta) kernels and autograd.

The schemas are defined in C++ (csrc/registration.cpp) and the CPU / CUDA
kernels registered there; this module adds what torch.compile and autograd
need, right after loading the extension. Importing it without the extension
registers nothing (the public functions then raise when a compiled backend is
requested).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch._prims_common import suggest_memory_format

from cwarp import _extension
from cwarp.ops import _autocast, _checks

__all__ = ["local_warp_op", "local_warp_fake", "local_warp_backward_fake", "register_local_warp_autograd",
           "empty_like_format"]


def empty_like_format(ref: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    """Empty tensor in ref's memory format (NCHW or channels_last): the
    kernels write in the input's format, and the fakes must promise the same."""
    return torch.empty(shape, dtype=dtype or ref.dtype, device=ref.device, memory_format=suggest_memory_format(ref))


def check_local_warp_args(op, image, params, theta, kind, padding_mode, symbolic=False, backward=False) -> None:
    """Inputs, kind and padding_mode of a local_warp op; symbolic=True in fakes (see cwarp.ops._checks);
    backward=True for the backward ops, which take floating images only."""
    _checks.check_local_warp_inputs(op, image, params, theta, symbolic=symbolic, allow_uint8=not backward)
    _checks.check_choice(op, "kind", kind, _checks.KINDS)
    _checks.check_choice(op, "padding_mode", padding_mode, _checks.PADDING_MODES)


def local_warp_fake(op: str):
    """The fake kernel of a local_warp forward op (C++ or Triton): checks, shape, strides."""
    def fake(image, params, theta, out_h, out_w, kind, padding_mode, align_corners):
        check_local_warp_args(op, image, params, theta, kind, padding_mode, symbolic=True)
        _checks.check_out_size(op, out_h, out_w, symbolic=True)
        return empty_like_format(image, (image.shape[0], image.shape[1], out_h, out_w))
    return fake


def local_warp_backward_fake(op: str):
    """The fake kernel of a local_warp backward op: gradients where output_mask
    asks, empty (numel 0) tensors elsewhere and for a theta that is None."""
    def fake(grad_out, image, params, theta, kind, padding_mode, align_corners, output_mask):
        check_local_warp_args(op, image, params, theta, kind, padding_mode, symbolic=True, backward=True)
        _checks.check_local_warp_grad_out(op, grad_out, image, symbolic=True)
        grad_image = empty_like_format(image, image.shape) if output_mask[0] else image.new_empty((0,))
        grad_params = params.new_empty(params.shape) if output_mask[1] else params.new_empty((0,))
        if output_mask[2] and theta is not None:
            grad_theta = theta.new_empty(theta.shape)
        else:
            grad_theta = params.new_empty((0,))
        return grad_image, grad_params, grad_theta
    return fake


def _local_warp_setup_context(op, ctx, inputs):
    image, params, theta, out_h, out_w, kind, padding_mode, align_corners = inputs
    # The public function checks this first; this catches the registered op called directly.
    _checks.check_uint8_not_differentiated(op, image, params, theta, ctx.needs_input_grad[1:3])
    ctx.kind, ctx.padding_mode, ctx.align_corners = kind, padding_mode, align_corners
    ctx.has_theta = theta is not None
    # The backward reads the image only for the coordinate gradients, but it
    # always needs its shape and memory format; saving an input costs no copy.
    ctx.save_for_backward(image, params, theta)


def register_local_warp_autograd(op: str, forward_op, backward_op) -> None:
    """Autograd of the local_warp forward op `op` (its qualified name) through
    its backward op; only the gradients autograd asks for are computed."""
    def backward(ctx, grad_out):
        image, params, theta = ctx.saved_tensors
        need_image, need_params, need_theta = ctx.needs_input_grad[:3]
        mask = [need_image, need_params, need_theta and ctx.has_theta]
        if not any(mask):
            return (None,) * 8
        grad_image, grad_params, grad_theta = backward_op(
            grad_out, image, params, theta, ctx.kind, ctx.padding_mode, ctx.align_corners, mask)
        return (grad_image if mask[0] else None, grad_params if mask[1] else None,
                grad_theta if mask[2] else None, None, None, None, None, None)

    def setup_context(ctx, inputs, output):
        _local_warp_setup_context(op, ctx, inputs)

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


def local_warp_op(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor], out_h: int,
                  out_w: int, kind: str, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """torch.ops.cwarp.local_warp (C++ CPU / CUDA kernels)."""
    _extension.require("cwarp.local_warp", image.device)
    return torch.ops.cwarp.local_warp(image, params, theta, out_h, out_w, kind, padding_mode, align_corners)


if _extension.available():
    torch.library.register_fake("cwarp::local_warp")(local_warp_fake("cwarp::local_warp"))
    torch.library.register_fake("cwarp::local_warp_backward")(local_warp_backward_fake("cwarp::local_warp_backward"))
    register_local_warp_autograd("cwarp::local_warp", "cwarp::local_warp",
                                 lambda *args: torch.ops.cwarp.local_warp_backward(*args))
    _autocast.register("cwarp::local_warp", _autocast.POLICY["local_warp"])
