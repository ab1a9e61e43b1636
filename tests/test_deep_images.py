"""Images of more than 8 bits a sample are served with their tones scaled, not clipped."""

from __future__ import annotations

import io

import falcon.testing
import pytest
from PIL import Image

from . import samples

SIZE = (256, 128)
# Columns sampled, and the grey each must show: the ramp's fraction of the way across.
COLUMNS = [0.1, 0.3, 0.5, 0.7, 0.9]


def ramp(low: float, high: float) -> list[float]:
    return samples.horizontal_ramp(SIZE[0], low, high)


@pytest.mark.parametrize(
    "upload",
    [
        pytest.param(samples.deep_png(SIZE, ramp(0, 65535), channels=1), id="png-16-bit-grey"),
        pytest.param(samples.deep_png(SIZE, ramp(0, 65535), channels=3), id="png-16-bit-rgb"),
        pytest.param(samples.deep_png(SIZE, ramp(0, 65535), channels=4), id="png-16-bit-rgba"),
        pytest.param(samples.deep_tiff(SIZE, ramp(0, 65535), bits=16), id="tiff-16-bit-grey"),
        pytest.param(
            samples.deep_tiff(SIZE, ramp(0, 65535), bits=16, channels=3), id="tiff-16-bit-rgb"
        ),
        pytest.param(
            samples.deep_tiff(SIZE, ramp(0, 65535), bits=16, channels=4), id="tiff-16-bit-rgba"
        ),
        pytest.param(samples.deep_tiff(SIZE, ramp(0, 1), bits=32, kind="float"), id="tiff-float"),
        # Integers: the range the data uses becomes black to white, signed or not.
        pytest.param(
            samples.deep_tiff(SIZE, ramp(-5e8, 1.5e9), bits=32, kind="int"), id="tiff-int32"
        ),
        pytest.param(
            samples.deep_tiff(SIZE, ramp(1e9, 4e9), bits=32, kind="uint"), id="tiff-uint32"
        ),
    ],
)
async def test_a_deep_gradient_is_served_as_the_same_gradient(
    client: falcon.testing.ASGIConductor, upload: bytes
) -> None:
    created = await client.simulate_post("/images", body=upload)
    assert created.status_code == 201, created.text
    image = created.json
    for path, tolerance in [(image["image"], 3), (image["thumbnails"][0], 6)]:
        served = Image.open(io.BytesIO((await client.simulate_get(path)).content))
        width, height = served.size
        for fraction in COLUMNS:
            expected = round(255 * fraction)
            red, green, blue = served.getpixel((round(fraction * (width - 1)), height // 2))
            assert abs(red - expected) <= tolerance, (path, fraction, red)
            assert red == green == blue or max(red, green, blue) - min(red, green, blue) <= 2


async def test_floats_outside_zero_to_one_are_clamped(
    client: falcon.testing.ASGIConductor,
) -> None:
    upload = samples.deep_tiff(SIZE, ramp(-0.5, 1.5), bits=32, kind="float")
    image = (await client.simulate_post("/images", body=upload)).json
    served = Image.open(io.BytesIO((await client.simulate_get(image["image"])).content))
    row = [served.getpixel((x, SIZE[1] // 2))[0] for x in range(SIZE[0])]
    assert max(row[:50]) <= 3  # below 0.0: black
    assert min(row[-50:]) >= 252  # above 1.0: white
    assert row[SIZE[0] // 2] == pytest.approx(128, abs=4)
