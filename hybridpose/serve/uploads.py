"""Uploads: a multipart body streamed into a folder the server owns, each file named by the server and
typed by its content.

Nothing a client sends names a path: a file is written as ``<n>.part`` inside the request's folder, its
name checked (a folder part, ``..`` or a control character is refused) and kept only to be echoed back,
its type decided from its first bytes (the declared content type and the name's extension are ignored),
and it is then renamed ``<n><extension of that type>`` so the library reads it as what it is. The body
is counted while it streams: past the limit the request stops with 413 and the folder is removed.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from ..data.content import sniff
from ..data.video import VideoError, is_video, probe
from ..errors import HybridPoseError

FIELD = "files"
SNIFF_BYTES = 32


class UploadError(HybridPoseError):
    """A request the server refuses before any work, with its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    name: str          # the client's file name (echoed back, never used as a path)
    path: Path         # where the server wrote it
    size: int = 0
    head: bytes = b""


@dataclass
class Received:
    folder: Path
    files: list[Upload] = field(default_factory=list)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_content_type(content_type: str | None) -> bytes:
    """The multipart boundary of a request; 415 for any other kind of body."""
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        got = content_type or "no content type"
        raise UploadError(415, f"the request is {got}; send the photos or the video as multipart/form-data, "
                               f"in the form field {FIELD!r}.")
    return options[b"boundary"]


def check_name(name: str) -> str:
    """A client's file name, refused (400) when it holds a folder part or a control character."""
    shown = name.encode("unicode_escape").decode("ascii")[:120]
    parts = name.replace("\\", "/").split("/")
    if len(parts) > 1 or name in ("", ".", "..") or any(ord(c) < 32 for c in name):
        raise UploadError(400, f"file name {shown!r} holds a folder part or a control character; send the "
                               "file's own name (the server never uses it as a path).")
    return name


async def receive(chunks: AsyncIterator[bytes], content_type: str | None, folder: Path, *, max_bytes: int,
                  max_files: int) -> Received:
    """Stream a multipart body into ``folder`` (created here; removed on any refusal)."""
    from python_multipart.multipart import MultipartParser

    boundary = check_content_type(content_type)
    folder.mkdir(mode=0o700)
    got = Received(folder)
    state = _PartState(got, max_files)
    parser = MultipartParser(boundary, state.callbacks())
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise UploadError(413, f"the upload is larger than the limit of {_mb(max_bytes)} (serve's "
                                       "--max-upload-mb); send fewer or smaller files.")
            parser.write(chunk)
            state.raise_pending()
        parser.finalize()
        state.raise_pending()
        state.close()
        if not got.files:
            raise UploadError(400, f"the request holds no file; send one or more photos or a video in the form "
                                   f"field {FIELD!r}.")
        for n, up in enumerate(got.files):
            up.path = _typed(up, n)
    except UploadError:
        state.close()
        got.remove()
        raise
    except Exception as e:  # a malformed body (python-multipart's errors): the client's fault, one line
        state.close()
        got.remove()
        raise UploadError(400, f"the multipart body cannot be read ({str(e)[:120] or type(e).__name__}).") from None
    except BaseException:  # cancelled (the upload's deadline): nothing left behind either
        state.close()
        got.remove()
        raise
    return got


class _PartState:
    """The multipart parser's callbacks: headers of the part being read, and its file."""

    def __init__(self, got: Received, max_files: int):
        self.got, self.max_files = got, max_files
        self.field, self.value, self.headers = b"", b"", {}
        self.fh = None
        self.error: UploadError | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field, "on_header_value": self.header_value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_done,
                "on_part_data": self.data, "on_part_end": self.end}

    def raise_pending(self) -> None:
        if self.error is not None:
            raise self.error

    def begin(self) -> None:
        self.headers, self.field, self.value = {}, b"", b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def headers_done(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if b"filename" not in options or self.error is not None:
            return  # a plain form field: ignored
        try:
            name = check_name(options[b"filename"].decode("utf-8", "replace"))
            if len(self.got.files) >= self.max_files:
                raise UploadError(413, f"more than {self.max_files} files in one request (serve's --max-files); "
                                       "send them in several requests.")
        except UploadError as e:
            self.error = e
            return
        up = Upload(name, self.got.folder / f"{len(self.got.files)}.part")
        self.got.files.append(up)
        self.fh = open(up.path, "xb")  # noqa: SIM115 -- closed at the part's end; a server-named file

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.fh is None:
            return
        up = self.got.files[-1]
        piece = data[start:end]
        if len(up.head) < SNIFF_BYTES:
            up.head += piece[: SNIFF_BYTES - len(up.head)]
        up.size += len(piece)
        self.fh.write(piece)

    def end(self) -> None:
        self.close()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _typed(up: Upload, n: int) -> Path:
    """The upload renamed by its content; 4xx with predict's reason for an empty or unknown file."""
    if up.size == 0:
        raise UploadError(400, f"{up.name}: unreadable: zero-byte file")
    ext = sniff(up.head)
    if ext is None:
        raise UploadError(415, f"{up.name}: unreadable: not an image (cannot identify format)")
    path = up.path.rename(up.path.with_name(f"{n}{ext}"))
    if is_video(path):  # a container with no video stream is refused now, with the reason predict gives
        try:
            probe(path)
        except VideoError as e:
            raise UploadError(422, f"{up.name}: {e.status}: {e.reason}") from None
    return path


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB"
