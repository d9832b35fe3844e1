"""The `s3://bucket/prefix` file store: one object per content, named by its sha256, through
obstore (S3 here; the same library speaks GCS and Azure).

Credentials, the region and the endpoint come from the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL); an http:// endpoint (a
MinIO or a test server) is allowed as it is named.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from comsa_migrate.errors import ConfigurationError, FileStoreError

if TYPE_CHECKING:  # typed dicts of the library's stubs alone
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = ["ObjectStore", "parse_s3_url"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: parts of a large content in flight at once: memory stays within a few parts
_PART_SIZE = 8 << 20
_PARTS_IN_FLIGHT = 2
#: a request fails after the client's own 30 s, and is tried again only within this time
#: from its first try: the client's default, three minutes, held a run against a stalled
#: endpoint (a server stopped, a proxy that hangs), and the daemon's heartbeat and stop,
#: that long
_CONNECT_TIMEOUT = "5s"
_RETRY_LIMIT = timedelta(seconds=30)


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; ConfigurationError for anything else."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", url)
    if match is None:
        raise ConfigurationError(
            f"--file-store: {url!r} is not s3://bucket/prefix (a bucket name is 3-63 "
            "characters of a-z, 0-9, '.' and '-')"
        )
    return match.group(1), (match.group(2) or "").strip("/")


class ObjectStore:
    """Contents as objects ``<prefix>/<sha256>`` of one bucket."""

    def __init__(self, url: str) -> None:
        bucket, prefix = parse_s3_url(url)
        self.url = url
        config: S3Config = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            config["endpoint"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            config["region"] = region
        client: ClientConfig = {
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": _CONNECT_TIMEOUT,
        }
        retry: RetryConfig = {"retry_timeout": _RETRY_LIMIT}
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix or None,
                config=config,
                client_options=client,
                retry_config=retry,
            )
        except BaseError as exc:
            raise ConfigurationError(f"--file-store {url}: {_first_line(exc)}") from None

    def check(self) -> None:
        """Raise FileStoreError unless the bucket can be listed (it exists, and the
        credentials are good): a run says so at its start, before it writes anything."""
        with self._errors("cannot use the store"):
            for _ in obstore.list(self._store, chunk_size=1):
                break

    def has(self, sha256: str) -> bool:
        with self._errors(f"cannot look up {sha256}"):
            try:
                obstore.head(self._store, sha256)
            except (NotFoundError, FileNotFoundError):
                return False
        return True

    def put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        """Store a content whole or not at all: a put that fails (or whose chunks raise)
        leaves no object behind (an unfinished multipart upload is aborted). A content
        there already is written again whole, as the same bytes: callers ask has() first."""
        with self._errors(f"cannot store {sha256}"):
            if size <= _PART_SIZE:
                obstore.put(self._store, sha256, b"".join(chunks), use_multipart=False)
            else:
                obstore.put(
                    self._store,
                    sha256,
                    iter(chunks),
                    chunk_size=_PART_SIZE,
                    max_concurrency=_PARTS_IN_FLIGHT,
                )

    def read(self, sha256: str) -> Iterator[bytes]:
        with self._errors(f"cannot read {sha256}"):
            try:
                result = obstore.get(self._store, sha256)
            except (NotFoundError, FileNotFoundError):
                raise KeyError(sha256) from None
            for chunk in result.stream(min_chunk_size=1 << 20):
                yield bytes(chunk)

    def delete(self, sha256: str) -> None:
        with self._errors(f"cannot delete {sha256}"):
            obstore.delete(self._store, sha256)

    def contents(self) -> Iterator[tuple[str, int]]:
        with self._errors("cannot list the store"):
            for page in obstore.list(self._store, chunk_size=1000):
                for meta in page:
                    name = str(meta["path"]).rsplit("/", 1)[-1]
                    if _SHA256.fullmatch(name):
                        yield name, int(meta["size"])

    def stored_before(self, cutoff: datetime) -> Iterator[tuple[str, int]]:
        """The contents stored before ``cutoff`` (for gc, which spares younger ones)."""
        with self._errors("cannot list the store"):
            for page in obstore.list(self._store, chunk_size=1000):
                for meta in page:
                    name = str(meta["path"]).rsplit("/", 1)[-1]
                    if _SHA256.fullmatch(name) and meta["last_modified"] < cutoff:
                        yield name, int(meta["size"])

    def close(self) -> None:
        pass

    def _errors(self, doing: str) -> _Errors:
        return _Errors(f"file store {self.url}: {doing}")


class _Errors:
    """Turns the library's errors into one FileStoreError line."""

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        missing = isinstance(exc, NotFoundError | FileNotFoundError)
        if isinstance(exc, BaseError | OSError) and not missing:
            raise FileStoreError(f"{self.doing}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The useful line of the library's many-line message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Error" in line or "error" in line or "status" in line:
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]
