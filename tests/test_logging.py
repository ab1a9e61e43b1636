"""JSON logs end to end: uvicorn's lines, Python warnings and the request id from image threads."""

from __future__ import annotations

import io
import json
import struct
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from .servers import Uvicorn

pytestmark = pytest.mark.slow

IMAGE_DESCRIPTION = 270  # the TIFF tag


def tiff_with_a_tag_past_its_end() -> bytes:
    """A readable TIFF whose ImageDescription claims more bytes than the whole file holds:
    Pillow skips the tag with a UserWarning ("Tag data larger than file") and decodes the rest.
    """
    output = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(
        output, "TIFF", description="stored after the IFD, longer than four bytes"
    )
    data = bytearray(output.getvalue())
    assert data[:4] == b"II*\0"  # little endian, as Pillow writes it
    (ifd,) = struct.unpack_from("<L", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for index in range(entries):
        entry = ifd + 2 + 12 * index
        tag, _kind, _count = struct.unpack_from("<HHL", data, entry)
        if tag == IMAGE_DESCRIPTION:
            struct.pack_into("<L", data, entry + 4, 4 * len(data))  # its count of bytes
            return bytes(data)
    raise AssertionError("Pillow wrote no ImageDescription tag")


def test_tiff_sample_makes_pillow_warn() -> None:
    with pytest.warns(UserWarning, match="Tag data larger than file"):
        image = Image.open(io.BytesIO(tiff_with_a_tag_past_its_end()))
        image.load()
    assert image.size == (64, 48)


def test_json_logs_are_clean_and_warnings_from_image_threads_carry_the_request_id(
    tmp_path: Path,
) -> None:
    server = Uvicorn(
        {"ASGILOOK_LOG_FORMAT": "json", "ASGILOOK_STORAGE_PATH": str(tmp_path / "data")}
    )
    try:
        server.start()
        response = httpx.post(
            f"{server.url}/images",
            content=tiff_with_a_tag_past_its_end(),
            headers={"X-Request-ID": "some-id"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        server.stop()
        output = server.output()
    finally:
        server.close()

    lines: list[dict[str, Any]] = []
    for line in output.splitlines():
        if line.startswith("{"):
            assert "\x1b" not in line and "\\u001b" not in line, line
            lines.append(json.loads(line))
    assert lines
    assert not [line for line in lines if "color_message" in line]
    # uvicorn's own lines, some of which it logs with a coloured copy, are among them.
    assert any(line["message"].startswith("Uvicorn running on") for line in lines)
    assert any(line["message"].startswith("Started server process") for line in lines)

    # Every line says when, in UTC; the upload's access line says what was asked and answered.
    assert all(datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0) for line in lines)
    (access,) = [line for line in lines if line["message"] == "POST /images 201"]
    assert access["logger"] == "asgilook.access"
    assert access["request_id"] == "some-id"
    assert (access["method"], access["route"], access["status"]) == ("POST", "/images", 201)

    warnings = [line for line in lines if line["logger"] == "py.warnings"]
    assert warnings, output
    assert all(line["request_id"] == "some-id" for line in warnings), warnings
    assert all(line["level"] == "WARNING" for line in warnings)
    assert any("Tag data larger than file" in line["message"] for line in warnings)
    # Nothing reached stderr as bare text: every line of the output is JSON.
    assert [line for line in output.splitlines() if line.strip()] == [
        line for line in output.splitlines() if line.startswith("{")
    ]
