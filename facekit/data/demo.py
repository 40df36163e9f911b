"""The built-in demo dataset: procedurally drawn faces, one identity per set of traits.

Each identity is a fixed set of drawing parameters (face shape, skin and hair
tone, hair style, eye spacing and size, brows, nose, mouth, glasses, beard);
each image varies pose (shift, rotation, scale), lighting, noise and
expression.  Everything is drawn with Pillow from a seed, so the same seed
gives the same files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facekit.files import cache_dir, require_new_folder

DEMO_VERSION = 1
DEFAULT_IDENTITIES = 20
DEFAULT_IMAGES_PER_IDENTITY = 30
_COMPLETE_MARKER = ".complete"


def demo_dataset_dir(identities: int = DEFAULT_IDENTITIES,
                     images_per_identity: int = DEFAULT_IMAGES_PER_IDENTITY,
                     size: int = 112, seed: int = 0) -> Path:
    """The cached demo dataset, generated on first use."""
    name = f"demo-v{DEMO_VERSION}-{identities}x{images_per_identity}-{size}px-seed{seed}"
    folder = cache_dir() / name
    if not (folder / _COMPLETE_MARKER).exists():
        write_demo_dataset(folder, identities, images_per_identity, size, seed, cache=True)
    return folder


def write_demo_dataset(folder: str | Path, identities: int = DEFAULT_IDENTITIES,
                       images_per_identity: int = DEFAULT_IMAGES_PER_IDENTITY,
                       size: int = 112, seed: int = 0, *, cache: bool = False) -> Path:
    """Write ``folder/<identity>/<n>.jpg``; written to a temporary folder, then moved.

    ``folder`` must be new or empty: nothing already there is touched.  With
    ``cache`` (facekit's own cache folder) an incomplete earlier copy is replaced,
    and a complete one another process wrote meanwhile is kept.
    """
    folder = Path(folder)
    if not cache:
        require_new_folder(folder, "demo-data folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    try:
        for identity in range(identities):
            traits = _identity_traits(np.random.default_rng([seed, identity]))
            person = staging / f"person_{identity:03d}"
            person.mkdir()
            rng = np.random.default_rng([seed, identity, 1])
            for n in range(images_per_identity):
                draw_face(traits, rng, size).save(person / f"{n:04d}.jpg", quality=92)
        (staging / _COMPLETE_MARKER).write_text(f"demo v{DEMO_VERSION} seed {seed}\n")
        if cache and (folder / _COMPLETE_MARKER).exists():
            return folder  # another process finished first
        if cache and folder.exists():
            shutil.rmtree(folder)  # an incomplete copy facekit's cache held
        elif folder.is_dir():
            require_new_folder(folder, "demo-data folder")  # still empty: ours to fill
            folder.rmdir()
        try:
            staging.rename(folder)
        except OSError:
            if not (cache and (folder / _COMPLETE_MARKER).exists()):
                raise  # not another process's complete copy
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _tone(rng, low, high):
    return tuple(int(v) for v in rng.uniform(low, high))


def _identity_traits(rng) -> dict:
    skin_base = np.array([[255, 224, 196], [234, 192, 150], [198, 140, 100],
                          [141, 85, 60], [92, 58, 40]])[rng.integers(5)]
    return {
        "face_w": rng.uniform(0.28, 0.40), "face_h": rng.uniform(0.38, 0.50),
        "skin": tuple(int(c) for c in np.clip(skin_base + rng.normal(0, 12, 3), 0, 255)),
        "hair": tuple(int(c) for c in np.clip(np.array(
            [[20, 15, 10], [70, 45, 25], [130, 90, 50], [200, 170, 110], [150, 150, 150],
             [160, 60, 30]])[rng.integers(6)] + rng.normal(0, 10, 3), 0, 255)),
        "hair_style": int(rng.integers(4)),
        "eye_dx": rng.uniform(0.12, 0.22), "eye_y": rng.uniform(-0.10, 0.0),
        "eye_r": rng.uniform(0.025, 0.055), "iris": _tone(rng, (20, 20, 20), (120, 160, 200)),
        "brow_w": rng.uniform(0.006, 0.025), "brow_tilt": rng.uniform(-0.04, 0.04),
        "nose_len": rng.uniform(0.07, 0.17), "nose_w": rng.uniform(0.03, 0.08),
        "mouth_w": rng.uniform(0.10, 0.26), "mouth_y": rng.uniform(0.16, 0.26),
        "lips": _tone(rng, (120, 30, 40), (220, 110, 120)),
        "glasses": bool(rng.random() < 0.25), "beard": bool(rng.random() < 0.2),
    }


def draw_face(traits: dict, rng, size: int = 112) -> Image.Image:
    """One image of an identity: its traits under a random pose, light and expression."""
    scale = 3 * size  # draw large, then rotate and downsample for smooth edges
    background = _tone(rng, (40, 40, 40), (230, 230, 230))  # varies per image, not a clue
    canvas = Image.new("RGB", (scale, scale), background)
    draw = ImageDraw.Draw(canvas)
    zoom = rng.uniform(1.0, 1.2)
    cx = scale * (0.5 + rng.uniform(-0.05, 0.05))
    cy = scale * (0.52 + rng.uniform(-0.05, 0.05))

    def box(x, y, rx, ry):
        s = scale * zoom
        return [cx + (x - rx) * s, cy + (y - ry) * s, cx + (x + rx) * s, cy + (y + ry) * s]

    fw, fh = traits["face_w"], traits["face_h"]
    style = traits["hair_style"]
    if style == 1:  # long hair behind the face
        draw.rectangle(box(0, 0.1, fw + 0.06, fh), fill=traits["hair"])
    draw.ellipse(box(0, 0, fw, fh), fill=traits["skin"])
    if style in (0, 1, 3):
        draw.chord(box(0, -fh * 0.45, fw * 1.02, fh * 0.62), 180, 360, fill=traits["hair"])
    if style == 3:  # fringe
        draw.rectangle(box(0, -fh * 0.62, fw * 0.8, 0.06), fill=traits["hair"])
    if traits["beard"]:
        draw.chord(box(0, fh * 0.35, fw * 0.9, fh * 0.55), 0, 180, fill=traits["hair"])

    openness = rng.uniform(0.4, 1.0)
    for side in (-1, 1):
        ex, ey, er = side * traits["eye_dx"], traits["eye_y"], traits["eye_r"]
        draw.ellipse(box(ex, ey, er * 1.6, er * openness), fill=(250, 250, 250))
        draw.ellipse(box(ex, ey, er * 0.7, er * 0.7 * openness), fill=traits["iris"])
        brow_y = ey - er * 1.8
        tilt = side * traits["brow_tilt"]
        draw.line([tuple(box(ex - er * 1.6, brow_y + tilt, 0, 0)[:2]),
                   tuple(box(ex + er * 1.6, brow_y - tilt, 0, 0)[:2])],
                  fill=traits["hair"], width=max(1, int(traits["brow_w"] * scale * zoom)))
        if traits["glasses"]:
            draw.ellipse(box(ex, ey, er * 2.2, er * 2.0), outline=(30, 30, 30),
                         width=max(1, int(0.01 * scale)))

    nl, nw = traits["nose_len"], traits["nose_w"]
    shade = tuple(int(c * 0.75) for c in traits["skin"])
    draw.polygon([tuple(box(0, ey + 0.02, 0, 0)[:2]), tuple(box(-nw, ey + 0.02 + nl, 0, 0)[:2]),
                  tuple(box(nw, ey + 0.02 + nl, 0, 0)[:2])], fill=shade)

    mw, my = traits["mouth_w"], traits["mouth_y"]
    smile = rng.uniform(-0.04, 0.06)  # expression: frown to smile
    mouth = box(0, my - smile / 2, mw, abs(smile) + 0.02)
    start, end = (0, 180) if smile >= 0 else (180, 360)
    draw.chord(mouth, start, end, fill=traits["lips"])

    image = canvas.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR,
                          center=(cx, cy), fillcolor=background)
    image = image.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(0.3))
    pixels = np.asarray(image, dtype=np.float32)
    ramp = np.linspace(-1, 1, size)[None, :, None] * rng.uniform(-30, 30)  # side light
    pixels = pixels * rng.uniform(0.7, 1.25) + ramp + rng.normal(0, rng.uniform(1, 8),
                                                                 pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
