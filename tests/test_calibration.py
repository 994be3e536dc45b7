import cv2
import numpy as np
import pytest

from edgekit.core import calibration
from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.errors import InputError

SPEC = TensorSpec("image", (1, 3, 32, 48), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
IO = IOSpec((SPEC,), ())


def test_folder_of_images_is_resized_and_normalized(tmp_path):
    img = np.zeros((64, 96, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "b.png"), np.full((10, 10, 3), 255, np.uint8))
    s = calibration.samples(IO, tmp_path, n=8)
    assert len(s) == 2 and s[0]["image"].shape == (1, 3, 32, 48)
    np.testing.assert_allclose(s[0]["image"][0, :, 0, 0], [1.0, -1.0, -1.0])  # RGB order, (x-.5)/.5
    np.testing.assert_allclose(s[1]["image"], 1.0)


def test_npy_and_shape_check(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((5, 3, 32, 48), np.float32))
    assert len(calibration.samples(IO, good, n=3)) == 3
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 3, 16, 16), np.float32))
    with pytest.raises(InputError, match="expects"):
        calibration.samples(IO, bad)


def test_generated_are_portraits_for_rgb_inputs():
    s = calibration.samples(IO, None, n=4, seed=1)
    x = np.concatenate([d["image"] for d in s])
    assert x.shape == (4, 3, 32, 48) and -1.01 <= x.min() and x.max() <= 1.01 and x.std() > 0.1


def test_split_keeps_both_parts():
    cal, held = calibration.split(list(range(10)), 3)
    assert cal == list(range(7)) and held == [7, 8, 9]
    cal, held = calibration.split([1], 3)
    assert cal == [1] and held == []
