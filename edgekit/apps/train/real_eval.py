"""How a student does on real photos: mask IoU against MediaPipe's selfie segmenter as the reference.

The photos come from :mod:`edgekit.core.samples.photos` (reserved for evaluation); each is resized to the
model's input (both models see the same pixels). MediaPipe is a reference, not ground truth: the
numbers say how close the student gets to a production segmenter on real people.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgekit.core.parity import mask_iou


def reference_masks(size: tuple[int, int] = (256, 256)) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image HxWx3 [0,1] at ``size``, MediaPipe mask HxW bool) for every available photo."""
    from edgekit.core.samples.photos import evaluation_photos
    from edgekit.zoo.mediapipe import selfie_segmenter

    h, w = size
    seg = selfie_segmenter(landscape=(h, w) == (144, 256))
    out = []
    for name, img in evaluation_photos():
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        ref = seg.run({"image": small.transpose(2, 0, 1)[None].copy()})["mask"][0, 0] > 0.5
        out.append((name, small, ref))
    return out


def real_photo_iou(predict, refs) -> dict:
    """Mean IoU of ``predict`` (N x H x W x 3 -> N x H x W probabilities) against the reference masks."""
    if not refs:
        return {"iou": None, "n": 0, "note": "no real photos here (edgekit models fetch photos)"}
    probs = predict(np.stack([img for _, img, _ in refs]))
    per = {name: mask_iou(p > 0.5, ref) for (name, _, ref), p in zip(refs, probs)}
    return {"iou": float(np.mean(list(per.values()))), "n": len(per), "per_photo": per,
            "reference": "MediaPipe selfie_segmentation (mediapipe 0.10.14)"}
