"""Parquet cache of event tables, keyed by the trace file's content; what it serves is verified.

Where: ``$KVMTRACE_CACHE_DIR``, else ``.kvmtrace-cache/`` beside the trace when that folder is
writable, else ``~/.cache/kvmtrace``. A cache folder is used only when it is a real directory (not
a symbolic link) owned by this user and writable by no one else.

Used where it pays (``pays_for``): text captures, and trace.dat files read by the numpy engine; the
native kernels read a trace.dat about as fast as the cache loads it.

Key: the SHA-256 of the trace file's bytes, computed at every open (an edit that puts the mtime
back changes the key), plus a fingerprint of the readers' code and the cache layout.

Entry ``<key>/``: ``events.parquet``, ``by_event/<n>.parquet``, ``meta.json`` and ``seal.json``,
which holds the SHA-256 of every other file and an HMAC of them with a secret of this user
(``~/.cache/kvmtrace/secret``, mode 0600). An entry is served only when its seal verifies and
every file has its hash as it is read: a damaged table, or a cache copied along with a capture
folder or made by someone else, is removed and the trace is read again (and stored again).

Writes never follow symbolic links: everything is created relative to the cache folder's
descriptor (opened with O_NOFOLLOW), files with O_EXCL, an entry in a ``.partial-<pid>-*`` folder
renamed into place. Any error (a full disk, polars' ComputeError, a permission) leaves no partial
folder behind and gives "no cache" with a one-line note.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from kvmtrace import __version__
from kvmtrace.fileformats.formats import parse_event_format
from kvmtrace.ingest.readreport import ReadReport
from kvmtrace.ingest.tables import CaptureMeta, EventTables

CACHE_LAYOUT = 3
SEAL = "seal.json"
META = "meta.json"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def pays_for(trace_is_tracedat: bool) -> bool:
    """Whether caching a trace's tables saves time: for text captures and for trace.dat read by the
    numpy engine, yes; for trace.dat read by the native kernels, no. Measured on a 6.5 M-event
    raw_syscalls trace.dat (343 MB): the native read takes 0.76 s, opening from the cache 0.71 s
    (0.27 s of it hashing the file), and storing added 0.84 s to the first open; text reads cost
    2-10x the native read per event, and the numpy engine 3-5x."""
    if not trace_is_tracedat:
        return True
    from kvmtrace.ingest.kernels import engine

    return engine().name != "native"


class CacheError(Exception):
    """The cache cannot be used (the reason is the note shown)."""


def home_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kvmtrace"


def cache_root(trace: Path) -> Path:
    env = os.environ.get("KVMTRACE_CACHE_DIR")
    if env:
        return Path(env)
    folder = trace.resolve().parent
    beside = folder / ".kvmtrace-cache"
    if os.access(folder, os.W_OK) or (beside.is_dir() and os.access(beside, os.W_OK)):
        return beside
    return home_cache()


def content_key(trace: Path) -> str:
    """SHA-256 of the file's bytes (always computed: about 1 GB/s) and the reader fingerprint."""
    h = hashlib.sha256()
    with open(trace, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return f"{h.hexdigest()[:32]}-{reader_fingerprint()}"


@functools.cache
def reader_fingerprint() -> str:
    """Changes whenever the readers' code (or the cache layout) changes: stale caches are not used."""
    h = hashlib.blake2b(f"{CACHE_LAYOUT}-{__version__}".encode(), digest_size=6)
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "ingest", package / "fileformats"):  # the readers and the layouts they read
        for src in sorted([*folder.rglob("*.py"), *folder.rglob("*.c")]):
            h.update(src.relative_to(package).as_posix().encode() + b"\0" + src.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------ the folder and the secret
@contextmanager
def _folder(path: Path, create: bool) -> Iterator[int]:
    """A descriptor of a cache folder of ours: a real directory, owned by this user, writable by no
    one else (made, mode 0700, when ``create``)."""
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CacheError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise CacheError(f"{path}: {exc.strerror or exc} (a symbolic link is not used)") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise CacheError(f"{path} is not a folder of this user's alone")
        yield fd
    finally:
        os.close(fd)


def _secret() -> bytes:
    """This user's cache secret (made once): entries sealed with it are this user's own."""
    with _folder(home_cache(), create=True) as fd:
        try:
            new = os.open("secret", _NEW_FILE, 0o600, dir_fd=fd)
        except FileExistsError:
            return _read_secret(fd)
        except OSError as exc:
            raise CacheError(f"cannot create the cache secret: {exc.strerror or exc}") from None
        value = secrets.token_bytes(32)
        with os.fdopen(new, "wb") as fh:
            fh.write(value)
        return value


def _read_secret(folder: int) -> bytes:
    try:
        fd = os.open("secret", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError as exc:
        raise CacheError(f"cannot read the cache secret: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        value = fh.read(64)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or len(value) != 32:
        raise CacheError("the cache secret is not this user's alone")
    return value


def _seal(secret: bytes, key: str, files: dict[str, str]) -> str:
    body = json.dumps({"key": key, "files": files}, sort_keys=True).encode()
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ reading an entry
def load(trace: Path, key: str) -> tuple[EventTables | None, str | None]:
    """The tables of ``key`` when the cache holds a verified entry, and a note when it held one that
    did not verify (removed: the caller reads the trace and stores it again) or cannot be used."""
    try:
        with _folder(cache_root(trace), create=False) as root:
            return _load_entry(root, trace, key)
    except CacheError as exc:
        return None, None if "No such file" in str(exc) else f"cache not used: {exc}"
    except Exception as exc:
        return None, f"cache not used: {type(exc).__name__}: {str(exc)[:100]}"


def _load_entry(root: int, trace: Path, key: str) -> tuple[EventTables | None, str | None]:
    try:
        entry = os.open(key, _DIR_FLAGS, dir_fd=root)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise CacheError(f"entry {key}: {exc.strerror or exc}") from None
    try:
        files = _verified_files(entry, key)
    except CacheError as exc:
        _remove(root, key)
        return None, f"cache entry {key[:12]} removed: {exc}; read the trace again"
    finally:
        os.close(entry)
    return _tables(trace, files), None


def _read_file(folder: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise CacheError(f"{name} is not a regular file")
        return fh.read()


def _verified_files(entry: int, key: str) -> dict[str, bytes]:
    """Every file of the entry, each checked against the hash its seal records, the seal checked
    against this user's secret."""
    try:
        seal = json.loads(_read_file(entry, SEAL))
        files, mac = seal["files"], seal["mac"]
        if not (isinstance(files, dict) and isinstance(mac, str)) or seal.get("key") != key:
            raise CacheError("its seal names another entry")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"no readable seal ({type(exc).__name__})") from None
    if not hmac.compare_digest(mac, _seal(_secret(), key, files)):
        raise CacheError("its seal was not made by this user (a copied or foreign cache)")
    out = {}
    for name, digest in files.items():
        try:
            data = _read_file(entry, name)
        except OSError as exc:
            raise CacheError(f"{name}: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise CacheError(f"{name} does not have the content it was stored with")
        out[name] = data
    return out


def _tables(trace: Path, files: dict[str, bytes]) -> EventTables:
    doc = json.loads(files[META])
    names = ["events.parquet", *(f"by_event/{n}.parquet" for n in doc["tables"])]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        frames = list(pool.map(lambda name: pl.read_parquet(io.BytesIO(files[name])), names))
    formats = {}
    for f in doc["formats"]:
        fmt = parse_event_format(f["text"], f["system"])
        formats[fmt.name] = fmt
    meta = CaptureMeta(**{**doc["meta"], "path": str(trace)})
    return EventTables(events=frames[0], by_event=dict(zip(doc["tables"].values(), frames[1:], strict=True)),
                       formats=formats, meta=meta, report=ReadReport.from_dict(doc["report"]),
                       cmdlines={int(k): v for k, v in doc["cmdlines"].items()})


# ------------------------------------------------------------------ storing an entry
def store(trace: Path, key: str, tables: EventTables) -> str | None:
    """Store the tables under ``key``; a note when the cache cannot be written (nothing is left)."""
    try:
        secret = _secret()
        with _folder(cache_root(trace), create=True) as root:
            _store_entry(root, key, tables, secret)
            _drop_older_readers(root, key)
    except CacheError as exc:
        return f"cache not written: {exc}"
    except Exception as exc:
        return f"cache not written: {type(exc).__name__}: {str(exc)[:100]}"
    return None


def _serialised(tables: EventTables) -> dict[str, bytes]:
    ordered = sorted(tables.by_event.items())
    jobs = [("events.parquet", tables.events)] + [(f"by_event/{n}.parquet", df) for n, (_, df) in enumerate(ordered)]

    def parquet(job: tuple[str, pl.DataFrame]) -> tuple[str, bytes]:
        buf = io.BytesIO()
        job[1].write_parquet(buf, compression="lz4", statistics=False)
        return job[0], buf.getvalue()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # polars releases the GIL
        files = dict(pool.map(parquet, jobs))
    names = {str(n): name for n, (name, _df) in enumerate(ordered)}
    files[META] = json.dumps(_meta_doc(tables, names)).encode()
    return files


def _store_entry(root: int, key: str, tables: EventTables, secret: bytes) -> None:
    if _entry_exists(root, key):
        return
    files = _serialised(tables)
    _drop_partials(root)
    tmp = f".partial-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o700, dir_fd=root)
    try:
        folder = os.open(tmp, _DIR_FLAGS, dir_fd=root)
        try:
            os.mkdir("by_event", 0o700, dir_fd=folder)
            sub = os.open("by_event", _DIR_FLAGS, dir_fd=folder)
            try:
                for name, data in files.items():
                    where, leaf = (sub, name.split("/", 1)[1]) if name.startswith("by_event/") else (folder, name)
                    _write_new(where, leaf, data)
            finally:
                os.close(sub)
            digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
            seal = {"key": key, "files": digests, "mac": _seal(secret, key, digests)}
            _write_new(folder, SEAL, json.dumps(seal).encode())
        finally:
            os.close(folder)
        os.rename(tmp, key, src_dir_fd=root, dst_dir_fd=root)
    except BaseException:
        _remove(root, tmp)
        raise


def _write_new(folder: int, name: str, data: bytes) -> None:
    fd = os.open(name, _NEW_FILE, 0o600, dir_fd=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _entry_exists(root: int, key: str) -> bool:
    try:
        os.stat(key, dir_fd=root, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove(root: int, name: str) -> None:
    """Remove an entry (or a partial one) inside the cache folder, never through a link."""
    try:
        st = os.stat(name, dir_fd=root, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=root)
        else:
            os.unlink(name, dir_fd=root)
    except OSError:
        pass


def _drop_partials(root: int) -> None:
    """``.partial-<pid>-*`` folders of recorders that are gone (a kill in the middle of a store)."""
    for name in os.listdir(root):
        if name.startswith(".partial-"):
            pid = name.split("-")[1]
            if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")) or int(pid) == os.getpid():
                _remove(root, name)


def _drop_older_readers(root: int, key: str) -> None:
    """Remove the entries of the same content made by other reader code (``<content>-<reader>``):
    no reader of this version will use them, and each holds a full copy of the tables."""
    content = key.rsplit("-", 1)[0]
    for name in os.listdir(root):
        if name.startswith(content + "-") and name != key:
            _remove(root, name)


def _meta_doc(tables: EventTables, names: dict[str, str]) -> dict[str, Any]:
    return {
        "meta": tables.meta.to_dict(),
        "report": tables.report.to_dict(),
        "formats": [{"system": f.system, "text": f.source} for f in tables.formats.values()],
        "cmdlines": {str(k): v for k, v in tables.cmdlines.items()},
        "tables": names,
    }
