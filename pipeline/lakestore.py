"""Where a lake is: a local folder, or an ``s3://bucket/prefix`` that the readers read (issue #19, item 1).

A lake on object storage is read, never written, so far: the run records are listed and read, and the
objects a published record names are read through pyarrow datasets (pyarrow's ``S3FileSystem``, from
:mod:`pipeline.objectstore`), the access measured fastest (bench/RESULTS.md). Everything that writes the
lake asks for :func:`local_root`, which refuses an s3:// lake before anything is done: the month's write
path is not built for object storage yet, and a half-written month there would be worse than none.

A lake root is a :class:`~pathlib.Path`, or an s3:// URI kept as text (a Path would make ``s3://b/x``
``s3:/b/x``), as a drop is in :class:`pipeline.config.Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import objectstore
from pipeline.errors import ConfigError, DropError

if TYPE_CHECKING:
    import pyarrow.dataset as ds

LakeRoot = Path | str  # a local folder, or an s3:// URI (text)


def refusal(root: LakeRoot) -> str:
    """The one line a writer says when the lake is on object storage."""
    return (
        f"lake_root = {root}: the month pipeline cannot write to a lake on object storage yet (issue #19); "
        f"reading it works (streamflow sql, shell and status, pipeline.lake.connect(), training_set); run "
        f"months, reports, vacuum and unpublish with a local lake_root; nothing was run"
    )


def parse_root(text: str | Path) -> LakeRoot:
    """A configured lake root: an s3:// URI, checked and kept as text, or a local folder."""
    if isinstance(text, Path) or not objectstore.is_uri(text.strip()):
        return Path(text)
    try:
        return str(objectstore.parse(text))
    except DropError as error:
        raise ConfigError(f"lake_root: {error}".replace("a drop is", "a lake is")) from None


def s3_uri(root: LakeRoot) -> objectstore.S3Uri | None:
    """The lake's URI when it is on object storage, else None."""
    return objectstore.parse(root) if isinstance(root, str) and objectstore.is_uri(root) else None


def local_root(root: LakeRoot) -> Path:
    """The lake's folder, for code that writes it; an s3:// lake is refused (:func:`refusal`)."""
    if s3_uri(root) is not None:
        raise ConfigError(refusal(root))
    return Path(root)


@dataclass(frozen=True)
class Listed:
    """An object or folder under a lake prefix: its name, and for an object its version (size, mtime)."""

    name: str
    is_file: bool
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class S3Lake:
    """A lake under an s3:// prefix, read through pyarrow's ``S3FileSystem``; paths are relative to it
    (``runs/as_of=D/x.json``), as run records name objects."""

    uri: objectstore.S3Uri

    def at(self, relative: str) -> objectstore.S3Uri:
        return self.uri.child(relative) if relative else self.uri

    def listing(self, relative: str) -> list[Listed]:
        """What is directly under ``relative`` (nothing when there is no such prefix), sorted by name."""
        from pyarrow import fs

        where = self.at(relative)
        with objectstore.said(where, objectstore.LAKE):
            found = objectstore.filesystem().get_file_info(fs.FileSelector(where.path, allow_not_found=True))
        listed = [
            Listed(f.base_name, f.type == fs.FileType.File, f.size or 0, f.mtime_ns or 0)
            for f in found
            if f.type in (fs.FileType.File, fs.FileType.Directory)
        ]
        return sorted(listed, key=lambda item: item.name)

    def read_bytes(self, relative: str) -> bytes:
        with objectstore.reading(self.at(relative), objectstore.LAKE) as stream:
            return stream.read()

    def exists(self, relative: str) -> bool:
        return exists(str(self.at(relative)))

    def dataset(self, relative: str) -> ds.Dataset:
        return dataset(self.at(relative))


def dataset(uri: objectstore.S3Uri) -> ds.Dataset:
    """The Parquet object at ``uri`` as a pyarrow dataset, for DuckDB to scan (``con.register``)."""
    import pyarrow.dataset as ds

    with objectstore.said(uri, objectstore.LAKE):
        return ds.dataset(uri.path, filesystem=objectstore.filesystem(), format="parquet")


def exists(where: Path | str) -> bool:
    """Whether the file, or the object at an s3:// URI, is there."""
    if isinstance(where, Path):
        return where.exists()
    found = objectstore.info(objectstore.parse(where))
    return found is not None and found.is_file


def locate(root: LakeRoot, relative: str) -> Path | str:
    """The file (local lake) or the s3:// URI (lake on S3) of an object a run record names."""
    uri = s3_uri(root)
    return Path(root) / relative if uri is None else str(uri.child(relative))
