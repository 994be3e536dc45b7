"""Synthetic portrait composites with exact masks.

A person-like foreground (head, hair, neck, shoulders and torso, sometimes arms, with skin tones,
textured clothing and shading) is drawn over a textured background (gradients, furniture-like
blocks, smooth noise, stripes). The mask is the exact union of the person's shapes, so IoU
against it is exact. Everything is NumPy + OpenCV and deterministic for a seed.
"""

from __future__ import annotations

import cv2
import numpy as np

SKIN_TONES = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66],
                       [141, 85, 36], [92, 58, 36], [255, 224, 196], [234, 192, 134]], np.float32)


def _smooth_noise(rng, h, w, scale, channels=3):
    small = rng.random((max(2, h // scale), max(2, w // scale), channels)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured indoor/outdoor-looking background, float32 HxWx3 in [0, 1]."""
    c0, c1 = rng.random(3), rng.random(3)
    t = np.linspace(0, 1, h)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, w)[None, :, None]
    img = (c0 * (1 - t) + c1 * t) * np.ones((h, w, 3))
    img = img * 0.6 + 0.4 * _smooth_noise(rng, h, w, int(rng.integers(4, 32)))
    for _ in range(int(rng.integers(2, 9))):  # furniture, windows, frames
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        color = rng.random(3) * (0.5 + 0.5 * rng.random())
        cv2.rectangle(img, (x0, y0), (x1, y1), color.tolist(), -1 if rng.random() < 0.7 else int(rng.integers(1, 5)))
    if rng.random() < 0.4:  # stripes / shelves
        period = int(rng.integers(6, 30))
        stripes = (np.arange(w) // period % 2)[None, :, None] if rng.random() < 0.5 else \
            (np.arange(h) // period % 2)[:, None, None]
        img = img * (0.85 + 0.15 * stripes)
    gray = img.mean(axis=2, keepdims=True)  # real rooms are less saturated than random colours
    img = gray + (img - gray) * rng.uniform(0.3, 0.9)
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def person(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A person-like foreground: (float32 HxWx3 image, float32 HxW mask in {0, 1})."""
    mask = np.zeros((h, w), np.uint8)
    cx = w * rng.uniform(0.3, 0.7)
    scale = min(h, w) * rng.uniform(0.22, 0.42)  # head height
    head_cy = h * rng.uniform(0.2, 0.5)
    head_ax = (int(scale * rng.uniform(0.36, 0.46)), int(scale * 0.55))
    tilt = rng.uniform(-15, 15)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] / 255.0 * rng.uniform(0.8, 1.1)
    cloth = rng.random(3)
    hair = rng.random(3) * 0.35

    img = np.zeros((h, w, 3), np.float32)
    # torso: a rounded trapezoid from the shoulders to the bottom of the frame
    sh_y = head_cy + scale * 0.75
    sh_half = scale * rng.uniform(0.9, 1.4)
    torso = np.array([[cx - sh_half * 0.55, sh_y - scale * 0.05], [cx + sh_half * 0.55, sh_y - scale * 0.05],
                      [cx + sh_half, sh_y + scale * 0.4], [cx + sh_half * 1.1, h + 5],
                      [cx - sh_half * 1.1, h + 5], [cx - sh_half, sh_y + scale * 0.4]], np.int32)
    layer = np.zeros((h, w), np.uint8)
    cv2.fillPoly(layer, [torso], 1)
    for side in (-1, 1):  # rounded shoulders
        cv2.ellipse(layer, (int(cx + side * sh_half * 0.75), int(sh_y + scale * 0.25)),
                    (int(sh_half * 0.3), int(scale * 0.32)), 0, 0, 360, 1, -1)
    texture = _smooth_noise(rng, h, w, int(rng.integers(3, 12)))
    pattern = cloth * (0.7 + 0.3 * texture)
    if rng.random() < 0.3:
        stripe = (np.arange(h) // int(rng.integers(4, 12)) % 2)[:, None, None]
        pattern = pattern * (0.75 + 0.25 * stripe)
    img[layer > 0] = pattern[layer > 0]
    mask |= layer
    if rng.random() < 0.5:  # arms
        for side in (-1, 1):
            arm = np.zeros((h, w), np.uint8)
            x0 = int(cx + side * sh_half * 0.95)
            x1 = int(x0 + side * scale * rng.uniform(0.1, 0.6))
            cv2.line(arm, (x0, int(sh_y + scale * 0.3)), (x1, h), 1, max(1, int(scale * rng.uniform(0.25, 0.4))))
            img[arm > 0] = (cloth * 0.9)[None] if rng.random() < 0.7 else skin[None]
            mask |= arm
    # neck
    neck = np.zeros((h, w), np.uint8)
    neck_w = scale * 0.17
    cv2.rectangle(neck, (int(cx - neck_w), int(head_cy)), (int(cx + neck_w), int(sh_y + scale * 0.05)), 1, -1)
    img[neck > 0] = skin * 0.85
    mask |= neck
    # head with shading
    head = np.zeros((h, w), np.uint8)
    cv2.ellipse(head, (int(cx), int(head_cy)), head_ax, tilt, 0, 360, 1, -1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 - 0.25 * np.clip(((xx - cx) / max(head_ax[0], 1)) * rng.uniform(-1, 1), -1, 1)
    img[head > 0] = (skin[None] * shade[head > 0][:, None])
    mask |= head
    # hair: a cap over the top of the head, sometimes long
    hair_layer = np.zeros((h, w), np.uint8)
    cv2.ellipse(hair_layer, (int(cx), int(head_cy - head_ax[1] * 0.25)),
                (int(head_ax[0] * 1.12), int(head_ax[1] * 0.9)), tilt, 180, 360, 1, -1)
    if rng.random() < 0.4:
        cv2.ellipse(hair_layer, (int(cx), int(head_cy + head_ax[1] * 0.4)),
                    (int(head_ax[0] * 1.25), int(head_ax[1] * 1.3)), tilt, 0, 360, 1, -1)
        hair_layer &= ~head.astype(bool) | (yy < head_cy).astype(np.uint8)
    hair_tex = hair * (0.8 + 0.4 * _smooth_noise(rng, h, w, 2))
    img[hair_layer > 0] = hair_tex[hair_layer > 0]
    mask |= hair_layer
    # eyes and mouth: dark details inside the face
    for side in (-1, 1):
        cv2.circle(img, (int(cx + side * head_ax[0] * 0.4), int(head_cy)), max(1, int(scale * 0.05)),
                   (0.1, 0.08, 0.08), -1)
    mouth_axes = (max(1, int(head_ax[0] * 0.35)), max(1, int(scale * 0.04)))
    cv2.ellipse(img, (int(cx), int(head_cy + head_ax[1] * 0.5)), mouth_axes, 0, 0, 360, (0.6, 0.25, 0.25), -1)
    return np.clip(img, 0, 1), mask.astype(np.float32)


def composite(rng: np.random.Generator, h: int, w: int, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One sample: RGB float32 HxWx3 in [0, 1] and its exact HxW mask in {0, 1}."""
    bg = background(rng, h, w)
    fg, mask = person(rng, h, w)
    if rng.random() < 0.1:  # empty scenes teach the model that not every frame has a person
        mask = np.zeros_like(mask)
    m = mask[..., None]
    img = fg * m + bg * (1 - m)
    if augment:
        img = augment_photometric(rng, img)
    return img.astype(np.float32), mask


def augment_photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Colour, lighting, noise, blur and JPEG, as a camera would."""
    img = img * rng.uniform(0.6, 1.3) + rng.uniform(-0.1, 0.1)
    img = img * rng.uniform(0.85, 1.15, 3)
    h, w = img.shape[:2]
    if rng.random() < 0.5:  # side light
        ramp = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.3), w)[None, :, None]
        img = img * (ramp if rng.random() < 0.5 else ramp[:, ::-1])
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img.astype(np.float32), (k, k), 0)
    img = img + rng.normal(0, rng.uniform(0, 0.04), img.shape)
    img = np.clip(img, 0, 1).astype(np.float32)
    if rng.random() < 0.3:
        ok, enc = cv2.imencode(".jpg", (img[..., ::-1] * 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        img = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    return img


def dataset(n: int, h: int, w: int, seed: int, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` composites: images N x H x W x 3 (RGB, [0, 1]) and masks N x H x W."""
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, h, w, 3), np.float32)
    masks = np.empty((n, h, w), np.float32)
    for i in range(n):
        imgs[i], masks[i] = composite(rng, h, w, augment)
    return imgs, masks
