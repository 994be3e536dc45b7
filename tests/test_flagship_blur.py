"""The flagship effect on real people: ``edgekit process -e blur`` with the shipped ``local-cpu`` app config
keeps a real person's face sharp and blurs the background around them.

Found by trying it as a new user would: a real portrait in a 1280x720 frame came out with the face blurred and
parts of the background sharp, because the config's segmentation model (the bundled student, trained on
synthetic composites only) did not see the person at all (mask IoU 0.12 against MediaPipe's general selfie
segmenter on such frames). The checks here are independent of the segmentation model under test: the face box
comes from MediaPipe's face detector run on the photo itself, and the assertions compare output pixels with
input pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.core.samples.photos import in_frame

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "profiles" / "configs" / "local-cpu.json"
PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def _face_box(frame: np.ndarray, photo: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The central part of the face MediaPipe's face detector finds in the photo (in frame pixels)."""
    from edgekit.apps.video.effects.face import FaceDetector

    x0, y0, w, h = photo
    faces = FaceDetector()(frame[y0:y0 + h, x0:x0 + w])
    assert faces, "the face detector found no face in the portrait"
    bx0, by0, bx1, by1 = faces[0].box
    cx, cy, half_w, half_h = (bx0 + bx1) / 2, (by0 + by1) / 2, (bx1 - bx0) * 0.3, (by1 - by0) * 0.3
    return (int(x0 + cx - half_w), int(y0 + cy - half_h), int(x0 + cx + half_w), int(y0 + cy + half_h))


@pytest.fixture(scope="module")
def blurred(mediapipe_models, tmp_path_factory):
    """(name, input frame, output frame, photo box, face box) for every reserved portrait, each processed on its
    own (one frame, so no temporal smoothing mixes two photos) with the shipped config."""
    from edgekit.apps.video.process import process
    from edgekit.core.samples import photos

    out = []
    work = tmp_path_factory.mktemp("flagship")
    for i, name in enumerate(PORTRAITS):
        photo = cv2.imread(str(photos.cache_dir() / name), cv2.IMREAD_COLOR)
        frame, box = in_frame(photo, seed=i)
        folder = work / Path(name).stem
        folder.mkdir()
        cv2.imwrite(str(folder / "frame.png"), frame)
        report = process(folder, work / f"{Path(name).stem}-out", CONFIG, ["blur"])
        assert report.frames_out == 1 and not report.deviations, report.deviations
        result = cv2.imread(str(work / f"{Path(name).stem}-out" / "000000.png"), cv2.IMREAD_COLOR)
        out.append((name, frame, result, box, _face_box(frame, box)))
    return out


@pytest.mark.slow
def test_blur_keeps_real_faces_sharp(blurred):
    """Within the face (its central part, no hair or background) the output equals the input within a few grey
    levels: the person is kept, not blurred. The student shipped before blurred these faces by 18-22 levels."""
    for name, frame, result, _, (x0, y0, x1, y1) in blurred:
        diff = np.abs(result[y0:y1, x0:x1].astype(np.int16) - frame[y0:y1, x0:x1]).mean()
        assert diff < 3.0, f"{name}: the face changed by {diff:.1f} grey levels on average" \
                           f" (blurred with the background)"


@pytest.mark.slow
def test_blur_changes_the_background_beside_the_person(blurred):
    """The textured background on both sides of the photo (no person there) is blurred: it changes a lot, and
    loses most of its fine detail (Laplacian energy)."""
    for name, frame, result, (x0, _, w, _), _ in blurred:
        sides = [(slice(None), slice(0, max(0, x0 - 16))), (slice(None), slice(x0 + w + 16, None))]
        for region in sides:
            before, after = frame[region], result[region]
            if before.shape[1] < 32:
                continue
            diff = np.abs(after.astype(np.int16) - before).mean()
            detail = [cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var() for x in (before, after)]
            assert diff > 5.0, f"{name}: the background changed by only {diff:.1f} grey levels (left sharp)"
            assert detail[1] < 0.3 * detail[0], f"{name}: the background kept {detail[1] / detail[0]:.0%} of its detail"
