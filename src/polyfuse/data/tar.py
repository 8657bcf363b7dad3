"""A fast streaming reader of the tar subset WebDataset shards use.

Python's :mod:`tarfile` parses each 512-byte header in pure Python with many checks, which costs
more than decoding a small image. Shards only hold regular files, so this reader parses the ustar
header fields it needs (name + prefix, size, type, checksum) and understands the two ways long or
non-ASCII names are stored: PAX extended headers (``x``, written by Python's tarfile and by
WebDataset's writer) and GNU long names (``L``). Global PAX headers, directories and links are
skipped. Anything else that is not a regular file is skipped too.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

BLOCK = 512
REGULAR = (b"0", b"\x00", b"7")


class TarFormatError(ValueError):
    """The stream is not a tar archive, or it is truncated or corrupt (bad header checksum)."""


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\x00", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"bad header field {bytes(field)!r} (not a tar file, or corrupt)") from None


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a PAX extended header (``"<len> path=<name>\\n"`` records)."""
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            break
        length = int(data[position:space])
        key, _, value = data[space + 1: position + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
        position += length
    return None


def iter_tar(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, bytes)`` of every regular file, in archive order.

    Raises :class:`TarFormatError` on a bad header or a stream that ends inside a member.
    """
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if not header or header == b"\x00" * BLOCK:  # end of archive (or of a concatenated stream)
            return
        if len(header) < BLOCK:
            raise TarFormatError(f"truncated header ({len(header)} of {BLOCK} bytes)")
        stored = _number(header[148:156])
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise TarFormatError("bad header checksum (not a tar file, or corrupt)")
        size, kind = _number(header[124:136]), header[156:157]
        data = stream.read(size)
        if len(data) < size:
            raise TarFormatError(f"member ends after {len(data)} of {size} bytes")
        stream.read(-size % BLOCK)
        if kind == b"x":
            long_name = _pax_path(data) or long_name
            continue
        if kind == b"L":
            long_name = data.rstrip(b"\x00").decode("utf-8")
            continue
        name = long_name
        long_name = None
        if kind not in REGULAR:
            continue
        if name is None:
            name = header[:100].split(b"\x00", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\x00", 1)[0] if header[257:262] == b"ustar" else b""
            if prefix:
                name = f"{prefix.decode('utf-8')}/{name}"
        yield name, data
