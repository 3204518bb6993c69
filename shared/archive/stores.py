"""Where archive segments are kept: a filesystem URL. ``file://`` (a local or mounted directory)
is written with a flush to disk (``fsync`` of the file and of its directory) before a segment
counts as written; any other scheme goes through fsspec (``s3://bucket/prefix`` with the extra
``s3``: credentials, region and endpoint come from the standard AWS environment variables,
``AWS_ENDPOINT_URL`` included; an object store's PUT is durable when it returns).

Every path is relative to the store's root; segment files are immutable once written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.errors import InvalidRequest, SourceLost, SourceUnavailable

#: the folder of the segments under a store's root
SEGMENTS = "segments"
#: the object stores an archive URL may name (through fsspec: s3fs, gcsfs, adlfs)
OBJECT_STORES = ("s3", "gs", "az")


class Store(Protocol):
    url: str

    def put(self, path: str, data: bytes) -> None: ...

    def get(self, path: str) -> bytes: ...

    def size(self, path: str) -> int: ...

    def delete(self, path: str) -> None: ...

    def list(self, folder: str) -> list[str]: ...


class LocalStore:
    """A directory of this machine (or one mounted on every worker)."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root

    def put(self, path: str, data: bytes) -> None:
        with _unavailable(self.url, path):
            self._put(path, data)

    def _put(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)  # a segment is whole or absent
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, path: str) -> bytes:
        with _unavailable(self.url, path):
            try:
                return (self.root / path).read_bytes()
            except FileNotFoundError:
                raise SourceLost(f"archive file {self.url}/{path} is missing") from None

    def size(self, path: str) -> int:
        with _unavailable(self.url, path):
            try:
                return (self.root / path).stat().st_size
            except FileNotFoundError:
                raise SourceLost(f"archive file {self.url}/{path} is missing") from None

    def delete(self, path: str) -> None:
        target = self.root / path
        target.unlink(missing_ok=True)
        target.with_name(f".{target.name}.partial").unlink(missing_ok=True)

    def list(self, folder: str) -> list[str]:
        base = self.root / folder
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())


class FsspecStore:
    """Any other filesystem fsspec knows (``s3://``: s3fs)."""

    def __init__(self, url: str, fs: Any, root: str) -> None:
        self.url, self.fs, self.root = url, fs, root.rstrip("/")

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}"

    def put(self, path: str, data: bytes) -> None:
        with _unavailable(self.url, path):
            self.fs.pipe_file(self._full(path), data)

    def get(self, path: str) -> bytes:
        with _unavailable(self.url, path):
            try:
                data: bytes = self.fs.cat_file(self._full(path))
            except FileNotFoundError:
                raise SourceLost(f"archive file {self.url}/{path} is missing") from None
        return data

    def size(self, path: str) -> int:
        with _unavailable(self.url, path):
            self.fs.invalidate_cache(self._full(path))  # the store's answer, not a listing's
            try:
                return int(self.fs.size(self._full(path)))
            except FileNotFoundError:
                raise SourceLost(f"archive file {self.url}/{path} is missing") from None

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._full(path))

    def list(self, folder: str) -> list[str]:
        self.fs.invalidate_cache()  # an object store's listing, not what this process cached
        try:
            found = self.fs.find(self._full(folder))
        except FileNotFoundError:
            return []
        prefix = self.root + "/"
        return sorted(str(p)[len(prefix) :] for p in found if str(p).startswith(prefix))


@contextlib.contextmanager
def _unavailable(url: str, path: str) -> Iterator[None]:
    """A store's failure other than a missing file (a full disk, a timeout, a 503): a
    ``SourceUnavailable`` naming the file, which a slice's task retries."""
    try:
        yield
    except (SourceLost, InvalidRequest):
        raise
    except Exception as exc:
        raise SourceUnavailable(
            f"archive file {url}/{path}: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None


def open_store(url: str) -> Store:
    """The store of ``url``; ``InvalidRequest`` for a URL no filesystem here can serve."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise InvalidRequest(f"archive URL {url!r}: a file URL names no host (file:///path)")
        path = Path(parts.path if parts.scheme else url)
        if not path.is_absolute():
            raise InvalidRequest(f"archive URL {url!r}: the path must be absolute")
        return LocalStore(f"file://{path}", path)
    if parts.scheme not in OBJECT_STORES:
        raise InvalidRequest(
            f"archive URL {url!r}: {parts.scheme}:// is not supported (file:///dir, or an object"
            f" store: {', '.join(s + '://' for s in OBJECT_STORES)})"
        )
    if not parts.netloc:
        raise InvalidRequest(
            f"archive URL {url!r} names no bucket ({parts.scheme}://bucket/prefix)"
        )
    import fsspec  # only for the object stores

    try:
        fs = fsspec.filesystem(parts.scheme)
    except Exception as exc:
        raise InvalidRequest(
            f"archive URL {url!r}: no filesystem for {parts.scheme}:// here"
            f" ({type(exc).__name__}: {exc}); s3:// needs the extra event-replay[s3]"
        ) from None
    root = f"{parts.netloc}{parts.path}".rstrip("/")
    return FsspecStore(url.rstrip("/"), fs, root)


def check_writable(store: Store) -> None:
    """Write, read back and delete a probe file: ``InvalidRequest`` naming the store if that
    fails (before anything is archived)."""
    probe = f"{SEGMENTS}/.probe-{os.getpid()}"
    try:
        store.put(probe, b"event-replay")
        ok = store.get(probe) == b"event-replay"
        store.delete(probe)
    except Exception as exc:
        raise InvalidRequest(
            f"archive URL {store.url} is not writable: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from None
    if not ok:
        raise InvalidRequest(f"archive URL {store.url} does not read back what was written")
