"""csrc/warp_math.h, function by function, as @triton.jit helpers.

Same names, same formulas, same order of operations, so the Triton kernels
sample exactly like the C++ / CUDA kernels and like F.grid_sample. Where the
C++ function returns through pointers, the helper returns a tuple (value
first, then what the pointers receive). Enums become constexpr ints:
KIND 0 = translate, 1 = gaussian; PADDING 0 = zeros, 1 = border,
2 = reflection (the values of cwarp::WarpKind and cwarp::Padding).

Integer sizes are converted with `* 1.0` rather than `.to()`: Triton turns an
int argument equal to 1 into a constexpr, which has no `.to()`, and every
size here is far below 2**24, so the float32 conversion is exact and promotes
exactly to float64 when the compute type is float64.
"""
import triton
import triton.language as tl

KIND_TRANSLATE = 0
KIND_GAUSSIAN = 1
PADDING_ZEROS = 0
PADDING_BORDER = 1
PADDING_REFLECTION = 2

KINDS = {"translate": KIND_TRANSLATE, "gaussian": KIND_GAUSSIAN}
PADDINGS = {"zeros": PADDING_ZEROS, "border": PADDING_BORDER, "reflection": PADDING_REFLECTION}


@triton.jit
def round_to_uint8(v):
    """float32 sample -> uint8: clamped, then rounded half to even by adding and subtracting 2^23."""
    c = tl.where(v > 0.0, tl.where(v < 255.0, v, 255.0), 0.0)
    return ((c + 8388608.0) - 8388608.0).to(tl.uint8)


@triton.jit
def store_value(v, DTYPE: tl.constexpr):
    """A computed sample -> the output's element type DTYPE."""
    if DTYPE == tl.uint8:
        out = round_to_uint8(v)
    else:
        out = v.to(DTYPE)
    return out


@triton.jit
def base_coord(i, size, ALIGN_CORNERS: tl.constexpr, DTYPE: tl.constexpr):
    fi = i.to(DTYPE)
    fs = size * 1.0
    if ALIGN_CORNERS:
        v = -1.0 + 2.0 * fi / (fs - 1.0)
    else:
        v = (2.0 * fi + 1.0) / fs - 1.0
    return tl.where(size <= 1, 0.0, v).to(DTYPE)


@triton.jit
def outside_disc(rho2, r2):
    """r2 - rho2 <= 0: the translate weight is exactly 0 there; a NaN u is not outside (its weight is NaN)."""
    return r2 - rho2 <= 0.0


@triton.jit
def translate_weight(rho2, r2, m2):
    u = r2 - rho2
    t = u / (u + m2)
    return tl.where(outside_disc(rho2, r2), 0.0, t * t)


@triton.jit
def translate_weight_grad(rho2, r2, m2):
    """(dw/du, dw/dm2), u = r2 - rho2."""
    u = r2 - rho2
    v = u + m2
    t = u / v
    two_t_over_v2 = 2.0 * t / (v * v)
    inside = ~outside_disc(rho2, r2)
    dw_du = tl.where(inside, two_t_over_v2 * m2, 0.0)
    dw_dm2 = tl.where(inside, -two_t_over_v2 * u, 0.0)
    return dw_du, dw_dm2


@triton.jit
def nonzero_r2(r2):
    """r2 where it divides: 1 for a warp of radius 0 (whose weight and slopes are 0)."""
    return tl.where(r2 == 0.0, 1.0, r2)


@triton.jit
def gaussian_weight(rho2, r2):
    """exp(-rho2 / (2 r2)); 0 everywhere for a warp of radius 0."""
    return tl.where(r2 == 0.0, 0.0, tl.exp(-rho2 / (2.0 * r2)))


@triton.jit
def warp_weight(KIND: tl.constexpr, rho2, r2, m2):
    if KIND == 0:
        w = translate_weight(rho2, r2, m2)
    else:
        w = gaussian_weight(rho2, r2)
    return w


@triton.jit
def warp_param_grad(KIND: tl.constexpr, ex, ey, r, dx, dy, gx, gy):
    """This warp's dL/d(cx, cy, r, dx, dy) at one position (C++ adds them into grad[0..4])."""
    rho2 = ex * ex + ey * ey
    r2 = r * r
    m2 = dx * dx + dy * dy
    gw = -(gx * dx + gy * dy)
    if KIND == 0:
        dw_du, dw_dm2 = translate_weight_grad(rho2, r2, m2)
        w = translate_weight(rho2, r2, m2)
        dw_drho2 = -dw_du
        dw_dr2 = dw_du
        g_dx = 2.0 * gw * dw_dm2 * dx - w * gx
        g_dy = 2.0 * gw * dw_dm2 * dy - w * gy
    else:
        w = gaussian_weight(rho2, r2)
        r2s = nonzero_r2(r2)
        inv_2r2 = 1.0 / (2.0 * r2s)
        dw_drho2 = -w * inv_2r2
        dw_dr2 = w * rho2 * inv_2r2 / r2s
        # No m2 term: the Gaussian weight does not depend on m2.
        g_dx = -w * gx
        g_dy = -w * gy
    g_rho2 = gw * dw_drho2
    g_cx = -2.0 * g_rho2 * ex
    g_cy = -2.0 * g_rho2 * ey
    g_r = 2.0 * gw * dw_dr2 * r
    return g_cx, g_cy, g_r, g_dx, g_dy


@triton.jit
def unnormalize(coord, size, ALIGN_CORNERS: tl.constexpr):
    """(pixel coordinate, d pixel / d coord)."""
    fs = size * 1.0
    if ALIGN_CORNERS:
        scale = (fs - 1.0) / 2.0
        x = ((coord + 1.0) / 2.0) * (fs - 1.0)
    else:
        scale = fs / 2.0
        x = ((coord + 1.0) * fs - 1.0) / 2.0
    return x, scale


@triton.jit
def clip_coord(x, size):
    """Clamp to [0, size - 1]; (value, d out / d in). NaN stays NaN, with gradient 0."""
    hi = (size - 1) * 1.0
    lo_side = x <= 0.0
    hi_side = x >= hi
    out = tl.where(lo_side, 0.0, tl.where(hi_side, hi, x))
    grad = tl.where(lo_side | hi_side, 0.0, tl.where(x == x, 1.0, 0.0))
    return out, grad


@triton.jit
def reflect_coord(x, twice_low, twice_high):
    """Reflect into [twice_low / 2, twice_high / 2]; (value, sign of d out / d in).
    x - floor(x / span) * span, as csrc/warp_math.h writes it (not fmod)."""
    lo = twice_low * 0.5
    span = (twice_high - twice_low) * 0.5
    y = x - lo
    neg = y < 0.0
    sign = tl.where(neg, -1.0, 1.0)
    y = tl.where(neg, -y, y)
    flips = tl.floor(y / span)
    extra = y - flips * span
    even = tl.floor(flips * 0.5) * 2.0 == flips
    grad = tl.where(even, sign, -sign)
    out = tl.where(even, extra + lo, span - extra + lo)
    degenerate = twice_low == twice_high
    return tl.where(degenerate, 0.0, out), tl.where(degenerate, 0.0, grad)


@triton.jit
def safe_coord(x):
    """Infinities and values beyond the int range -> -100 (outside the image); NaN stays NaN."""
    limit = 2147483646.0
    return tl.where(((x > -limit) & (x < limit)) | (x != x), x, -100.0)


@triton.jit
def source_index(coord, size, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """Normalized coordinate -> padded pixel coordinate; (value, d value / d coord)."""
    x, scale = unnormalize(coord, size, ALIGN_CORNERS)
    g = 1.0
    if PADDING == 1:
        x, g = clip_coord(x, size)
    elif PADDING == 2:
        if ALIGN_CORNERS:
            x, g_reflect = reflect_coord(x, 0, 2 * (size - 1))
        else:
            x, g_reflect = reflect_coord(x, -1, 2 * size - 1)
        x, g_clip = clip_coord(x, size)
        g = g_reflect * g_clip
    safe = safe_coord(x).to(coord.dtype)
    grad = tl.where(safe == x, g * scale, 0.0).to(coord.dtype)
    return safe, grad


@triton.jit
def bilinear(ix, iy, w, h):
    """The Bilinear struct as a tuple:
    (x0, y0, wx0, wx1, wy0, wy1, vx0, vx1, vy0, vy1), x0 / y0 int32.
    A NaN coordinate: corner -100 (none inside, no cast of NaN) and NaN weights."""
    fx0 = tl.floor(ix)
    fy0 = tl.floor(iy)
    x0 = tl.where(fx0 == fx0, fx0, -100.0).to(tl.int32)
    y0 = tl.where(fy0 == fy0, fy0, -100.0).to(tl.int32)
    wx0 = fx0 + 1.0 - ix
    wx1 = ix - fx0
    wy0 = fy0 + 1.0 - iy
    wy1 = iy - fy0
    fw = w * 1.0
    fh = h * 1.0
    vx0 = (fx0 >= 0.0) & (fx0 < fw)
    vx1 = (fx0 >= -1.0) & (fx0 + 1.0 < fw)
    vy0 = (fy0 >= 0.0) & (fy0 < fh)
    vy1 = (fy0 >= -1.0) & (fy0 + 1.0 < fh)
    return x0, y0, wx0, wx1, wy0, wy1, vx0, vx1, vy0, vy1


@triton.jit
def bilinear_coord_grad(wx0, wx1, wy0, wy1, m00, m01, m10, m11, v00, v01, v10, v11):
    """(d sample / d ix, d sample / d iy); invalid corners pass 0. m00..m11: which
    corners are inside. Zero where none is (selected: a NaN position's weights are NaN)."""
    some_inside = m00 | m01 | m10 | m11
    d_ix = tl.where(some_inside, (v01 - v00) * wy0 + (v11 - v10) * wy1, 0.0)
    d_iy = tl.where(some_inside, (v10 - v00) * wx0 + (v11 - v01) * wx1, 0.0)
    return d_ix, d_iy


@triton.jit
def apply_affine(a, b, c, d, e, f, qx, qy):
    sx = a * qx + b * qy + c
    sy = d * qx + e * qy + f
    return sx, sy


# ---------------------------------------------------------------------------
# Building blocks of the Triton kernels themselves (no C++ counterpart: each
# C++ kernel writes its own loop over pixels and warps, vectorized its way).
# ---------------------------------------------------------------------------


@triton.jit
def program_pixels(pid, Ho, Wo, BLOCK: tl.constexpr, INDEX64: tl.constexpr):
    """Image (or image-view) index b (int64) of program ``pid``, its pixels' rows, columns and mask."""
    n_prog = tl.cdiv(Ho * Wo, BLOCK)
    b = pid // n_prog
    # 32-bit pixel math unless the sizes need 64 (64-bit division is slow on GPUs).
    if INDEX64:
        pix = (pid % n_prog) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    else:
        pix = (pid % n_prog).to(tl.int32) * BLOCK + tl.arange(0, BLOCK)
    live = pix < Ho * Wo
    return b, pix // Wo, pix % Wo, live


@triton.jit
def corner_masks_weights(live, wx0, wx1, wy0, wy1, vx0, vx1, vy0, vy1):
    """Load masks (live and in the image) and bilinear weights of the corners 00, 01, 10, 11 (row, column)."""
    m00 = live & vx0 & vy0
    m01 = live & vx1 & vy0
    m10 = live & vx0 & vy1
    m11 = live & vx1 & vy1
    return m00, m01, m10, m11, wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1


@triton.jit
def load_warp(prm_ptr, k):
    """Warp k of the (K, 5) rows at prm_ptr: (cx, cy, r, dx, dy)."""
    w = prm_ptr + 5 * k
    return tl.load(w), tl.load(w + 1), tl.load(w + 2), tl.load(w + 3), tl.load(w + 4)


@triton.jit
def warp_field(prm_ptr, K, px, py, KIND: tl.constexpr, SKIP_ZERO: tl.constexpr):
    """q = p - sum_k w_k(p) d_k; prm_ptr points at this image's (K, 5) warps.

    With SKIP_ZERO a warp with zero displacement contributes nothing even
    where its weight is not finite, as the C++ augment kernels skip it: that
    is how views without local warps (pos1, pos2) pad their rows.
    """
    qx = px
    qy = py
    for k in range(K):
        cx, cy, r, dx, dy = load_warp(prm_ptr, k)
        ex = px - cx
        ey = py - cy
        w = warp_weight(KIND, ex * ex + ey * ey, r * r, dx * dx + dy * dy)
        if SKIP_ZERO:
            w = tl.where((dx == 0.0) & (dy == 0.0), 0.0, w)
        qx -= w * dx
        qy -= w * dy
    return qx, qy


@triton.jit
def load_affine(th_ptr, b, HAS_THETA: tl.constexpr):
    """Image b's affine (a, bb, c, d, e, f) from th_ptr, or the identity."""
    if HAS_THETA:
        t = th_ptr + 6 * b
        a = tl.load(t)
        bb = tl.load(t + 1)
        c = tl.load(t + 2)
        d = tl.load(t + 3)
        e = tl.load(t + 4)
        f = tl.load(t + 5)
    else:
        a = 1.0
        bb = 0.0
        c = 0.0
        d = 0.0
        e = 1.0
        f = 0.0
    return a, bb, c, d, e, f


@triton.jit
def sample_setup(pid, prm_ptr, th_ptr, H, W, Ho, Wo, K,
                 KIND: tl.constexpr, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr,
                 HAS_THETA: tl.constexpr, INDEX64: tl.constexpr, SKIP_ZERO: tl.constexpr, BLOCK: tl.constexpr):
    """What every sampling kernel (warp forward and backward, view renderer)
    does first: this program's pixels, where they sample (local warps, then
    the affine, then padding) and their bilinear corners. prm_ptr holds (K, 5)
    warps per image (its dtype is the compute type), th_ptr 6 affine
    coefficients per image; SKIP_ZERO as in warp_field.

    Returns the tuples (b, i, j, live), (px, py, qx, qy), the affine
    (a, bb, c, d, e, f), d source index / d source coord (gmx, gmy), the top-left
    corner (x0, y0) (int64 with INDEX64), the axis weights (wx0, wx1, wy0, wy1),
    the corner masks (m00, m01, m10, m11) and weights (w00, w01, w10, w11)."""
    CT = prm_ptr.dtype.element_ty  # the compute type: float32, or float64 for float64 images
    b, i, j, live = program_pixels(pid, Ho, Wo, BLOCK, INDEX64)
    px = base_coord(j, Wo, ALIGN_CORNERS, CT)
    py = base_coord(i, Ho, ALIGN_CORNERS, CT)
    qx, qy = warp_field(prm_ptr + b * K * 5, K, px, py, KIND, SKIP_ZERO)
    a, bb, c, d, e, f = load_affine(th_ptr, b, HAS_THETA)
    sx, sy = apply_affine(a, bb, c, d, e, f, qx, qy)
    ix, gmx = source_index(sx, W, PADDING, ALIGN_CORNERS)
    iy, gmy = source_index(sy, H, PADDING, ALIGN_CORNERS)
    x0, y0, wx0, wx1, wy0, wy1, vx0, vx1, vy0, vy1 = bilinear(ix, iy, W, H)
    if INDEX64:
        x0 = x0.to(tl.int64)
        y0 = y0.to(tl.int64)
    m00, m01, m10, m11, w00, w01, w10, w11 = corner_masks_weights(live, wx0, wx1, wy0, wy1, vx0, vx1, vy0, vy1)
    return ((b, i, j, live), (px, py, qx, qy), (a, bb, c, d, e, f), (gmx, gmy), (x0, y0),
            (wx0, wx1, wy0, wy1), (m00, m01, m10, m11), (w00, w01, w10, w11))
