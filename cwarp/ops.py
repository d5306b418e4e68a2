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

from cwarp import _checks, _extension

__all__ = ["local_warp_op"]


def _empty_like_format(ref: torch.Tensor, shape) -> torch.Tensor:
    # The kernels write in the input's memory format (NCHW or channels_last),
    # and the fakes must promise the same strides.
    return ref.new_empty(shape).contiguous(memory_format=suggest_memory_format(ref))


def _local_warp_fake(image, params, theta, out_h, out_w, kind, padding_mode, align_corners):
    op = "cwarp::local_warp"
    _checks.check_local_warp_inputs(op, image, params, theta, symbolic=True)
    _checks.check_out_size(op, out_h, out_w, symbolic=True)
    _checks.check_choice(op, "kind", kind, _checks.KINDS)
    _checks.check_choice(op, "padding_mode", padding_mode, _checks.PADDING_MODES)
    return _empty_like_format(image, (image.shape[0], image.shape[1], out_h, out_w))


def _local_warp_backward_fake(grad_out, image, params, theta, kind, padding_mode, align_corners, output_mask):
    op = "cwarp::local_warp_backward"
    _checks.check_local_warp_inputs(op, image, params, theta, symbolic=True)
    _checks.check_local_warp_grad_out(op, grad_out, image, symbolic=True)
    grad_image = _empty_like_format(image, image.shape) if output_mask[0] else image.new_empty((0,))
    grad_params = params.new_empty(params.shape) if output_mask[1] else params.new_empty((0,))
    if output_mask[2] and theta is not None:
        grad_theta = theta.new_empty(theta.shape)
    else:
        grad_theta = params.new_empty((0,))
    return grad_image, grad_params, grad_theta


def _local_warp_setup_context(ctx, inputs, output):
    image, params, theta, out_h, out_w, kind, padding_mode, align_corners = inputs
    ctx.kind, ctx.padding_mode, ctx.align_corners = kind, padding_mode, align_corners
    ctx.has_theta = theta is not None
    # The backward reads the image only for the coordinate gradients, but it
    # always needs its shape and memory format; saving an input costs no copy.
    ctx.save_for_backward(image, params, theta)


def _local_warp_backward(ctx, grad_out):
    image, params, theta = ctx.saved_tensors
    need_image, need_params, need_theta = ctx.needs_input_grad[:3]
    mask = [need_image, need_params, need_theta and ctx.has_theta]
    if not any(mask):
        return (None,) * 8
    grad_image, grad_params, grad_theta = torch.ops.cwarp.local_warp_backward(
        grad_out, image, params, theta, ctx.kind, ctx.padding_mode, ctx.align_corners, mask)
    return (grad_image if mask[0] else None, grad_params if mask[1] else None,
            grad_theta if mask[2] else None, None, None, None, None, None)


def local_warp_op(image: torch.Tensor, params: torch.Tensor, theta: Optional[torch.Tensor], out_h: int,
                  out_w: int, kind: str, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """torch.ops.cwarp.local_warp (C++ CPU / CUDA kernels)."""
    _extension.require("cwarp.local_warp", image.device)
    return torch.ops.cwarp.local_warp(image, params, theta, out_h, out_w, kind, padding_mode, align_corners)


if _extension.available():
    torch.library.register_fake("cwarp::local_warp")(_local_warp_fake)
    torch.library.register_fake("cwarp::local_warp_backward")(_local_warp_backward_fake)
    torch.library.register_autograd("cwarp::local_warp", _local_warp_backward,
                                    setup_context=_local_warp_setup_context)
