"""The photographs of a screening request: a ``multipart/form-data`` body parsed in memory
(python-multipart, the parser Starlette uses) into at most two uploads, 'left' and 'right', or
one 'image'."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from edge_agent.service.errors import ApiError

EYE_FIELDS = ("left", "right", "image")
_MAX_PARTS = 2
_MAX_PART_HEADERS = 8 * 1024


@dataclass(frozen=True)
class Upload:
    """One uploaded photograph: its form field, declared Content-Type and bytes."""

    name: str
    content_type: str | None
    data: bytes


def form_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; ApiError 415/400 otherwise."""
    media, options = parse_options_header(content_type or "")
    if media.lower() != b"multipart/form-data":
        raise ApiError(
            415,
            "send the image(s) as multipart/form-data with a file field 'left', 'right' "
            f"or 'image' (got Content-Type {content_type or 'none'!r})",
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed multipart body: the Content-Type names no boundary")
    return boundary


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    name: bytes = b""
    value: bytes = b""


class _Collector:
    """python-multipart callbacks that keep each part's headers and bytes."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.header_bytes = 0

    def begin(self) -> None:
        if len(self.parts) >= _MAX_PARTS:
            raise ApiError(400, f"more than {_MAX_PARTS} parts: send 'left' and 'right' at most")
        self.parts.append(_Part())

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.parts[-1].name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.parts[-1].value += data[start:end]

    def header_end(self) -> None:
        part = self.parts[-1]
        part.headers.append((part.name.lower(), part.value))
        part.name = part.value = b""

    def data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].chunks.append(data[start:end])

    def _count(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > _MAX_PART_HEADERS:
            raise ApiError(400, "malformed multipart body: part headers are too long")


def parse_form(body: bytes, content_type: str | None) -> list[Upload]:
    """The uploads of a screening form; ApiError (400, 415) for anything else."""
    boundary = form_boundary(content_type)
    found = _Collector()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": found.begin,
            "on_part_data": found.data,
            "on_header_field": found.header_field,
            "on_header_value": found.header_value,
            "on_header_end": found.header_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart's parse errors, said plainly
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    uploads = []
    for part in found.parts:
        headers = dict(part.headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            raise ApiError(400, f"form field {name!r} must be a file upload")
        kind = headers.get(b"content-type")
        data = part.chunks[0] if len(part.chunks) == 1 else b"".join(part.chunks)
        uploads.append(Upload(name, kind.decode("latin-1") if kind else None, data))
    return check_uploads(uploads)


def check_uploads(uploads: list[Upload]) -> list[Upload]:
    """``uploads`` if they are one 'image' or a 'left' and/or a 'right'; ApiError(400)."""
    seen: set[str] = set()
    for upload in uploads:
        if upload.name not in EYE_FIELDS:
            raise ApiError(
                400, f"unexpected form field {upload.name!r}; use 'left', 'right' or 'image'"
            )
        if upload.name in seen:
            raise ApiError(400, f"form field {upload.name!r} appears more than once")
        seen.add(upload.name)
    if not uploads:
        raise ApiError(400, "no image: upload a file as 'left', 'right' or 'image'")
    if "image" in seen and len(uploads) > 1:
        raise ApiError(400, "'image' is for one eye; use 'left' and 'right' for two")
    return uploads


__all__ = ["EYE_FIELDS", "Upload", "check_uploads", "form_boundary", "parse_form"]
