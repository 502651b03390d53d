"""Where a month's drop is: a local folder, or a prefix in S3-compatible object storage (issue #19).

Both go through the same steps (:mod:`pipeline.stage`, :mod:`pipeline.month`); a drop differs only in how
its files are listed, stat'ed and read. A local file is read where it is; an object is first copied into a
scratch folder of the run (:mod:`pipeline.scratch`), so staging always reads a local file, and every
message names the file the way the person gave it: its path, or its ``s3://`` URI.

A drop's location is never a ``pathlib.Path`` when it is a URI (``Path("s3://b/x")`` is ``s3:/b/x``):
:func:`at` turns what a person gave (``--source``, luigi.cfg [months], a run record's ``source``) into a
:class:`LocalDrop` or an :class:`S3Drop`.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import objectstore, scratch
from pipeline.config import Settings
from pipeline.errors import DropError


@dataclass(frozen=True)
class FileIdentity:
    """A drop file as it was when the run started: every work path of the month derives from this, so a
    file touched or rewritten mid-run never sends a later step to another folder (issue #20 case 1)."""

    size: int
    mtime_ns: int

    def key(self, where: str) -> str:
        """The work folder name of this file: where it is (:meth:`Drop.where`), its size and modification
        time, hashed."""
        return hashlib.sha1(f"{where}|{self.size}|{self.mtime_ns}".encode()).hexdigest()[:16]


class Drop(abc.ABC):
    """A drop's files, by name (``users.csv``): what the steps of a month need to know and read of them."""

    @abc.abstractmethod
    def __str__(self) -> str:
        """The drop as the person gave it: in messages and in the run record's ``source``."""

    @abc.abstractmethod
    def file(self, name: str) -> str:
        """One file of the drop, as messages name it."""

    @abc.abstractmethod
    def where(self, name: str) -> str:
        """One file's place, for its work folder's key (:meth:`FileIdentity.key`): the same file read from
        two spellings of one folder keeps one key."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the drop is there at all (:meth:`check` says why not)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Refuse a drop that is not there, with one message for the month."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """The CSV files the drop holds (for a message about one that is missing)."""

    @abc.abstractmethod
    def present(self, name: str) -> bool:
        """Whether the drop has something under this name (a file, or a local link however broken)."""

    def check_file(self, name: str) -> None:  # noqa: B027 - only a local folder has links to refuse
        """Refuse a file present under this name that cannot be read as one (a link out of the folder)."""

    @abc.abstractmethod
    def identity(self, name: str) -> FileIdentity | None:
        """The file's size and modification time now; None when it is not there as a regular file."""

    @abc.abstractmethod
    def sha256(self, name: str) -> str:
        """The sha256 of the file's bytes now."""

    @abc.abstractmethod
    def local_copy(self, name: str, settings: Settings | None) -> contextlib.AbstractContextManager[Path]:
        """A local file with the file's bytes, for the block: the file itself, or a copy in scratch."""

    def same_place(self, other: Drop) -> bool:
        return str(self) == str(other)


def at(source: str | Path | Drop) -> Drop:
    """The drop at ``source``: an ``s3://`` URI (a str) or a local folder."""
    if isinstance(source, Drop):
        return source
    if isinstance(source, str) and objectstore.is_uri(source.strip()):
        return S3Drop(objectstore.parse(source))
    return LocalDrop(Path(source))


def same_place(a: str | Path | Drop, b: str | Path | Drop) -> bool:
    """Whether two spellings name one drop (a folder resolved, a URI normalized)."""
    return at(a).same_place(at(b))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LocalDrop(Drop):
    """A folder on this machine; its files are read where they are."""

    folder: Path

    def __str__(self) -> str:
        return str(self.folder)

    def file(self, name: str) -> str:
        return str(self.folder / name)

    def where(self, name: str) -> str:
        return str((self.folder / name).resolve())

    def exists(self) -> bool:
        return self.folder.is_dir()

    def check(self) -> None:
        if not self.exists():
            raise DropError(
                f"{self.folder}: drop folder does not exist; pass --source DIR or map the as_of to a folder in "
                f"luigi.cfg [months]"
            )

    def names(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("*.csv"))

    def present(self, name: str) -> bool:
        path = self.folder / name
        return path.exists() or path.is_symlink()

    def check_file(self, name: str) -> None:
        path = self.folder / name
        resolved = path.resolve()
        if not resolved.is_relative_to(self.folder.resolve()):
            raise DropError(
                f"{path}: is a link to {resolved}, outside the drop folder; copy the file into the drop instead"
            )
        if not resolved.is_file():
            raise DropError(f"{path}: not a regular file")

    def identity(self, name: str) -> FileIdentity | None:
        try:
            st = (self.folder / name).stat()
        except OSError:
            return None
        return FileIdentity(st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None

    def sha256(self, name: str) -> str:
        return sha256_of(self.folder / name)

    @contextlib.contextmanager
    def local_copy(self, name: str, settings: Settings | None) -> Iterator[Path]:
        yield self.folder / name

    def same_place(self, other: Drop) -> bool:
        return isinstance(other, LocalDrop) and self.folder.resolve() == other.folder.resolve()


@dataclass(frozen=True)
class S3Drop(Drop):
    """A prefix in S3-compatible object storage (:mod:`pipeline.objectstore`); each file is copied into the
    run's scratch folder to be staged, so the bytes staged are the bytes hashed."""

    uri: objectstore.S3Uri

    def __str__(self) -> str:
        return str(self.uri)

    def file(self, name: str) -> str:
        return str(self.uri.child(name))

    def where(self, name: str) -> str:
        return self.file(name)

    def exists(self) -> bool:
        try:
            self.check()
        except DropError:
            return False
        return True

    def check(self) -> None:
        objectstore.check_prefix(self.uri, "drop")

    def names(self) -> list[str]:
        return [n for n in objectstore.names(self.uri) if n.endswith(".csv")]

    def present(self, name: str) -> bool:
        return objectstore.info(self.uri.child(name)) is not None

    def check_file(self, name: str) -> None:
        found = objectstore.info(self.uri.child(name))
        if found is not None and not found.is_file:
            raise DropError(f"{self.file(name)}: not a regular file (a prefix with objects under it)")

    def identity(self, name: str) -> FileIdentity | None:
        found = objectstore.info(self.uri.child(name))
        return FileIdentity(found.size, found.mtime_ns) if found is not None and found.is_file else None

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with objectstore.reading(self.uri.child(name)) as stream:
            while chunk := stream.read(objectstore.CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    @contextlib.contextmanager
    def local_copy(self, name: str, settings: Settings | None) -> Iterator[Path]:
        with scratch.folder(settings or Settings(), "drop") as folder:
            path = folder / name
            objectstore.download(self.uri.child(name), path)
            yield path
