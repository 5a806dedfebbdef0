"""Procedural synthetic Planet chips: one 256x256 RGB image per tag set.

A chip is painted bottom-up like a map. First the ground base: rainforest canopy
when the chip is tagged ``primary``, otherwise a lighter pasture. Then one
overlay per ground tag, each with its own shape and colour signature (river,
field patchwork, roof grid, open pit, ...), then illumination jitter, then the
weather layer (haze veil or clouds) and sensor grain.

Textures come from low-resolution random noise upsampled bicubically, and
overlays are PIL-drawn masks blended through a shared texture, so nothing is a
flat colour. Signatures are sized to survive JPEG and a downscale to 128 px;
positions, sizes, colours, orientations and brightness are random. All
randomness comes from the caller's ``numpy.random.Generator``, so a chip is a
pure function of the generator state.

The working image is planar float32 (3, size, size) in [0, 1], and arithmetic
runs one channel plane at a time: broadcasting over the whole stack allocates
large temporaries, which measured several times slower than the arithmetic and
would dominate the time of a chip.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

__all__ = ["render_chip"]

_Colour = tuple[float, float, float]
_Point = tuple[float, float]

# Reference colours in [0, 1] RGB, close to Planet's visual product.
_FOREST: _Colour = (0.11, 0.22, 0.09)
_PASTURE_GREEN: _Colour = (0.44, 0.47, 0.26)
_PASTURE_BROWN: _Colour = (0.53, 0.46, 0.31)
_FIELD_PALETTE: tuple[_Colour, ...] = (
    (0.46, 0.56, 0.26),  # young crop
    (0.32, 0.45, 0.18),  # mature crop
    (0.72, 0.66, 0.42),  # stubble
    (0.50, 0.40, 0.30),  # ploughed soil
    (0.55, 0.53, 0.36),  # fallow
    (0.66, 0.62, 0.30),  # ripe grain
)
_CLEARING: tuple[_Colour, ...] = ((0.52, 0.60, 0.28), (0.66, 0.56, 0.38), (0.60, 0.62, 0.34))
_BARE_SOIL: _Colour = (0.80, 0.50, 0.36)  # laterite: redder than any field
_TRACK: _Colour = (0.76, 0.68, 0.54)
_ROAD_COLOURS: tuple[_Colour, ...] = ((0.80, 0.70, 0.56), (0.74, 0.73, 0.70), (0.84, 0.64, 0.50))
_ROOFS: tuple[_Colour, ...] = ((0.95, 0.95, 0.93), (0.80, 0.80, 0.80), (0.80, 0.36, 0.26), (0.36, 0.52, 0.80))
_WATER_DARK: _Colour = (0.06, 0.10, 0.17)
_WATER_MUDDY: _Colour = (0.22, 0.23, 0.24)
_POND_COLOURS: tuple[_Colour, ...] = (
    (0.18, 0.70, 0.66),  # turquoise: the signature, so it is the most likely
    (0.22, 0.62, 0.70),
    (0.48, 0.76, 0.56),  # milky green
    (0.74, 0.54, 0.26),  # muddy ochre
)
_MINE_SOIL: _Colour = (0.72, 0.70, 0.66)  # grey rock spoil, unlike tan farm soil
_PIT_GREYS: tuple[_Colour, ...] = ((0.68, 0.66, 0.62), (0.50, 0.48, 0.46))
_BLOOMS: tuple[_Colour, ...] = (
    (0.93, 0.62, 0.78),
    (0.95, 0.92, 0.66),
    (0.97, 0.97, 0.92),
    (0.88, 0.45, 0.66),
)
_CHAR: _Colour = (0.13, 0.12, 0.11)
_SCORCHED: _Colour = (0.33, 0.25, 0.19)
_HAZE_VEIL: _Colour = (0.80, 0.82, 0.87)
_OVERCAST: _Colour = (0.84, 0.85, 0.87)
_CLOUD: _Colour = (0.97, 0.97, 0.98)

_WEATHER = frozenset(LABELS_WEATHER)
_KNOWN = _WEATHER | frozenset(LABELS_GROUND)


@dataclass
class _Ctx:
    """What every painter needs: the generator, geometry and shared textures."""

    rng: np.random.Generator
    size: int
    scale: float  # lengths below are given for 256 px; multiply by this
    fine: np.ndarray  # zero-mean texture at 2-4 px (tree crowns), reused by all overlays
    coarse: np.ndarray  # zero-mean variation at ~100 px
    free: np.ndarray  # True where no overlay has been painted yet, to keep features apart


def render_chip(tags: Collection[str], rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Render one synthetic chip showing the visual evidence of ``tags``.

    ``tags`` must hold exactly one weather tag and any ground tags from
    ``amazonia.data.labels``; an unknown tag raises ``ValueError``. Ground tags on a
    ``cloudy`` chip are painted but end up (nearly) hidden, as in Kaggle's data.
    Returns a uint8 array (size, size, 3), RGB. Deterministic for a given rng state.
    """
    weather, ground = _split_tags(tags)
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    ctx = _make_ctx(rng, size)
    img = _ground(ctx, ground, weather)
    _illumination(img, ctx)
    _weather(img, ctx, weather)
    grain = rng.random((size, size), dtype=np.float32)
    grain -= 0.5
    grain *= 0.04
    out = np.empty((size, size, 3), dtype=np.uint8)
    for k in range(3):
        plane = img[k]
        plane += grain
        np.clip(plane, 0.0, 1.0, out=plane)
        plane *= 255.0
        plane += 0.5
        out[..., k] = plane  # truncating cast: the +0.5 above makes it round
    return out


def _split_tags(tags: Collection[str]) -> tuple[str, frozenset[str]]:
    """Validate a tag set into (its weather tag, its ground tags)."""
    if isinstance(tags, str):
        raise ValueError(f"tags must be a collection of tag names, not the string {tags!r}")
    given = set(tags)
    unknown = sorted(given - _KNOWN)
    if unknown:
        known = ", ".join(LABELS_WEATHER + LABELS_GROUND)
        raise ValueError(f"unknown tag(s) {', '.join(map(repr, unknown))}; known tags: {known}")
    weather = sorted(given & _WEATHER)
    if len(weather) != 1:
        raise ValueError(
            f"a chip needs exactly one weather tag of {', '.join(LABELS_WEATHER)}; got {weather}"
        )
    return weather[0], frozenset(given - _WEATHER)


def _make_ctx(rng: np.random.Generator, size: int) -> _Ctx:
    """Draw the textures shared by all layers of one chip."""
    return _Ctx(
        rng=rng,
        size=size,
        scale=size / 256.0,
        fine=_fbm(rng, size // 4, size, 2),
        coarse=_fbm(rng, 3, size, 3),
        free=np.ones((size, size), dtype=bool),
    )


# --- noise and drawing helpers ---------------------------------------------


def _upsample(a: np.ndarray, size: int) -> np.ndarray:
    """A 2-D array resized bicubically to size x size, as float32."""
    if a.shape == (size, size):
        return a.astype(np.float32, copy=False)
    im = Image.fromarray(a.astype(np.float32, copy=False)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.float32)


def _noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Value noise in about [-1, 1]: a cells x cells random grid upsampled bicubically."""
    cells = int(min(max(cells, 2), size))
    return (_upsample(rng.random((cells, cells), dtype=np.float32), size) - 0.5) * 2.0


def _fbm(rng: np.random.Generator, cells: int, size: int, octaves: int) -> np.ndarray:
    """Fractal sum of noise octaves, normalised to about [-1, 1].

    The octaves are summed at the finest octave's resolution and upsampled once,
    since a full-size bicubic resize is the expensive step.
    """
    work = int(min(size, cells * 2 ** (octaves - 1)))
    total = np.zeros((work, work), dtype=np.float32)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * _noise(rng, cells * 2**k, work)
        norm += amp
        amp *= 0.5
    return _upsample(total / norm, size)


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    """A colour with random brightness and slight per-channel variation."""
    c = np.asarray(colour, dtype=np.float32)
    gain = 1.0 + amount * rng.uniform(-1.0, 1.0)
    tint = 1.0 + 0.4 * amount * rng.uniform(-1.0, 1.0, 3)
    return np.clip(c * gain * tint, 0.0, 1.0).astype(np.float32)


def _jitter_many(
    rng: np.random.Generator, options: Sequence[_Colour], count: int, amount: float
) -> list[tuple[int, int, int]]:
    """``count`` jittered picks from ``options`` as PIL 8-bit tuples (vectorised _jitter)."""
    base = np.asarray(options, dtype=np.float32)[rng.integers(len(options), size=count)]
    gain = 1.0 + amount * rng.uniform(-1.0, 1.0, (count, 1))
    tint = 1.0 + 0.4 * amount * rng.uniform(-1.0, 1.0, (count, 3))
    rgb = (np.clip(base * gain * tint, 0.0, 1.0) * 255 + 0.5).astype(int)
    return [(r, g, b) for r, g, b in rgb.tolist()]


def _pick(rng: np.random.Generator, options: Sequence[_Colour]) -> _Colour:
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def _rgb255(colour: Sequence[float]) -> tuple[int, int, int]:
    """A [0, 1] colour as PIL's 8-bit tuple."""
    r, g, b = (int(min(max(float(c), 0.0), 1.0) * 255 + 0.5) for c in colour)
    return r, g, b


def _px(ctx: _Ctx, length: float) -> int:
    """A line width given at 256 px, scaled to the chip and at least one pixel."""
    return max(1, int(round(length * ctx.scale)))


_BLOB_ANGLES = np.linspace(0.0, 2 * math.pi, 28, endpoint=False)
_BLOB_ORDERS = np.arange(2, 6)[:, None]  # harmonics 2..5: lobes, not a shifted circle


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, rough: float = 0.35) -> list[_Point]:
    """An irregular, organic closed outline around (cx, cy).

    The radius wobbles by a few low-order harmonics of the angle (lobes) plus a
    little per-vertex jitter (ragged edge), so shapes never look like polygons.
    """
    amp = rng.uniform(0.0, 1.0, (4, 1)) / _BLOB_ORDERS
    phase = rng.uniform(0, 2 * math.pi, (4, 1))
    wobble = (amp * np.sin(_BLOB_ORDERS * _BLOB_ANGLES + phase)).sum(axis=0) / amp.sum()
    rad = r * (1.0 + rough * (wobble + 0.15 * rng.uniform(-1.0, 1.0, _BLOB_ANGLES.size)))
    ang = _BLOB_ANGLES + rng.uniform(0, 2 * math.pi)
    return list(zip((cx + rad * np.cos(ang)).tolist(), (cy + rad * np.sin(ang)).tolist()))


def _rotated(cx: float, cy: float, theta: float, pts: Sequence[_Point]) -> list[_Point]:
    """Points given in a (u, v) frame turned by ``theta`` and moved to (cx, cy)."""
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + u * c - v * s, cy + u * s + v * c) for u, v in pts]


def _spot(ctx: _Ctx, margin: float = 0.1, reach: float = 0.0) -> _Point:
    """A random position whose surroundings (``reach`` px) are still free ground.

    Features placed on top of each other would hide each other's evidence, so a
    few candidates are tried and the one with the most free ground around it wins.
    """
    lo, hi = margin * ctx.size, (1.0 - margin) * ctx.size
    probe = 0.7 * reach * np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])
    best, best_free = (0.0, 0.0), -1
    for x, y in ctx.rng.uniform(lo, hi, (12, 2)).tolist():
        pts = np.clip(probe + (x, y), 0, ctx.size - 1).astype(int)
        free = int(ctx.free[pts[:, 1], pts[:, 0]].sum())
        if free > best_free:
            best, best_free = (x, y), free
        if free == len(pts):
            break
    return best


def _polyline(
    draw: ImageDraw.ImageDraw, pts: Sequence[_Point], fill: int | tuple[int, int, int], width: int
) -> None:
    """A thick polyline with round joints; PIL's own joint="curve" is several times slower."""
    draw.line(list(pts), fill=fill, width=width)
    if width >= 4:
        r = (width - 1) / 2
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _layer(ctx: _Ctx, rgb: bool = False) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A blank drawing surface: an 8-bit mask, or an RGB colour sheet."""
    im = Image.new("RGB" if rgb else "L", (ctx.size, ctx.size), 0)
    return im, ImageDraw.Draw(im)


def _mix(planes: np.ndarray, alpha: np.ndarray | float, colour: Sequence[np.ndarray | float]) -> None:
    """planes <- planes + alpha * (colour - planes), per channel, in place."""
    scratch = np.empty(planes.shape[1:], dtype=np.float32)  # one temporary, reused
    for k in range(3):
        plane = planes[k]
        np.subtract(colour[k], plane, out=scratch)
        scratch *= alpha
        plane += scratch


def _paint(
    img: np.ndarray,
    ctx: _Ctx,
    mask: Image.Image,
    colour: Sequence[float] | Image.Image,
    texture: float = 0.1,
    blur: float = 0.0,
    opacity: float = 1.0,
    claims: bool = True,
) -> None:
    """Blend ``colour`` (flat, or an RGB sheet) into ``img`` through ``mask``, textured.

    Only the mask's bounding box (grown by the blur) is touched, which keeps
    small overlays cheap.
    """
    box = mask.getbbox()
    if box is None:
        return
    pad = int(math.ceil(3 * blur * ctx.scale)) + 1 if blur > 0 else 0
    x0, y0 = max(box[0] - pad, 0), max(box[1] - pad, 0)
    x1, y1 = min(box[2] + pad, ctx.size), min(box[3] + pad, ctx.size)
    crop = mask.crop((x0, y0, x1, y1))
    if blur > 0:
        crop = crop.filter(ImageFilter.GaussianBlur(blur * ctx.scale))
    alpha = np.asarray(crop, dtype=np.float32) * (opacity / 255.0)
    shade = 1.0 + texture * ctx.fine[y0:y1, x0:x1]
    if isinstance(colour, Image.Image):
        # Band by band: one (h, w, 3) float array would cost more than the blend itself.
        shade *= 1.0 / 255.0
        col = [np.asarray(band) * shade for band in colour.crop((x0, y0, x1, y1)).split()]
    else:
        col = [float(c) * shade for c in colour]
    _mix(img[:, y0:y1, x0:x1], alpha, col)
    if claims:
        ctx.free[y0:y1, x0:x1] &= alpha < 0.5


# --- ground -----------------------------------------------------------------


def _ground(ctx: _Ctx, ground: frozenset[str], weather: str) -> np.ndarray:
    """The cloud-free scene: base plus every ground tag's overlay, in map order."""
    rng = ctx.rng
    forested = "primary" in ground or (weather == "cloudy" and not ground and rng.random() < 0.7)
    img = _forest_base(ctx) if forested else _pasture_base(ctx)
    river = _river_path(ctx) if "water" in ground else None
    if "agriculture" in ground:
        _agriculture(img, ctx, forested)
    if "bare_ground" in ground:
        _bare_ground(img, ctx)
    if "cultivation" in ground:
        _cultivation(img, ctx)
    if "blow_down" in ground:
        _blow_down(img, ctx)
    if "blooming" in ground:
        _blooming(img, ctx)
    if "selective_logging" in ground:
        _selective_logging(img, ctx)
    if "conventional_mine" in ground:
        _conventional_mine(img, ctx)
    if "artisinal_mine" in ground:
        _artisinal_mine(img, ctx, river)
    if river is not None:
        _water(img, ctx, river)
    if "road" in ground:
        _road(img, ctx)
    if "habitation" in ground:
        _habitation(img, ctx)
    if "slash_burn" in ground:
        _slash_burn(img, ctx)
    return img


def _forest_base(ctx: _Ctx) -> np.ndarray:
    """Dense canopy: dark green, relief at 100 m scale, mottled by 3-8 px crowns."""
    rng, n = ctx.rng, ctx.size
    canopy = _jitter(rng, _FOREST, 0.15)
    # Squaring darkens the gaps between crowns into shadows, as seen from above.
    crowns = 1.0 - (0.5 - 0.5 * ctx.fine) ** 2
    lum = 0.5 + 0.85 * crowns + 0.22 * ctx.coarse
    # Species patches are more yellow or more blue-green, not just brighter.
    hue = ctx.coarse[::-1, ::-1]
    img = np.empty((3, n, n), dtype=np.float32)
    for k in range(3):
        np.multiply(lum, canopy[k], out=img[k])
    img[0] *= 1.0 + 0.2 * hue
    img[2] *= 1.0 - 0.15 * hue
    return img


def _pasture_base(ctx: _Ctx) -> np.ndarray:
    """Open ground without canopy: a smooth yellow-green to brown grass mosaic."""
    rng, n = ctx.rng, ctx.size
    green, brown = _jitter(rng, _PASTURE_GREEN, 0.1), _jitter(rng, _PASTURE_BROWN, 0.1)
    mix = np.clip(0.5 + 1.2 * ctx.coarse[::-1, ::-1], 0.0, 1.0)
    lum = 1.0 + 0.05 * ctx.fine + 0.06 * ctx.coarse
    img = np.empty((3, n, n), dtype=np.float32)
    for k in range(3):
        np.multiply(mix, brown[k] - green[k], out=img[k])
        img[k] += green[k]
        img[k] *= lum
    return img


def _agriculture(img: np.ndarray, ctx: _Ctx, forested: bool) -> None:
    """A patchwork of rotated rectangular fields with dark edges, over a large area."""
    rng, n, sc = ctx.rng, ctx.size, ctx.scale
    theta = rng.uniform(0.0, math.pi)
    # Strips of random width along both axes of a rotated grid give fields of varied size.
    half = 0.75 * n
    ub = np.cumsum(rng.uniform(18, 56, 40) * sc) - half
    vb = np.cumsum(rng.uniform(14, 44, 50) * sc) - half
    ub, vb = ub[ub < half + 60 * sc], vb[vb < half + 50 * sc]
    u0, v0 = np.meshgrid(ub[:-1], vb[:-1], indexing="ij")
    u1, v1 = np.meshgrid(ub[1:], vb[1:], indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    uc, vc = (u0 + u1) / 2, (v0 + v1) / 2
    fx, fy = n / 2 + uc * c - vc * s, n / 2 + uc * s + vc * c
    inside = (fx > -10 * sc) & (fx < n + 10 * sc) & (fy > -10 * sc) & (fy < n + 10 * sc)
    # Cleared fields follow a smooth random preference, so they form one estate.
    pref = _noise(rng, 3, 8)
    gx, gy = np.clip(fx / n * 8, 0, 7).astype(int), np.clip(fy / n * 8, 0, 7).astype(int)
    score = pref[gy, gx] + 0.3 * rng.uniform(-1, 1, fx.shape)
    cover = rng.uniform(0.3, 0.6) if forested else rng.uniform(0.55, 0.95)
    if not inside.any():
        return
    keep = inside & (score >= np.quantile(score[inside], 1.0 - cover))
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    hedge = _rgb255(_jitter(rng, (0.25, 0.28, 0.16), 0.1))
    width = _px(ctx, 1.2)
    kept = np.nonzero(keep)
    colours = _jitter_many(rng, _FIELD_PALETTE, len(kept[0]), 0.12)
    for i, j, fill in zip(kept[0].tolist(), kept[1].tolist(), colours):
        corners = [(u0[i, j], v0[i, j]), (u1[i, j], v0[i, j]), (u1[i, j], v1[i, j]), (u0[i, j], v1[i, j])]
        pts = _rotated(n / 2, n / 2, theta, corners)
        draw.polygon(pts, fill=255)
        sdraw.polygon(pts, fill=fill, outline=hedge, width=width)
    _paint(img, ctx, mask, sheet, texture=0.12)


def _cultivation(img: np.ndarray, ctx: _Ctx) -> None:
    """A few small ragged clearings in the forest, crops and soil with a dark rim."""
    rng, sc = ctx.rng, ctx.scale
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    cx, cy = _spot(ctx, 0.15, reach=30 * sc)
    rim = _rgb255(_jitter(rng, (0.22, 0.26, 0.14), 0.1))
    count = int(rng.integers(5, 11))
    fills = _jitter_many(rng, _CLEARING, count, 0.1)
    for fill in fills:
        x, y = cx + rng.normal(0, 32) * sc, cy + rng.normal(0, 32) * sc
        r = rng.uniform(8, 16) * sc
        pts = _blob(rng, x, y, r, rough=0.5)
        # The rim (felled brush) is the outline; a shrunken copy is the crop inside it.
        inner = 1.0 - 1.5 * sc / r
        draw.polygon(pts, fill=255)
        sdraw.polygon(pts, fill=rim)
        sdraw.polygon([(x + inner * (px - x), y + inner * (py - y)) for px, py in pts], fill=fill)
    _paint(img, ctx, mask, sheet, texture=0.3, blur=0.6)


def _bare_ground(img: np.ndarray, ctx: _Ctx) -> None:
    """One to three large smooth blobs of reddish-tan exposed soil."""
    rng = ctx.rng
    mask, draw = _layer(ctx)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(18, 40) * ctx.scale
        x, y = _spot(ctx, 0.15, reach=r)
        draw.polygon(_blob(rng, x, y, r, rough=0.3), fill=255)
    _paint(img, ctx, mask, _jitter(rng, _BARE_SOIL, 0.1), texture=0.15, blur=1.5)


def _blow_down(img: np.ndarray, ctx: _Ctx) -> None:
    """A patch of light, parallel streaks: trees felled in one direction by wind."""
    rng, sc = ctx.rng, ctx.scale
    r = rng.uniform(30, 55) * sc
    x, y = _spot(ctx, 0.2, reach=r)
    patch, pdraw = _layer(ctx)
    pdraw.polygon(_blob(rng, x, y, r, rough=0.3), fill=255)
    _paint(img, ctx, patch, _jitter(rng, (0.26, 0.36, 0.17), 0.1), texture=0.2, blur=1.0, opacity=0.75)
    streaks, sdraw = _layer(ctx)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    count = int((r / sc) ** 2 / 9)
    px, py = x + rng.uniform(-r, r, count), y + rng.uniform(-r, r, count)
    half = rng.uniform(4, 10, count) * sc
    width = _px(ctx, 1.6)
    for xa, ya, h in zip(px.tolist(), py.tolist(), half.tolist()):
        sdraw.line([(xa - h * c, ya - h * s), (xa + h * c, ya + h * s)], fill=255, width=width)
    streaks = ImageChops.darker(streaks, patch)  # keep the streaks inside the patch
    _paint(img, ctx, streaks, _jitter(rng, (0.50, 0.58, 0.32), 0.1), texture=0.1)


def _blooming(img: np.ndarray, ctx: _Ctx) -> None:
    """Clusters of bright pink or cream crowns of flowering trees."""
    rng, sc = ctx.rng, ctx.scale
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = _spot(ctx, 0.15, reach=25 * sc)
        count = int(rng.integers(20, 55))
        xs, ys = rng.normal(0, rng.uniform(14, 32) * sc, (2, count))
        rs = rng.uniform(1.8, 3.4, count) * sc
        # One species per cluster: all its crowns share a tint.
        colours = _jitter_many(rng, [_pick(rng, _BLOOMS)], count, 0.08)
        for x, y, r, fill in zip((cx + xs).tolist(), (cy + ys).tolist(), rs.tolist(), colours):
            box = [x - r, y - r, x + r, y + r]
            draw.ellipse(box, fill=255)
            sdraw.ellipse(box, fill=fill)
    _paint(img, ctx, mask, sheet, texture=0.08, blur=0.4)


def _selective_logging(img: np.ndarray, ctx: _Ctx) -> None:
    """Thin branching skid trails ending in small log-landing clearings."""
    rng, sc = ctx.rng, ctx.scale
    mask, draw = _layer(ctx)
    x, y = _spot(ctx, 0.3, reach=40 * sc)
    stack = [(x, y, rng.uniform(0, 2 * math.pi), 0)]
    width = _px(ctx, 2.5)
    segments = 0
    while stack and segments < 30:
        x0, y0, a, depth = stack.pop()
        length = rng.uniform(16, 34) * sc
        a += rng.uniform(-0.4, 0.4)
        x1, y1 = x0 + length * math.cos(a), y0 + length * math.sin(a)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=width)
        segments += 1
        r = rng.uniform(3.5, 5.5) * sc
        draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=255)
        if depth < 3:
            # The first landing always forks, so even a small network branches.
            for _ in range(int(rng.integers(1, 3)) + (depth == 0)):
                side = 1.0 if rng.random() < 0.5 else -1.0
                stack.append((x1, y1, a + side * rng.uniform(0.5, 1.2), depth + 1))
            if rng.random() < 0.6:
                stack.append((x1, y1, a, depth + 1))
    _paint(img, ctx, mask, _jitter(rng, _TRACK, 0.1), texture=0.12, blur=0.4)


def _conventional_mine(img: np.ndarray, ctx: _Ctx) -> None:
    """A large open pit: concentric grey terraces, a flat tailings pond, spoil ground."""
    rng, sc = ctx.rng, ctx.scale
    r = rng.uniform(30, 52) * sc
    cx, cy = _spot(ctx, 0.3, reach=1.5 * r)
    theta = rng.uniform(0, math.pi)
    aspect = rng.uniform(0.55, 0.9)
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    spoil = _blob(rng, cx, cy, 1.5 * r, rough=0.2)
    draw.polygon(spoil, fill=255)
    sdraw.polygon(spoil, fill=_rgb255(_jitter(rng, _MINE_SOIL, 0.08)))
    # Tailings: a flat pale rectangle beside the pit, retained by a straight dam.
    tw, th = rng.uniform(0.6, 1.0) * r, rng.uniform(0.4, 0.7) * r
    tails = _rotated(cx, cy, theta, [(1.2 * r, -th), (1.2 * r + tw, -th), (1.2 * r + tw, th), (1.2 * r, th)])
    draw.polygon(tails, fill=255)
    sdraw.polygon(tails, fill=_rgb255(_jitter(rng, (0.62, 0.62, 0.58), 0.06)))
    light, dark = (_rgb255(_jitter(rng, g, 0.06)) for g in _PIT_GREYS)
    angles = np.linspace(0, 2 * math.pi, 8, endpoint=False) + math.pi / 8
    octagon = [(math.cos(a), math.sin(a) * aspect) for a in angles.tolist()]
    steps = int(rng.integers(4, 7))
    for k in range(steps + 1):
        f = r * (1.0 - k / (steps + 0.5))
        pts = _rotated(cx, cy, theta, [(f * a, f * b) for a, b in octagon])
        floor = _rgb255(_jitter(rng, (0.22, 0.32, 0.30), 0.1))
        sdraw.polygon(pts, fill=floor if k == steps else (light if k % 2 == 0 else dark))
    _paint(img, ctx, mask, sheet, texture=0.12, blur=0.5)


def _artisinal_mine(img: np.ndarray, ctx: _Ctx, river: tuple[list[_Point], float] | None) -> None:
    """Clusters of small turquoise and muddy ponds in churned soil, by the river if any."""
    rng, sc = ctx.rng, ctx.scale
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    soil_colour = _rgb255(_jitter(rng, (0.82, 0.74, 0.56), 0.08))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = _riverside(ctx, river) if river is not None else _spot(ctx, 0.15, reach=20 * sc)
        soil = _blob(rng, cx, cy, rng.uniform(15, 24) * sc, rough=0.45)
        draw.polygon(soil, fill=255)
        sdraw.polygon(soil, fill=soil_colour)
        count = int(rng.integers(6, 12))
        dx, dy = rng.normal(0, 8, (2, count)) * sc
        rxs, rys = rng.uniform(3.5, 7.0, (2, count)) * sc
        ponds = zip((cx + dx).tolist(), (cy + dy).tolist(), rxs.tolist(), rys.tolist())
        for (x, y, rx, ry), fill in zip(ponds, _jitter_many(rng, _POND_COLOURS, count, 0.08)):
            sdraw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)
    _paint(img, ctx, mask, sheet, texture=0.1, blur=0.5)


def _riverside(ctx: _Ctx, river: tuple[list[_Point], float]) -> _Point:
    """A point just off the river bank, where alluvial gold is dug."""
    rng = ctx.rng
    pts, width = river
    last = len(pts) - 1
    for _ in range(10):
        i = int(rng.integers(1, max(last, 2)))
        if 0 < pts[i][0] < ctx.size and 0 < pts[i][1] < ctx.size:
            break
    (ax, ay), (bx, by) = pts[i - 1], pts[min(i + 1, last)]
    norm = math.hypot(bx - ax, by - ay) or 1.0
    off = (width / 2 + rng.uniform(14, 22) * ctx.scale) * (1.0 if rng.random() < 0.5 else -1.0)
    return pts[i][0] - (by - ay) / norm * off, pts[i][1] + (bx - ax) / norm * off


def _river_path(ctx: _Ctx) -> tuple[list[_Point], float]:
    """A meandering centre line crossing the chip, and the river's width."""
    rng, n, sc = ctx.rng, ctx.size, ctx.scale
    theta = rng.uniform(0, math.pi)
    t = np.linspace(-0.8 * n, 0.8 * n, 80)
    amp1, amp2 = rng.uniform(8, 40) * sc, rng.uniform(2, 12) * sc
    lam1, lam2 = rng.uniform(90, 220) * sc, rng.uniform(30, 70) * sc
    walk = np.cumsum(rng.normal(0, 1.2, t.size)) * sc
    lateral = (
        amp1 * np.sin(2 * math.pi * t / lam1 + rng.uniform(0, 2 * math.pi))
        + amp2 * np.sin(2 * math.pi * t / lam2 + rng.uniform(0, 2 * math.pi))
        + walk
        + rng.uniform(-0.25, 0.25) * n
    )
    c, s = math.cos(theta), math.sin(theta)
    xs, ys = n / 2 + t * c - lateral * s, n / 2 + t * s + lateral * c
    # Vertices far outside the chip only cost drawing time.
    near = (xs > -0.1 * n) & (xs < 1.1 * n) & (ys > -0.1 * n) & (ys < 1.1 * n)
    near[1:] |= near[:-1]
    near[:-1] |= near[1:]
    if near.sum() < 4:  # a river that only grazes the chip: keep it whole
        near[:] = True
    return list(zip(xs[near].tolist(), ys[near].tolist())), rng.uniform(6, 18) * sc


def _water(img: np.ndarray, ctx: _Ctx, river: tuple[list[_Point], float]) -> None:
    """The river as a smooth dark channel with sandy banks, sometimes plus an oxbow lake."""
    rng, sc = ctx.rng, ctx.scale
    pts, width = river
    dark, muddy = _jitter(rng, _WATER_DARK, 0.15), _jitter(rng, _WATER_MUDDY, 0.15)
    water = _rgb255(dark + rng.uniform(0, 1) * (muddy - dark))
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    # Sandy banks: a wider, half-transparent line under the channel.
    banks, channel = int(width + 4 * sc), max(2, int(width))
    _polyline(draw, pts, 150, banks)
    _polyline(sdraw, pts, _rgb255(_jitter(rng, (0.55, 0.50, 0.38), 0.1)), banks)
    _polyline(draw, pts, 255, channel)
    _polyline(sdraw, pts, water, channel)
    if rng.random() < 0.35:
        # A narrower tributary joining (or crossing near) the main channel.
        side, _ = _river_path(ctx)
        narrow = max(2, int(channel * rng.uniform(0.35, 0.7)))
        _polyline(draw, side, 255, narrow)
        _polyline(sdraw, side, water, narrow)
    if rng.random() < 0.4:
        # Oxbow lake: a cut-off meander loop away from the channel.
        r = rng.uniform(12, 28) * sc
        x, y = _spot(ctx, 0.2, reach=r)
        start = rng.uniform(0, 360)
        width = _px(ctx, rng.uniform(3, 6))
        box = [x - r, y - r, x + r, y + r]
        end = start + rng.uniform(140, 260)
        draw.arc(box, start, end, fill=255, width=width)
        sdraw.arc(box, start, end, fill=water, width=width)
    elif rng.random() < 0.3:
        r = rng.uniform(10, 22) * sc
        x, y = _spot(ctx, 0.2, reach=r)
        lake = _blob(rng, x, y, r, rough=0.25)
        draw.polygon(lake, fill=255)
        sdraw.polygon(lake, fill=water)
    _paint(img, ctx, mask, sheet, texture=0.06)


def _road(img: np.ndarray, ctx: _Ctx) -> None:
    """One or two long thin light roads crossing the chip edge to edge, with cleared verges."""
    rng, n = ctx.rng, ctx.size
    roads = []
    for _ in range(1 if rng.random() < 0.55 else 2):
        # Endpoints beyond the chip on roughly opposite sides, bent through a control point.
        a = rng.uniform(0, 2 * math.pi)
        b = a + math.pi + rng.uniform(-0.7, 0.7)
        r = 0.75 * n
        p0 = np.array([n / 2 + r * math.cos(a), n / 2 + r * math.sin(a)])
        p2 = np.array([n / 2 + r * math.cos(b), n / 2 + r * math.sin(b)])
        p1 = n / 2 + rng.uniform(-0.3, 0.3, 2) * n
        t = np.linspace(0, 1, 32)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        roads.append(([(float(x), float(y)) for x, y in curve], _px(ctx, rng.uniform(2.5, 4.0))))
    mask, draw = _layer(ctx)
    # All verges first, so a crossing road's verge does not cut the other road.
    for line, width in roads:
        _polyline(draw, line, 100, width + _px(ctx, 5.0))
    for line, width in roads:
        _polyline(draw, line, 255, width)
    _paint(img, ctx, mask, _jitter(rng, _pick(rng, _ROAD_COLOURS), 0.08), texture=0.08)


def _habitation(img: np.ndarray, ctx: _Ctx) -> None:
    """A village: a cleared block with a street grid lined by bright roofs."""
    rng, sc = ctx.rng, ctx.scale
    theta = rng.uniform(0, math.pi / 2)
    gap = rng.uniform(12, 18) * sc
    nu, nv = int(rng.integers(3, 6)), int(rng.integers(2, 5))
    hu, hv = nu * gap / 2, nv * gap / 2
    cx, cy = _spot(ctx, 0.25, reach=max(hu, hv))
    mask, draw = _layer(ctx)
    sheet, sdraw = _layer(ctx, rgb=True)
    m = 6 * sc
    lot = _rotated(
        cx, cy, theta, [(-hu - m, -hv - m), (hu + m, -hv - m), (hu + m, hv + m), (-hu - m, hv + m)]
    )
    draw.polygon(lot, fill=255)
    sdraw.polygon(lot, fill=_rgb255(_jitter(rng, (0.52, 0.52, 0.40), 0.08)))
    street = _rgb255(_jitter(rng, (0.68, 0.64, 0.58), 0.06))
    sw = _px(ctx, 2.0)
    for i in range(nu + 1):
        u = -hu + i * gap
        sdraw.line(_rotated(cx, cy, theta, [(u, -hv), (u, hv)]), fill=street, width=sw)
    for j in range(nv + 1):
        v = -hv + j * gap
        sdraw.line(_rotated(cx, cy, theta, [(-hu, v), (hu, v)]), fill=street, width=sw)
    # Four house plots per block, a few left empty.
    plots = [
        (-hu + (i + du) * gap, -hv + (j + dv) * gap)
        for i in range(nu)
        for j in range(nv)
        for du, dv in ((0.3, 0.28), (0.7, 0.28), (0.3, 0.72), (0.7, 0.72))
    ]
    built = (rng.random(len(plots)) >= 0.2).tolist()
    halves = (rng.uniform(2.2, 3.6, (len(plots), 2)) * sc).tolist()
    roofs = _jitter_many(rng, _ROOFS, len(plots), 0.06)
    for (u, v), here, (w, h), fill in zip(plots, built, halves, roofs):
        if here:
            roof = _rotated(cx, cy, theta, [(u - w, v - h), (u + w, v - h), (u + w, v + h), (u - w, v + h)])
            sdraw.polygon(roof, fill=fill)
    _paint(img, ctx, mask, sheet, texture=0.06)


def _slash_burn(img: np.ndarray, ctx: _Ctx) -> None:
    """A freshly burnt clearing: charcoal-black core, scorched rim, sometimes smoke."""
    rng, sc = ctx.rng, ctx.scale
    r = rng.uniform(14, 30) * sc
    x, y = _spot(ctx, 0.2, reach=1.35 * r)
    rim, rdraw = _layer(ctx)
    rdraw.polygon(_blob(rng, x, y, 1.35 * r, rough=0.3), fill=255)
    _paint(img, ctx, rim, _jitter(rng, _SCORCHED, 0.1), texture=0.25, blur=1.0)
    core, cdraw = _layer(ctx)
    cdraw.polygon(_blob(rng, x, y, r, rough=0.4), fill=255)
    # Strong texture: black charcoal mottled with grey ash.
    _paint(img, ctx, core, _jitter(rng, _CHAR, 0.2), texture=0.9, blur=0.6)
    if rng.random() < 0.7:
        smoke, sdraw = _layer(ctx)
        wind = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(2, 4))):
            a = wind + rng.uniform(-0.3, 0.3)
            length = rng.uniform(25, 55) * sc
            end = (x + length * math.cos(a), y + length * math.sin(a))
            sdraw.line([(x, y), end], fill=150, width=_px(ctx, rng.uniform(5, 9)))
        haze = _jitter(rng, (0.82, 0.82, 0.80), 0.05)
        _paint(img, ctx, smoke, haze, texture=0.1, blur=4.0, claims=False)


# --- light and weather ------------------------------------------------------


def _illumination(img: np.ndarray, ctx: _Ctx) -> None:
    """Sun angle, exposure and colour balance differ per scene: gain, tint, gradient."""
    rng, n = ctx.rng, ctx.size
    gain = rng.uniform(0.85, 1.15) * (1.0 + 0.04 * rng.uniform(-1, 1, 3))
    a = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(n, dtype=np.float32) / n - 0.5) * rng.uniform(0, 0.12)
    grad = 1.0 + ramp[None, :] * math.cos(a) + ramp[:, None] * math.sin(a)
    for k in range(3):
        img[k] *= grad * float(gain[k])


def _weather(img: np.ndarray, ctx: _Ctx, weather: str) -> None:
    """Overlay the weather: nothing, a uniform haze veil, scattered clouds or overcast."""
    rng = ctx.rng
    if weather == "haze":
        alpha = rng.uniform(0.38, 0.56) + 0.06 * ctx.coarse
        _mix(img, alpha, _jitter(rng, _HAZE_VEIL, 0.05).tolist())
    elif weather == "partly_cloudy":
        _clouds(img, ctx, rng.uniform(0.15, 0.5), shadows=True)
    elif weather == "cloudy":
        _mix(img, rng.uniform(0.65, 0.8), _jitter(rng, _OVERCAST, 0.05).tolist())
        _clouds(img, ctx, rng.uniform(0.9, 1.0), shadows=False)


def _clouds(img: np.ndarray, ctx: _Ctx, cover: float, shadows: bool) -> None:
    """Fluffy cumulus from thresholded fractal noise covering ``cover`` of the chip."""
    rng, n = ctx.rng, ctx.size
    density = _fbm(rng, 3, n, 4)
    # The quantile of a subsample is as good as the full one and much cheaper.
    cut = float(np.quantile(density[::4, ::4], 1.0 - cover))
    top = max(float(density.max()) - cut, 1e-3)
    lift = (density - cut) * (1.0 / top)
    # Opacity saturates soon past the edge; brightness keeps rising into puffy cores.
    alpha = np.clip(0.5 + 3.0 * lift, 0.0, 1.0)
    if shadows:
        dx, dy = (rng.uniform(6, 16, 2) * ctx.scale * rng.choice([-1, 1], 2)).astype(int).tolist()
        shadow = 1.0 - 0.45 * np.roll(alpha, (dy, dx), axis=(0, 1))
        for k in range(3):
            img[k] *= shadow
    puff = 0.8 + 0.2 * np.clip(lift, 0.0, 1.0) + 0.03 * ctx.fine
    white = rng.uniform(0.9, 1.0)
    _mix(img, alpha, [c * white * puff for c in _CLOUD])
