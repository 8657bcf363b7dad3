"""The fast tar reader agrees with Python's tarfile on the formats shards come in."""

from __future__ import annotations

import io
import tarfile

import pytest

from polyfuse.data.tar import TarFormatError, iter_tar

NAMES = ["k0.jpg", "k0.json", "dir/sub/k1.txt", "k2.flac", "long/" + "x" * 150 + ".txt", "ünïcode/clé.txt"]


def _archive(format: int, mtime: float = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        folder = tarfile.TarInfo("dir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for index, name in enumerate(NAMES):
            data = bytes(range(index * 7 % 256)) * (index + 1)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("k0.link")
        link.type, link.linkname = tarfile.SYMTYPE, "k0.jpg"
        tar.addfile(link)
    return buffer.getvalue()


@pytest.mark.parametrize("format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_members_match_tarfile(format):
    raw = _archive(format, mtime=1700000000.5 if format == tarfile.PAX_FORMAT else 0)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    assert list(iter_tar(io.BytesIO(raw))) == expected and [name for name, _ in expected] == NAMES


def test_ustar_prefix_names():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        name = "a" * 90 + "/" + "b" * 60 + "/k.txt"
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert list(iter_tar(io.BytesIO(buffer.getvalue()))) == [(name, b"abc")]


def test_truncated_and_garbage_streams_raise():
    raw = _archive(tarfile.PAX_FORMAT)
    with pytest.raises(TarFormatError, match="ends after"):
        list(iter_tar(io.BytesIO(raw[:512 * 3 + 10])))
    with pytest.raises(TarFormatError, match="not a tar file"):
        list(iter_tar(io.BytesIO(b"definitely not a tar file" * 40)))
    assert list(iter_tar(io.BytesIO(b""))) == []
