"""Uploads from HTML forms (multipart/form-data) and file names, besides the raw bodies."""

from __future__ import annotations

import falcon.testing
import pytest

from . import samples

BOUNDARY = "asgilook-test-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"
PHOTO = samples.jpeg((256, 192))


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field name, file name or None, content) parts."""
    body = b""
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


async def test_a_form_upload_keeps_its_file_name_everywhere(
    client: falcon.testing.ASGIConductor,
) -> None:
    body = form(("title", None, b"holidays"), ("file", "beach.jpg", PHOTO), ("tag", None, b"x"))
    created = await client.simulate_post("/images", body=body, content_type=FORM)
    assert created.status_code == 201, created.text
    assert created.json["name"] == "beach.jpg"
    assert created.json["size"] == [256, 192]
    assert (await client.simulate_get("/images")).json == [created.json]
    assert (await client.simulate_get(created.json["image"])).status_code == 200


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("C:\\Users\\ann\\Desktop\\cat.png", "cat.png"),
        ("bad\x00na\x1bme\x7f.jpg", "badname.jpg"),
        ("照片 2026.jpg", "照片 2026.jpg"),
        ("é" * 200 + ".jpg", "é" * 127),  # 255 bytes at most, whole characters
        ("..", None),
        ("", None),
    ],
)
async def test_file_names_are_made_safe(
    client: falcon.testing.ASGIConductor, given: str, kept: str | None
) -> None:
    # A raw body names its file in Content-Disposition (RFC 6266, filename* for UTF-8).
    disposition = f"attachment; filename*=UTF-8''{_percent(given)}"
    created = await client.simulate_post(
        "/images", body=PHOTO, headers={"Content-Disposition": disposition}
    )
    assert created.status_code == 201, created.text
    assert created.json["name"] == kept
    assert (await client.simulate_get("/images")).json[-1]["name"] == kept


def _percent(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


async def test_an_empty_file_input_and_text_fields_are_not_the_file(
    client: falcon.testing.ASGIConductor,
) -> None:
    body = form(("caption", None, b"a"), ("file", "kept.jpg", PHOTO), ("extra", "", b""))
    content_type = FORM.replace("multipart/form-data", "Multipart/Form-Data")  # either case
    created = await client.simulate_post("/images", body=body, content_type=content_type)
    assert created.status_code == 201, created.text
    assert created.json["name"] == "kept.jpg"


async def test_other_fields_count_against_a_limit_of_their_own(
    client: falcon.testing.ASGIConductor,
) -> None:
    fields = [(f"field{index}", None, b"x" * 60_000) for index in range(3)]
    body = form(*fields, ("file", "photo.jpg", PHOTO))
    result = await client.simulate_post("/images", body=body, content_type=FORM)
    assert result.status_code == 413, result.text
    assert (await client.simulate_get("/images")).json == []


@pytest.mark.parametrize(
    "disposition",
    ["attachment; filename*=utf-16''%ff%fe%00", "attachment; filename*=utf-8''%ff%fe"],
)
async def test_a_file_name_that_does_not_decode_is_no_name(
    client: falcon.testing.ASGIConductor, disposition: str
) -> None:
    created = await client.simulate_post(
        "/images", body=PHOTO, headers={"Content-Disposition": disposition}
    )
    assert created.status_code == 201, created.text
    assert created.json["name"] is None


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (form(("title", None, b"no file here")), "no file part"),
        (form(("a", "one.jpg", PHOTO), ("b", "two.jpg", PHOTO)), "more than one file part"),
        (b"--" + BOUNDARY.encode() + b"\r\ngarbage without an end", None),
    ],
)
async def test_bad_forms_are_400_and_store_nothing(
    client: falcon.testing.ASGIConductor, body: bytes, description: str | None
) -> None:
    result = await client.simulate_post("/images", body=body, content_type=FORM)
    assert result.status_code == 400, result.text
    assert result.headers["Content-Type"] == "application/json"
    if description is not None:
        assert description in result.json["description"]
    assert (await client.simulate_get("/images")).json == []


async def test_a_form_file_over_the_byte_limit_is_413(
    client: falcon.testing.ASGIConductor,
) -> None:
    huge = b"\xff" * (32 * 1024 * 1024 + 1)
    result = await client.simulate_post(
        "/images", body=form(("file", "x.jpg", huge)), content_type=FORM
    )
    assert result.status_code == 413
    assert (await client.simulate_get("/images")).json == []


async def test_a_form_file_that_is_not_an_image_is_415(
    client: falcon.testing.ASGIConductor,
) -> None:
    body = form(("file", "notes.txt", samples.garbage()))
    assert (await client.simulate_post("/images", body=body, content_type=FORM)).status_code == 415
