"""S3-compatible object storage, for drops (issue #19): an ``s3://bucket/prefix`` URI, the filesystem the
environment describes, and its failures said in one line each.

pyarrow's ``S3FileSystem`` is the access layer, chosen by measurement (bench/RESULTS.md, "Object storage
access layer (issue #19): measured"); DuckDB's httpfs extension cannot be installed at run time here. The
endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (MinIO, moto, any S3), the credentials
and region from the standard AWS variables or, when those are not set, from the AWS SDK's own chain
(``AWS_PROFILE``, ``~/.aws``, instance metadata). Credentials go to pyarrow and nowhere else: no message,
log line or run record holds them, and a URI that embeds them is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from pipeline.errors import DropError, LakeStateError, ObjectStoreError, PipelineError

SCHEME = "s3"
# S3's rule for bucket names (MinIO's too): 3-63 lowercase letters, digits, dots and hyphens.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
USE_THE_ENVIRONMENT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment instead"
CHUNK = 8 << 20  # bytes read at a time when an object is copied or hashed


@dataclass(frozen=True)
class S3Uri:
    """``s3://bucket/key``: ``key`` without leading or trailing slashes ("" for the bucket's root)."""

    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.key}" if self.key else f"{SCHEME}://{self.bucket}"

    def child(self, name: str) -> S3Uri:
        return S3Uri(self.bucket, f"{self.key}/{name}" if self.key else name)

    @property
    def path(self) -> str:
        """The object's path as pyarrow's filesystem names it: ``bucket/key``."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``scheme://…``) rather than a local path."""
    return URI_SCHEME.match(text) is not None


def parse(text: str) -> S3Uri:
    """An ``s3://bucket/prefix`` URI, checked. Refuses another scheme, options in the URI, and credentials
    in it (without repeating them: the message may be logged)."""
    text = text.strip()
    if "@" in text:  # a secret may hold '/', which would end the URI's netloc: any '@' is refused
        raise DropError(
            f"{without_credentials(text)}: the URI holds credentials, which are never read from a URI (they "
            f"would be logged and kept in the run record); remove them and {USE_THE_ENVIRONMENT}"
        )
    parts = urlsplit(text)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.scheme.lower() != SCHEME:
        raise DropError(
            f"{shown}: a drop is a local folder or an s3:// URI (S3-compatible object storage, the endpoint "
            f"from AWS_ENDPOINT_URL); '{parts.scheme}://' is not supported"
        )
    if parts.query or parts.fragment:
        raise DropError(
            f"{shown}: options in the URI ('?…' or '#…') are not read: the endpoint comes from AWS_ENDPOINT_URL, "
            f"the credentials and region from the AWS environment variables; pass s3://bucket/prefix"
        )
    bucket = parts.netloc
    if not BUCKET_NAME.fullmatch(bucket):
        raise DropError(
            f"{shown}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, dots and "
            f"hyphens); pass s3://bucket/prefix"
        )
    return S3Uri(bucket, "/".join(p for p in parts.path.split("/") if p))


# --- the filesystem, from the environment ---------------------------------------------------------


def endpoint_url(env: Mapping[str, str]) -> str | None:
    """The endpoint the environment names (the S3-specific variable first, as the AWS SDKs read them)."""
    return (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip() or None


def without_credentials(url: str) -> str:
    """``url`` with whatever precedes an '@' after its scheme shown as '…' (a URI or an endpoint that holds
    credentials, for a message); any other text as it is."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}://…@{rest.rsplit('@', 1)[1]}" if sep and "@" in rest else url


def filesystem_options(env: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of ``pyarrow.fs.S3FileSystem`` that the environment gives. Credentials are
    passed only when both the key id and the secret are set; otherwise the AWS SDK looks for them itself
    (``AWS_PROFILE``, ``~/.aws/credentials``, instance metadata)."""
    options: dict[str, Any] = {}
    endpoint = endpoint_url(env)
    if endpoint:
        if "@" in endpoint:
            raise ObjectStoreError(
                f"AWS_ENDPOINT_URL={without_credentials(endpoint)} holds credentials; remove them and "
                f"{USE_THE_ENVIRONMENT}"
            )
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ObjectStoreError(
                f"AWS_ENDPOINT_URL={endpoint} is not an endpoint: set it to the server's scheme, host and port, "
                f"e.g. http://localhost:9000 (or unset it for AWS S3)"
            )
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    key_id, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if bool(key_id) != bool(secret):
        given, missing = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")[:: 1 if key_id else -1]
        raise ObjectStoreError(
            f"{given} is set but {missing} is not: set both, or neither to use a profile (AWS_PROFILE)"
        )
    if key_id:
        options["access_key"], options["secret_key"] = key_id, secret
        if env.get("AWS_SESSION_TOKEN"):
            options["session_token"] = env["AWS_SESSION_TOKEN"]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options


def describe_region(env: Mapping[str, str]) -> str:
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    return f"AWS_REGION={region}" if region else "the AWS SDK's default region"


def describe(env: Mapping[str, str]) -> str:
    """Where requests go, for messages: the endpoint, or AWS S3 (never a credential)."""
    endpoint = endpoint_url(env)
    return without_credentials(endpoint) if endpoint else "AWS S3"


_filesystems: dict[tuple[int, tuple[tuple[str, Any], ...]], Any] = {}


def filesystem(env: Mapping[str, str] | None = None) -> Any:
    """The ``pyarrow.fs.S3FileSystem`` of the environment, made once per process and environment (a
    process forked by Luigi's workers makes its own: the AWS SDK's connections are not shared across a fork)."""
    from pyarrow import fs

    options = filesystem_options(os.environ if env is None else env)
    key = (os.getpid(), tuple(sorted(options.items())))
    if key not in _filesystems:
        _filesystems[key] = fs.S3FileSystem(**options)
    return _filesystems[key]


# --- what a drop needs: stat, list, read ----------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    mtime_ns: int
    is_file: bool


def info(uri: S3Uri) -> ObjectInfo | None:
    """The object at ``uri`` (a file, or a "folder": a prefix with objects under it), or None when there is
    neither. A missing bucket is None too: :func:`check_prefix` tells which."""
    from pyarrow import fs

    with said(uri):
        found = filesystem().get_file_info(uri.path)
    if found.type == fs.FileType.NotFound:
        return None
    return ObjectInfo(found.size or 0, found.mtime_ns or 0, found.type == fs.FileType.File)


def names(uri: S3Uri) -> list[str]:
    """The names of the objects directly under the prefix ``uri`` (sorted; none when there is none)."""
    from pyarrow import fs

    with said(uri):
        listed = filesystem().get_file_info(fs.FileSelector(uri.path, allow_not_found=True))
    return sorted(f.base_name for f in listed if f.type == fs.FileType.File)


def check_prefix(uri: S3Uri, what: str) -> None:
    """Refuse a bucket that does not exist, or a prefix with nothing under it, saying which."""
    where = describe(os.environ)
    if info(S3Uri(uri.bucket)) is None:
        raise DropError(
            f"{uri}: bucket '{uri.bucket}' does not exist at {where}; check the bucket in --source (or luigi.cfg "
            f"[months]) and AWS_ENDPOINT_URL"
        )
    if uri.key and info(uri) is None:
        raise DropError(
            f"{uri}: no {what} there (no object under '{uri.key}/' in bucket '{uri.bucket}' at {where}); upload "
            f"it, or pass the prefix that holds it with --source s3://bucket/prefix"
        )


@contextlib.contextmanager
def reading(uri: S3Uri, use: Use | None = None) -> Iterator[BinaryIO]:
    """The object's bytes, as a stream."""
    with said(uri, use), filesystem().open_input_stream(uri.path) as stream:
        yield stream


def download(uri: S3Uri, dest: Path) -> None:
    """Copy the object into the local file ``dest``."""
    with reading(uri) as stream, dest.open("wb") as out, said(uri):
        shutil.copyfileobj(stream, out, CHUNK)


# --- failures, said --------------------------------------------------------------------------------

# The AWS SDK's error names (in pyarrow's OSError text) that mean the credentials were refused, or that
# the server could not be reached.
REFUSED = ("INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "ACCESS_DENIED", "EXPIRED_TOKEN", "INVALID_TOKEN")
REFUSED_CODES = re.compile(r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|ExpiredToken|HTTP status 403")
UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Couldn't resolve", "Could not resolve", "Connection refused")


@contextlib.contextmanager
def said(uri: S3Uri, use: Use | None = None) -> Iterator[None]:
    """Turn pyarrow's OSError about ``uri`` into one line: what went wrong and what to do (``use``: what
    the location is for, a drop by default)."""
    use = use or DROP
    try:
        yield
    except FileNotFoundError:
        raise use.error(f"{uri}: no such object (removed meanwhile?); {use.missing}") from None
    except OSError as error:
        raise _said(uri, str(error), use) from None


@dataclass(frozen=True)
class Use:
    """What an S3 location is for, so that a failure names the setting to fix and what it left undone."""

    setting: str  # where the person gave the location
    missing: str  # what to do about an object that is gone
    outcome: str  # what the failure left
    error: type[PipelineError]  # the error of a location that is not there


DROP = Use(
    "--source (or luigi.cfg [months])", "upload it again and run the month again", "nothing was published", DropError
)
LAKE = Use(
    "LAKE_ROOT (or luigi.cfg [pipeline] lake_root)",
    "a run record names it: put it back (or copy the lake to the bucket again, runs/ last)",
    "nothing was read",
    LakeStateError,
)


def _said(uri: S3Uri, text: str, use: Use | None = None) -> PipelineError:
    use = use or DROP
    where = describe(os.environ)
    if any(code in text for code in REFUSED) or REFUSED_CODES.search(text):
        code = next((c for c in REFUSED if c in text), "ACCESS_DENIED")
        return ObjectStoreError(
            f"{uri}: {where} refused the credentials ({code}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"(or AWS_PROFILE) to a key that may list and read bucket '{uri.bucket}'; {use.outcome}"
        )
    if any(sign in text for sign in UNREACHABLE):
        return ObjectStoreError(
            f"{uri}: the object storage endpoint {where} does not answer; check AWS_ENDPOINT_URL and that the "
            f"server is running (docker compose up -d minio for the local one); {use.outcome}"
        )
    if "HTTP status 301" in text or "PermanentRedirect" in text:
        return ObjectStoreError(
            f"{uri}: bucket '{uri.bucket}' is in another region than {describe_region(os.environ)}; set AWS_REGION "
            f"to the bucket's region"
        )
    if "NO_SUCH_BUCKET" in text:
        return use.error(
            f"{uri}: bucket '{uri.bucket}' does not exist at {where}; check the bucket in {use.setting} and "
            f"AWS_ENDPOINT_URL"
        )
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return ObjectStoreError(f"{uri}: {where} failed: {first}; check AWS_ENDPOINT_URL and the bucket, then run again")
