"""The procedural face renderer behind SyntheticFaces.

A face is drawn in a canonical, aligned frame (x right, y down, eyes near
y = -0.08, mouth corners near y = 0.65) as anti-aliased shapes composited back
to front, lit by a directional light, then placed in the image by one
similarity transform (grid_sample) over an image-space background.

Anti-aliasing: a shape's coverage of a pixel is a linear ramp of its signed
distance over one pixel, clamp(0.5 - d / pixel, 0, 1), the box-filtered
coverage of a straight edge. Large shapes use the first-order distance of
their implicit function, f / |grad f|, which needs no square root.

Speed (three to five times that of a plain version of the same drawing):
- everything drawn before the light is mirror-symmetric, so only the right
  half of the canvas is drawn, then mirrored;
- boundaries that depend on x or y alone live on broadcast rows/columns, so a
  shape costs one or two full-size operations;
- eyes, brows and mouth are evaluated only in fixed windows they never leave;
- canvas-sized scratch tensors are reused between sub-batches (a workspace):
  fresh ones cost more in page faults than the arithmetic done on them.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

# Action-unit-like controls, each roughly in [0, 1] (eye_open in [-1, 1]: squint..wide).
ACTION_UNITS = ("brow_raise", "brow_lower", "inner_brow_raise", "eye_open", "lip_corner_pull",
                "lip_corner_depress", "mouth_open", "lip_stretch", "nose_wrinkle")
BR, BL, IBR, EO, LCP, LCD, MO, LS, NW = range(len(ACTION_UNITS))

# Where the neutral average face puts its 5 landmarks (eyes, nose tip, mouth
# corners), in the order and close to the values of cwarp.FACE_LANDMARKS_5.
CANONICAL_LANDMARKS = ((-0.315, -0.0785), (0.315, -0.0785), (0.0, 0.281), (-0.261, 0.6485), (0.261, 0.6485))

# Bump when a change to the drawing alters the pixels, so stale caches are not reused.
RENDER_VERSION = 1

# The canonical canvas: hair and ears fit in |x| < 1.06; the neck runs off the
# bottom far enough that no pose shows its end.
_X_HALF = 1.06
_Y_TOP, _Y_BOTTOM = -1.25, 1.6
# Windows of the right half that the local features never leave: (max x, (y range)).
_UPPER = (0.86, (-0.62, 0.16))
_LOWER = (0.5, (0.12, 0.97))
_SUBBATCH = 128
_NUM_BLOBS = 3

Scalar = Union[float, Tensor]

_SCLERA = (0.93, 0.92, 0.89)
_PUPIL = (0.02, 0.02, 0.02)
_LASH = (0.08, 0.06, 0.05)
_MOUTH_INSIDE = (0.22, 0.06, 0.07)
_TEETH = (0.9, 0.88, 0.82)
_LENS = (0.75, 0.82, 0.9)


def _c(t: Tensor) -> Tensor:
    """A per-face scalar (B,) as (B, 1, 1), to broadcast over a (B, H, W) field."""
    return t.view(-1, 1, 1)


def _ramp(v: Tensor, k: Scalar) -> Tensor:
    """Coverage of the region v <= 0 for a distance-like v, k = 1 / pixel size (new tensor; for small v)."""
    return (0.5 - v * k).clamp_(0.0, 1.0)


def _ramp_(v: Tensor, k: Scalar) -> Tensor:
    """In-place _ramp, for canvas-sized fields."""
    return v.mul_(-k).add_(0.5).clamp_(0.0, 1.0)


def _ellipse(out: Tensor, dx: Tensor, dy: Tensor, ax: Scalar, ay: Scalar, k: Scalar) -> Tensor:
    """Coverage of (dx/ax)^2 + (dy/ay)^2 <= 1 into ``out``, for dx of x alone and dy of y alone.

    Near the boundary the implicit function's first-order distance is
    (r^2 - 1) * a / 2, a the smaller semi-axis: a row term minus a column term.
    """
    h = 0.5 * k * torch.minimum(torch.as_tensor(ax), torch.as_tensor(ay))
    torch.sub((0.5 + h) - h * (dy / ay).square(), h * (dx / ax).square(), out=out)
    return out.clamp_(0.0, 1.0)


class _Workspace:
    """Scratch tensors kept from one sub-batch to the next, by name."""

    def __init__(self):
        self._buffers: Dict[str, Tensor] = {}

    def get(self, name: str, shape: Tuple[int, ...], device: torch.device) -> Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.device != device or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = torch.empty(shape, device=device)
            self._buffers[name] = buf
        return buf[:shape[0]]


class _Region:
    """A window of the canvas's right half (x >= 0): coordinates, canvas view and scratch fields."""

    def __init__(self, canvas: "_Canvas", name: str, rows: slice, cols: slice):
        self.x = canvas.xs[cols].view(1, 1, -1)
        self.y = canvas.ys[rows].view(1, -1, 1)
        self.rgba = canvas.right[:, :, rows, cols]
        self.k = canvas.inv_px
        self._canvas, self._name = canvas, name
        self.shape = (self.rgba.shape[0], self.rgba.shape[2], self.rgba.shape[3])

    def buf(self, i: int) -> Tensor:
        return self._canvas.ws.get(f"{self._name}.{i}", self.shape, self.rgba.device)

    def paint(self, cover: Tensor, color, opacity: Optional[Scalar] = None) -> None:
        """Composite a flat-coloured shape of the given coverage (B or 1, h, w) over what is there."""
        b = self.rgba.shape[0]
        if opacity is not None:
            factor = _c(opacity) if isinstance(opacity, Tensor) else opacity
            cover = cover.mul_(factor) if cover.shape[0] == b else cover * factor
        if not isinstance(color, Tensor):
            color = torch.tensor(color).expand(b, 3)
        target = torch.cat([color.reshape(b, 3), color.new_ones(b, 1)], dim=1).view(b, 4, 1, 1)
        # Premultiplied "over": rgb and alpha move toward (colour, 1) by the coverage.
        self.rgba.lerp_(target.expand_as(self.rgba), cover.unsqueeze(1).expand_as(self.rgba))


class _Canvas:
    def __init__(self, ws: _Workspace, batch: int, image_size: int, device: torch.device):
        # One canonical pixel is one output pixel at scale 1.
        self.ws = ws
        self.px = 2.0 / image_size
        self.inv_px = 1.0 / self.px
        self.half = int(math.ceil(_X_HALF / self.px))
        self.height = int(round((_Y_BOTTOM - _Y_TOP) / self.px))
        self.xs = (torch.arange(self.half, device=device, dtype=torch.float32) + 0.5) * self.px
        self.ys = _Y_TOP + (torch.arange(self.height, device=device, dtype=torch.float32) + 0.5) * self.px
        # Drawing goes to a contiguous right half: painting through a strided
        # view of the full canvas runs at half speed.
        self.right = ws.get("right", (batch, 4, self.height, self.half), device).zero_()
        self.rgba = ws.get("rgba", (batch, 4, self.height, 2 * self.half), device)
        self.left = self.rgba[..., :self.half]

    def full(self) -> _Region:
        return _Region(self, "full", slice(None), slice(None))

    def window(self, spec: Tuple[float, Tuple[float, float]], name: str) -> _Region:
        x_max, (y0, y1) = spec
        c1 = min(self.half, int(math.ceil(x_max / self.px)))
        r0 = max(0, int(math.floor((y0 - _Y_TOP) / self.px)))
        r1 = min(self.height, int(math.ceil((y1 - _Y_TOP) / self.px)))
        return _Region(self, name, slice(r0, r1), slice(0, c1))

    def mirror(self) -> None:
        """Fill the full canvas from the drawn right half; the light then works on the full canvas."""
        self.rgba[..., self.half:].copy_(self.right)
        self.left.copy_(self.right.flip(-1))
        self.right = self.rgba[..., self.half:]

    def to_normalized(self) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        """(centre, half-size) per axis: canonical position = centre + half * grid_sample coordinate."""
        half_h = self.height * self.px / 2
        return (0.0, self.half * self.px), (_Y_TOP + half_h, half_h)


def face_geometry(p: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Positions and sizes of the face parts once the action units have moved them."""
    au = p["au"]
    g = {}
    jaw = 0.10 * au[:, MO].clamp(min=0)
    g["head_cy"] = p["head_cy"] + jaw / 2
    g["head_ay"] = p["head_ay"] + jaw / 2
    g["eye_h"] = p["eye_h"] * (1.0 + 0.6 * au[:, EO]).clamp(min=0.15)

    y_base = p["eye_y"] - p["brow_gap"]
    shift = -0.085 * au[:, BR] + 0.05 * au[:, BL]
    g["brow_in_x"] = p["eye_dx"] - 0.115 - 0.03 * au[:, BL]
    g["brow_in_y"] = y_base + shift - 0.075 * au[:, IBR] + 0.04 * au[:, BL]
    g["brow_out_x"] = p["eye_dx"] + 0.15
    g["brow_out_y"] = y_base + shift + 0.015
    g["brow_arch"] = p["brow_arch"] + 0.025 * au[:, BR]

    g["nose_y"] = p["nose_y"] - 0.02 * au[:, NW]
    g["mouth_hw"] = p["mouth_hw"] * (1.0 + 0.22 * au[:, LS] + 0.1 * au[:, LCP] - 0.06 * au[:, MO])
    g["corner_dy"] = -0.075 * au[:, LCP] + 0.07 * au[:, LCD] + 0.015 * au[:, LS]
    gap = 0.2 * au[:, MO].clamp(min=0)
    g["gap_up"] = 0.3 * gap + 0.03 * au[:, NW].clamp(min=0)
    g["gap_lo"] = 0.7 * gap
    g["lip_thin"] = 1.0 - 0.4 * au[:, LS].clamp(0, 1)

    corner_y = p["mouth_y"] + g["corner_dy"]
    zeros = torch.zeros_like(corner_y)
    g["landmarks"] = torch.stack([
        torch.stack([-p["eye_dx"], p["eye_y"]], -1),
        torch.stack([p["eye_dx"], p["eye_y"]], -1),
        torch.stack([zeros, g["nose_y"]], -1),
        torch.stack([-g["mouth_hw"], corner_y], -1),
        torch.stack([g["mouth_hw"], corner_y], -1),
    ], dim=1)
    return g


def _draw_head(cv: _Canvas, p: Dict[str, Tensor], g: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
    """Hair, neck, ears, head and fringe on the right half.

    Returns the two halves of the light on the head, n.l = sym + anti * sign(x),
    with sym = ly * ey + lz * nz even in x and anti = lx * ex odd in x.
    """
    r = cv.full()
    x, y, k = r.x, r.y, r.k
    a, b, c = r.buf(0), r.buf(1), r.buf(2)
    hair_on, skin = _c(p["hair_on"]), p["skin"]

    vol = _c(p["hair_vol"])
    _ellipse(a, x, y - _c(p["head_cy"]) + 0.5 * vol, _c(p["head_ax"]) + vol, _c(p["head_ay"]) + 0.8 * vol, k)
    torch.minimum(a, _ramp(y - _c(p["hair_len"]), k), out=a)
    r.paint(a.mul_(hair_on), p["hair"])

    head_cy, head_ay = _c(g["head_cy"]), _c(g["head_ay"])
    torch.minimum(_ramp(x - _c(p["neck_w"]), k), _ramp((head_cy + 0.45) - y, k), out=a)
    r.paint(a, skin * 0.8)
    r.paint(_ellipse(a, x - 0.97 * _c(p["head_ax"]), y - _c(p["eye_y"]) - 0.13, 0.085, 0.15, k), skin * 0.9)

    # The jaw narrows toward the chin by chin_taper: the half-width is a function of y.
    ey = (y - head_cy) / head_ay
    inv_ax = 1.0 / (_c(p["head_ax"]) * (1.0 - _c(p["chin_taper"]) * ey.clamp(0, 1).square()))
    r2 = torch.mul(x.square(), inv_ax.square(), out=b).add_(ey.square())
    h = (0.5 * k) * torch.minimum(1.0 / inv_ax, head_ay)
    head = torch.addcmul(0.5 + h, r2, h, value=-1.0, out=a).clamp_(0.0, 1.0)
    r.paint(head, skin)
    fringe = _ramp_(torch.sub(y, _c(p["hairline"]) + 0.35 * x.square(), out=c), k)
    r.paint(torch.minimum(fringe, head, out=c).mul_(hair_on), p["hair"])

    light = p["light"]
    norm = torch.sqrt(light[:, 0].square() + light[:, 1].square() + 1.0)
    # Lambert on the head's ellipsoid, n = (ex, ey, sqrt(1 - r^2)); beyond its rim nz = 0.
    sym = torch.neg(r2, out=a).add_(1.0).clamp_(min=0.0).sqrt_().mul_(_c(1.0 / norm)).add_(ey * _c(light[:, 1] / norm))
    anti = torch.mul(x, inv_ax, out=c).mul_(_c(light[:, 0] / norm))
    return sym, anti


def _draw_lower(cv: _Canvas, p: Dict[str, Tensor], g: Dict[str, Tensor]) -> None:
    """Nose, nasolabial folds and mouth."""
    r = cv.window(_LOWER, "lower")
    x, y, k = r.x, r.y, r.k
    a, b, c = r.buf(0), r.buf(1), r.buf(2)
    au, skin = p["au"], p["skin"]
    nose_y = _c(g["nose_y"])
    nw = _c(au[:, NW].clamp(0, 1))

    r.paint(_ellipse(a, x, y - nose_y - 0.012, _c(p["nose_w"]) * 1.1, 0.05, k / 3.0), skin * 0.72, 0.75)
    nostril_x = _c(p["nose_w"]) * (0.55 + 0.15 * nw)
    r.paint(_ellipse(a, x - nostril_x, y - nose_y - 0.022 + 0.025 * nw, 0.028, 0.015, k), skin * 0.3)

    # The fold: distance to a segment from beside the nose to beyond the mouth corner.
    hw = _c(g["mouth_hw"])
    corner_y = _c(p["mouth_y"] + g["corner_dy"])
    x0, y0 = _c(p["nose_w"]) + 0.04, nose_y
    vx, vy = hw + 0.04 - x0, corner_y + 0.03 - y0
    t = torch.add((x - x0) * vx, (y - y0) * vy, out=b).mul_(1.0 / (vx * vx + vy * vy)).clamp_(0.0, 1.0)
    fold = torch.mul(t, -vx, out=a).add_(x - x0).square_()
    fold.add_(t.mul_(-vy).add_(y - y0).square_()).sqrt_()
    smile = (au[:, LCP] + 0.7 * au[:, NW]).clamp(0, 1)
    r.paint(_ramp_(fold.sub_(_c(0.005 + 0.006 * smile)), k), skin * 0.65, 0.06 + 0.4 * smile)

    # Lip boundaries are functions of x alone: a parabola through the corners for
    # the lip line, opened and thickened by a half-ellipse profile that closes at them.
    t2 = (x / hw).square().clamp_(max=1.0)
    prof = torch.sqrt(1.0 - t2)
    mid = _c(p["mouth_y"]) + _c(g["corner_dy"]) * t2
    gap_up, gap_lo = _c(g["gap_up"]) * prof, _c(g["gap_lo"]) * prof
    thin = _c(g["lip_thin"]) * prof
    inside = _ramp(x - hw, k)
    top = mid - gap_up - _c(p["lip_up"]) * thin
    bottom = mid + gap_lo + _c(p["lip_lo"]) * thin
    lips = torch.minimum(_ramp_(torch.sub(top, y, out=a), k), _ramp_(torch.sub(y, bottom, out=b), k), out=a)
    r.paint(torch.minimum(lips, inside, out=a), p["lip"])
    seam_top, seam_bottom = mid - gap_up, mid + gap_lo
    opening = torch.minimum(_ramp_(torch.sub(seam_top, y, out=a), k), _ramp_(torch.sub(y, seam_bottom, out=b), k),
                            out=a)
    torch.minimum(opening, inside, out=opening)
    r.paint(opening, _MOUTH_INSIDE)
    teeth_bottom = seam_top + (0.45 * (seam_bottom - seam_top)).clamp_(max=0.06)
    r.paint(torch.minimum(_ramp_(torch.sub(y, teeth_bottom, out=b), k), opening, out=b), _TEETH)


def _draw_upper(cv: _Canvas, p: Dict[str, Tensor], g: Dict[str, Tensor]) -> None:
    """Eyes, brows, frown and nose-wrinkle lines, glasses."""
    r = cv.window(_UPPER, "upper")
    x, y, k = r.x, r.y, r.k
    eye, a, b, c = r.buf(0), r.buf(1), r.buf(2), r.buf(3)
    au, skin = p["au"], p["skin"]

    dx = x - _c(p["eye_dx"])
    dy = y - _c(p["eye_y"])
    # A narrow (squinting) eye needs the true gradient norm of its implicit
    # function, or its pointed ends would blur over several pixels.
    ax, ay = _c(p["eye_w"]), _c(g["eye_h"])
    u, v = dx / ax, dy / ay
    torch.add(u.square(), v.square() - 1.0, out=eye)
    grad2 = torch.add((u / ax).square(), (v / ay).square(), out=a)
    _ramp_(eye.mul_(grad2.clamp_(min=1e-6).rsqrt_()), 0.5 * k)
    r.paint(eye, _SCLERA)
    gaze = p["gaze"]
    dist = torch.add((dx - _c(gaze[:, 0])).square(), (dy - _c(gaze[:, 1])).square(), out=a).sqrt_()
    iris_r = _c(p["iris_r"])
    r.paint(torch.minimum(_ramp_(torch.sub(dist, iris_r, out=b), k), eye, out=b), p["iris"])
    r.paint(torch.minimum(_ramp_(torch.sub(dist, 0.45 * iris_r, out=b), k), eye, out=b), _PUPIL)
    # The lash line: the band where the eye's coverage ramps, on its upper half.
    lash = torch.mul(eye, 2.0, out=b).sub_(1.0).abs_().neg_().add_(1.0).mul_(1.6)
    r.paint(torch.minimum(lash, _ramp(dy, k), out=b).clamp_(0.0, 1.0), _LASH)

    # A brow is a tapered stroke from its inner to its outer end, bowed up by its arch.
    bx0, by0 = _c(g["brow_in_x"]), _c(g["brow_in_y"])
    vx, vy = _c(g["brow_out_x"]) - bx0, _c(g["brow_out_y"]) - by0
    length = torch.sqrt(vx * vx + vy * vy)
    t = torch.add((x - bx0) * vx, (y - by0) * vy, out=a).mul_(1.0 / (length * length)).clamp_(0.0, 1.0)
    bump = torch.mul(t, t, out=b).sub_(t).mul_(-4.0 * _c(g["brow_arch"]) / length)  # arch * 4t(1-t) / |v|
    off_x = torch.mul(t, -vx, out=c).add_(x - bx0).addcmul_(bump, vy, value=-1.0).square_()
    off_y = torch.mul(t, -vy, out=eye).add_(y - by0).addcmul_(bump, vx).square_()
    brow = off_x.add_(off_y).sqrt_()
    thick = _c(p["brow_thick"])
    brow.addcmul_(t, 0.5 * thick).sub_(thick)
    r.paint(_ramp_(brow, k), p["brow"])

    lines = skin * 0.6
    frown_y = ((y - _c(p["eye_y"]) + 0.08).abs() - 0.05).clamp_(min=0).square()
    frown = torch.add(frown_y, (x - 0.045).square(), out=a).sqrt_().sub_(0.006)
    r.paint(_ramp_(frown, k), lines, (0.8 * au[:, BL]).clamp(0, 0.8))
    rows = torch.minimum(torch.minimum((y - 0.02).abs(), (y - 0.07).abs()), (y - 0.12).abs())
    wrinkle = _ramp(torch.sqrt((x - 0.065).clamp(min=0).square() + rows.square()) - 0.005, k)
    r.paint(torch.mul(wrinkle, _c((0.75 * au[:, NW]).clamp(0, 0.75)), out=a), lines)

    if bool((p["glasses_on"] > 0).any()):
        gw, gh, rr = _c(p["glass_w"]), _c(p["glass_h"]), 0.04
        qx = dx.abs() - (gw - rr)
        qy = (dy - 0.01).abs() - (gh - rr)
        box = torch.add(qx.clamp(min=0).square(), qy.clamp(min=0).square(), out=a).sqrt_()
        box.add_(torch.maximum(qx, qy, out=b).clamp_(max=0.0)).sub_(rr)
        r.paint(_ramp_(torch.mul(box, 1.0, out=b), k), _LENS, 0.18 * p["glasses_on"])
        frame_t = _c(p["frame_t"])
        rim = torch.abs(box, out=b).sub_(frame_t)
        bridge = torch.maximum(x - (_c(p["eye_dx"]) - gw + 0.01), (dy + 0.02).abs() - 0.8 * frame_t, out=c)
        temple = torch.maximum(torch.maximum((gw - 0.01) - dx, x - 0.98 * _c(p["head_ax"])),
                               (dy + 0.03).abs() - 0.7 * frame_t, out=a)
        frame = torch.minimum(torch.minimum(rim, bridge, out=b), temple, out=b)
        r.paint(_ramp_(frame, k), p["frame"], p["glasses_on"])


def _soft_ellipse(dx: Tensor, dy: Tensor, ax: Scalar, ay: Scalar) -> Tensor:
    """A blurred ellipse's coverage: 1 inside (dx/ax)^2 + (dy/ay)^2 <= 0.75, fading out by 1.25 (shading, not a
    shape)."""
    return (0.5 - 2.0 * ((dx / ax).square() + (dy / ay).square() - 1.0)).clamp(0.0, 1.0)


def _paint_halves(cv: _Canvas, spec, side: Tensor, draw) -> None:
    """Paint a mirror pair of marks, each half with its own strength.

    ``draw(x, y, k)`` gives, on a window of the right half (x >= 0), a list of
    (coverage (B, h, w), colour (B, 3), opacity (B,)). The right half paints
    them with opacity * (1 + side), the left half mirrored with opacity *
    (1 - side): one face's two halves differ. Marks stay on the head (the
    canvas's coverage so far).
    """
    x_max, (y0, y1) = spec
    c1 = min(cv.half, int(math.ceil(x_max / cv.px)))
    r0 = max(0, int(math.floor((y0 - _Y_TOP) / cv.px)))
    r1 = min(cv.height, int(math.ceil((y1 - _Y_TOP) / cv.px)))
    x = cv.xs[:c1].view(1, 1, -1)
    y = cv.ys[r0:r1].view(1, -1, 1)
    b = cv.rgba.shape[0]
    halves = ((cv.rgba[:, :, r0:r1, cv.half:cv.half + c1], 1.0 + side, False),
              (cv.rgba[:, :, r0:r1, cv.half - c1:cv.half], 1.0 - side, True))
    for cover, color, opacity in draw(x, y, cv.inv_px):
        for dst, weight, flip in halves:
            c = cover.flip(-1) if flip else cover
            c = (c * _c(opacity * weight)).clamp_(0.0, 1.0) * dst[:, 3]
            target = torch.cat([color.reshape(b, 3), color.new_ones(b, 1)], dim=1).view(b, 4, 1, 1)
            dst.lerp_(target.expand_as(dst), c.unsqueeze(1).expand_as(dst))


def _draw_texture(cv: _Canvas, p: Dict[str, Tensor], g: Dict[str, Tensor]) -> None:
    """The texture half of a "hard" face's expression (p["tex_au"]): forehead wrinkles (brow raise), crow's
    feet, cheek highlight and teeth (smile, lip stretch), shadows under the brows and flushed cheeks (brow
    lowering), shadows under the eyes (lip corner depression), each half of the face with its own strength
    (p["side"])."""
    au, skin, side = p["tex_au"].clamp(0.0, 1.3), p["skin"], p["side"]
    lines, shadow, light = skin * 0.6, skin * 0.72, (skin * 1.18).clamp(max=1.0)
    flush = (skin * torch.tensor([1.15, 0.75, 0.75])).clamp(max=1.0)
    teeth = torch.tensor(_TEETH).expand_as(skin)
    eye_dx, eye_y = _c(p["eye_dx"]), _c(p["eye_y"])

    def upper(x, y, k):
        brow_y = eye_y - _c(p["brow_gap"])
        rows = torch.stack([(y - (brow_y - d)).abs() for d in (0.1, 0.17, 0.24)]).amin(0)
        forehead = _ramp(rows - 0.012, k) * _ramp(x - 0.38, k)
        feet = []
        corner_x = eye_dx + _c(p["eye_w"]) + 0.025
        for slope in (-0.45, 0.0, 0.45):
            along = (x - corner_x).clamp(0.0, 0.07)
            feet.append(((y - eye_y) - slope * along).abs() + (x - corner_x - along).abs())
        crow = _ramp(torch.stack(feet).amin(0) - 0.01, k)
        brow_shadow = _soft_ellipse(x - (eye_dx - 0.05), y - (eye_y - 0.065), 0.16, 0.035)
        under_eye = _soft_ellipse(x - eye_dx, y - (eye_y + 0.075), 0.09, 0.025)
        return [(forehead, lines, 0.7 * (au[:, BR] + 0.7 * au[:, IBR]).clamp(0, 1)),
                (crow, lines, 0.8 * au[:, LCP].clamp(0, 1)),
                (brow_shadow, shadow, 0.7 * au[:, BL].clamp(0, 1)),
                (under_eye, shadow, 0.6 * au[:, LCD].clamp(0, 1))]

    def lower(x, y, k):
        cheek = _soft_ellipse(x - 0.34, y - 0.33, 0.13, 0.09)
        hw = _c(g["mouth_hw"])
        t2 = (x / hw).square().clamp(max=1.0)
        mid = _c(p["mouth_y"]) + _c(g["corner_dy"]) * t2
        band = _ramp((y - mid).abs() - 0.018, k) * _ramp(x - 0.7 * hw, k)
        return [(cheek, light, 0.6 * au[:, LCP].clamp(0, 1)),
                (cheek, flush, 0.6 * au[:, BL].clamp(0, 1)),
                (band, teeth, 0.9 * (0.6 * au[:, LCP] + 0.6 * au[:, LS]).clamp(0, 1))]

    _paint_halves(cv, _UPPER, side, upper)
    _paint_halves(cv, _LOWER, side, lower)


def _light(cv: _Canvas, p: Dict[str, Tensor], sym: Tensor, anti: Tensor) -> None:
    """Multiply the mirrored canvas by the head's light: ambient + (1 - ambient) * clamp(n.l)."""
    amb = _c(p["ambient"])
    scratch = cv.ws.get("light", sym.shape, sym.device)
    for half, sign in ((cv.right, 1.0), (cv.left, -1.0)):
        shade = torch.add(sym, anti, alpha=sign, out=scratch).clamp_(0.0, 1.0).mul_(1.0 - amb).add_(amb)
        if sign < 0:
            shade = shade.flip(-1)
        half[:, :3].mul_(shade.unsqueeze(1))


def _pose_matrix(p: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
    """(A, t) with image position = A @ canonical position + t."""
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    s = p["scale"]
    a = torch.stack([torch.stack([s * cos, -s * sin], -1), torch.stack([s * sin, s * cos], -1)], dim=1)
    return a, p["shift"]


def _pixel_centres(image_size: int, device: torch.device) -> Tensor:
    return (torch.arange(image_size, device=device, dtype=torch.float32) + 0.5) * (2.0 / image_size) - 1.0


def _place(cv: _Canvas, p: Dict[str, Tensor], image_size: int) -> Tensor:
    """Resample the canonical canvas into the image through the pose: (B, 4, S, S) premultiplied."""
    a, t = _pose_matrix(p)
    inv = torch.linalg.inv(a)
    offset = -(inv @ t.unsqueeze(-1)).squeeze(-1)
    c = _pixel_centres(image_size, a.device)
    x, y = c.view(1, 1, -1), c.view(1, -1, 1)
    b = a.shape[0]
    grid = cv.ws.get("grid", (b, image_size, image_size, 2), a.device)
    axes = []
    for i, (centre, half) in enumerate(cv.to_normalized()):
        # affine_grid by hand: separable in x and y, so two small products and one add.
        row = (_c(inv[:, i, 1]) * y + _c(offset[:, i] - centre)) / half
        axes.append(torch.addcmul(row, _c(inv[:, i, 0] / half), x, out=cv.ws.get(f"grid{i}", (b, image_size,
                                                                                              image_size), a.device)))
    torch.stack(axes, dim=-1, out=grid)
    return F.grid_sample(cv.rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _background(ws: _Workspace, p: Dict[str, Tensor], out: Tensor) -> Tensor:
    """Into ``out`` (B, 3, S, S): a two-colour gradient, discs of random colour and blur, faint stripes."""
    b, _, size, _ = out.shape
    c = _pixel_centres(size, out.device)
    x, y = c.view(1, 1, -1), c.view(1, -1, 1)
    field = ws.get("bg", (b, size, size), out.device)
    torch.add(_c(torch.cos(p["bg_angle"])) * x, _c(torch.sin(p["bg_angle"])) * y, out=field)
    field.mul_(0.4).add_(0.5).clamp_(0.0, 1.0)
    torch.mul(field.unsqueeze(1), (p["bg2"] - p["bg1"]).view(b, 3, 1, 1), out=out).add_(p["bg1"].view(b, 3, 1, 1))
    k = size / 2.0
    for i in range(_NUM_BLOBS):
        centre, radius = p["blob_c"][:, i], _c(p["blob_r"][:, i])
        # First-order distance to the circle, (d^2 - r^2) / 2r, blurred over blob_soft pixels.
        torch.add((x - _c(centre[:, 0])).square(), (y - _c(centre[:, 1])).square(), out=field)
        field.sub_(radius.square()).mul_(0.5 / radius)
        cover = _ramp_(field, k / _c(p["blob_soft"][:, i])).mul_(_c(p["blob_alpha"][:, i])).unsqueeze(1)
        out.lerp_(p["blob_color"][:, i].view(b, 3, 1, 1).expand_as(out), cover.expand_as(out))
    torch.add(_c(torch.cos(p["stripe_angle"])) * x, _c(torch.sin(p["stripe_angle"])) * y, out=field)
    field.mul_(_c(p["stripe_freq"])).add_(_c(p["stripe_phase"])).sin_().mul_(_c(p["stripe_amp"]))
    return out.add_(field.unsqueeze(1))


def _render_batch(ws: _Workspace, p: Dict[str, Tensor], out: Tensor, noise: Tensor) -> Tensor:
    """Render into ``out`` (B, 3, S, S) with unit Gaussian ``noise`` (B, S, S); returns the landmarks (B, 5, 2)."""
    b, _, size, _ = out.shape
    device = out.device
    g = face_geometry(p)
    cv = _Canvas(ws, b, size, device)
    sym, anti = _draw_head(cv, p, g)
    _draw_lower(cv, p, g)
    _draw_upper(cv, p, g)
    cv.mirror()
    if "tex_au" in p:
        _draw_texture(cv, p, g)
    _light(cv, p, sym, anti)
    face = _place(cv, p, size)

    _background(ws, p, out)
    out.mul_(1.0 - face[:, 3:]).add_(face[:, :3])
    c = _pixel_centres(size, device)
    grad = p["light_grad"]
    illum = torch.add((1.0 + _c(grad[:, 1]) * c.view(1, -1, 1)), _c(grad[:, 0]) * c.view(1, 1, -1),
                      out=ws.get("bg", (b, size, size), device))
    out.mul_(illum.unsqueeze(1)).mul_((p["gain"].view(b, 1) * p["cast"]).view(b, 3, 1, 1))
    # Sensor noise: one Gaussian field per face, mirrored differently for each
    # channel, so the three channels are uncorrelated pixel by pixel at a third
    # of the cost of drawing the random numbers.
    noise = torch.mul(noise, _c(p["noise"]), out=ws.get("noise", (b, size, size), device))
    out[:, 0].add_(noise)
    out[:, 1].add_(noise.flip(-1))
    out[:, 2].add_(noise.flip(-2))
    out.clamp_(0.0, 1.0)

    a, t = _pose_matrix(p)
    return (g["landmarks"] @ a.transpose(1, 2)) + t.unsqueeze(1)


def render_faces(params: Dict[str, Tensor], image_size: int, generator: Optional[torch.Generator] = None, *,
                 noise: Optional[Tensor] = None, workspace: Optional[_Workspace] = None) -> Tuple[Tensor, Tensor]:
    """Render faces described by ``params`` (see cwarp.data.synthetic.sample_face_params).

    Returns images float32 (B, 3, S, S) in [0, 1] and landmarks float32 (B, 5, 2)
    in image coordinates normalized like grid_sample (x right, y down, [-1, 1]).
    The pixel noise is ``noise`` (B, S, S) of unit variance, scaled per face,
    or else drawn from ``generator``. Passing the same ``workspace``
    (new_workspace()) to successive calls reuses scratch memory.
    """
    device = params["au"].device
    b = params["au"].shape[0]
    if noise is None:
        noise = torch.randn(b, image_size, image_size, generator=generator, device=device)
    if noise.shape != (b, image_size, image_size):
        raise ValueError(f"noise must be ({b}, {image_size}, {image_size}), got {tuple(noise.shape)}")
    ws = workspace if workspace is not None else _Workspace()
    images = torch.empty(b, 3, image_size, image_size, device=device)
    landmarks = torch.empty(b, 5, 2, device=device)
    for start in range(0, b, _SUBBATCH):
        part = {key: value[start:start + _SUBBATCH] for key, value in params.items()}
        stop = start + part["au"].shape[0]
        landmarks[start:stop] = _render_batch(ws, part, images[start:stop], noise[start:stop])
    return images, landmarks


def new_workspace() -> _Workspace:
    return _Workspace()
