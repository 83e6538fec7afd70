"""A content-addressed store of files under LEDGER_HOME/objects/sha256/ab/cdef…, and local-file pins made with it.

Why it exists: a `file://` channel is a moving reference (anyone can edit the files), so a local job could not be
run again identically. Pinning a channel copies each file into this store under its sha256 and records a manifest
(DataChannelPin-shaped); staging restores the channel from the store by that manifest, even after the original
files changed. Identical bytes are stored once.

An object is written once and never changed. Its mtime is set to 0 when it is stored: a job that writes into a
staged (hard-linked) input would change it, and `has()` then treats the object as damaged rather than trusting it.

Also here: `tree_sha256` (the digest of an artifact's contents: paths, file modes, bytes and symlink targets, equal
for archives of the same files with other timestamps) and `pack_tar_gz` (a deterministic tar.gz), which the
backends use for model artifacts and source code.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ledger.errors import NoSpace, NotFound, UsageError
from ledger.record import Gap, canonical_bytes, iter_canonical_list

CAS_PREFIX = "ledger-cas://sha256/"
_CHUNK = 8 << 20  # 8 MiB reads: large enough that hashing runs at OpenSSL speed


# --- digests (pure but for reading the files they are given) ---------------------------------------------------


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


# Modes as git records them: what an archive keeps faithfully everywhere (pack_tar_gz writes 0644 or 0755).
FILE_MODE, EXECUTABLE_MODE, SYMLINK_MODE = "100644", "100755", "120000"


def build_tree_digest(entries: dict[str, str | tuple[str, str]]) -> str:
    """sha256 of the canonical JSON of [[path, mode, sha256], ...] sorted by path, from {relative path: entry}.

    An entry is (mode, sha256): mode 100644 a file, 100755 an executable file, 120000 a symlink, whose sha256 is
    of its target's text. A bare sha256 is a plain file (an S3 object has no mode). Directories do not count.
    """
    listing = []
    for path in sorted(entries):
        entry = entries[path]
        mode, sha = (FILE_MODE, entry) if isinstance(entry, str) else entry
        listing.append([path, mode, sha])
    return hashlib.sha256(canonical_bytes(listing)).hexdigest()


def tree_entries(path_or_tar: str | Path) -> dict[str, tuple[str, str]]:
    """{relative path: (mode, sha256)} of a directory's or a tar archive's files and symlinks (build_tree_digest).

    Symlinks are recorded as links (by target), not followed; a hard link in an archive is the file it names.
    """
    path = Path(path_or_tar)
    entries: dict[str, tuple[str, str]] = {}
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in filenames + dirnames:
                item = Path(dirpath, name)
                relative = item.relative_to(path).as_posix()
                if item.is_symlink():
                    entries[relative] = (SYMLINK_MODE, hashlib.sha256(os.fsencode(os.readlink(item))).hexdigest())
                elif name in filenames and item.is_file():
                    executable = item.stat().st_mode & stat.S_IXUSR
                    entries[relative] = (EXECUTABLE_MODE if executable else FILE_MODE, sha256_file(item))
        return entries
    with open(path, "rb") as handle:
        return _tar_entries(handle)


def _tar_entries(stream) -> dict[str, tuple[str, str]]:
    """tree_entries of a tar (any compression) read once, front to back: a stream is enough."""
    entries: dict[str, tuple[str, str]] = {}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = _normal_member_name(member.name)
            mode = EXECUTABLE_MODE if member.mode & stat.S_IXUSR else FILE_MODE
            if member.issym():
                entries[name] = (SYMLINK_MODE, hashlib.sha256(os.fsencode(member.linkname)).hexdigest())
            elif member.islnk():  # a hard link is the file it names, which an archive holds before the link
                target = entries.get(_normal_member_name(member.linkname))
                missing = hashlib.sha256(b"missing link target: " + os.fsencode(member.linkname)).hexdigest()
                entries[name] = (mode, target[1] if target else missing)
            elif member.isfile():
                entries[name] = (mode, hashlib.file_digest(tar.extractfile(member), "sha256").hexdigest())
    return entries


class _HashingReader(io.RawIOBase):
    """A readable stream that hashes what passes through it."""

    def __init__(self, source):
        self.source, self.sha256 = source, hashlib.sha256()
        self.failed: BaseException | None = None  # what a read of the source raised, told apart from the format

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.source.read(len(buffer))
        except BaseException as error:
            self.failed = error
            raise
        self.sha256.update(data)
        buffer[:len(data)] = data
        return len(data)


def digest_archive_stream(source) -> tuple[str, str | None]:
    """(sha256, tree_sha256) of an archive read once from a stream (an S3 body): no copy on disk or in memory,
    however large. tree_sha256 is None when the bytes are not a tar archive; the sha256 is always of every byte.
    A failed read of the stream raises what it raised."""
    reader = _HashingReader(source)
    buffered = io.BufferedReader(reader, _CHUNK)
    try:
        tree = build_tree_digest(_tar_entries(buffered))
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error):
        if reader.failed is not None:  # the stream broke (a read timeout is an OSError too): no digest can be had
            raise reader.failed from None
        tree = None
    while buffered.read(_CHUNK):  # what tar reading left unread (end-of-archive padding, or all of a non-tar)
        pass
    return reader.sha256.hexdigest(), tree


def tree_sha256(path_or_tar: str | Path) -> str:
    """Digest of a directory's or a tar archive's contents: sorted relative paths, each file's mode and sha256,
    each symlink's target.

    Timestamps, owners, group/other permissions and the order inside an archive do not count, so a model packed
    twice compares equal; a file made executable, or a link pointed elsewhere, does not.
    """
    return build_tree_digest(tree_entries(path_or_tar))


def _normal_member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _walk_files(root: Path) -> list[Path]:
    """Regular files under root (symlinks to files followed, as `cp -L` would), sorted for a stable order."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            file = Path(dirpath, name)
            if file.is_file():
                found.append(file)
    return sorted(found)


# --- deterministic archives -------------------------------------------------------------------------------------


def pack_tar_gz(src_dir: str | Path, dest: str | Path) -> str:
    """Pack the files under src_dir into dest as tar.gz, byte-identical for identical files; returns its sha256.

    Sorted entries, mtime 0, owner 0/0 with no names, modes 0644 or 0755, and a gzip header without time or name:
    the same files give the same archive on any machine at any time.
    """
    src = Path(src_dir)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for file in _walk_files(src):
                    info = tarfile.TarInfo(file.relative_to(src).as_posix())
                    st = file.stat()
                    info.size = st.st_size
                    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    info.mtime = 0
                    with open(file, "rb") as f:
                        tar.addfile(info, f)
    return sha256_file(dest)


def extract_tar(archive: str | Path, dest: str | Path) -> None:
    """Extract an archive with the 'data' filter: no absolute paths, no escaping dest, no device files."""
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python 3.11 before 3.11.4 (Debian 12's 3.11.2) has no filters: refuse what 'data' refuses
            tar.extractall(dest, members=[_checked_member(member, Path(dest)) for member in tar.getmembers()])


def _checked_member(member: tarfile.TarInfo, dest: Path) -> tarfile.TarInfo:
    """The member, if the 'data' filter (PEP 706) would extract it; its mode cleared of setuid and group/other
    write, as that filter does. Raises UsageError naming the member otherwise."""
    root = dest.resolve()

    def inside(path: str) -> bool:
        return (root / path).resolve().is_relative_to(root)

    name = member.name
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UsageError(f"archive member {name!r} is a device or special file", "archives may hold files only")
    if name.startswith("/") or not inside(name):
        raise UsageError(f"archive member {name!r} would be written outside {dest}", "rebuild the archive")
    if member.issym() and (member.linkname.startswith("/")
                           or not inside(os.path.join(os.path.dirname(name), member.linkname))):
        raise UsageError(f"archive member {name!r} links outside the archive", "rebuild the archive")
    if member.islnk() and (member.linkname.startswith("/") or not inside(member.linkname)):
        raise UsageError(f"archive member {name!r} links outside the archive", "rebuild the archive")
    if member.mode is not None:
        member.mode &= 0o755
    return member


# --- free space -------------------------------------------------------------------------------------------------


def _nearest_existing(path: str | Path) -> Path:
    """path, or the nearest of its parents that exists: where a file about to be written will live."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that will hold path."""
    return shutil.disk_usage(_nearest_existing(path)).free


def build_no_space_error(what: str, path: str | Path, needed: int | None, free: int) -> NoSpace:
    """Pure: the one-line error for a file system without room: where, how much was needed, how much is free."""
    need = f"{needed:,} bytes are needed" if needed else "more space is needed"
    return NoSpace(f"no space left to stage {what} at {path}: {need}, {free:,} bytes are free",
                   "free space on that file system, or set LEDGER_HOME to one with room")


def check_free_space(what: str, path: str | Path, needed: int) -> None:
    """Refuse, before writing anything, to put `needed` bytes where there is not that much room."""
    free = free_bytes(path)
    if needed > free:
        raise build_no_space_error(what, path, needed, free)


@contextmanager
def explain_no_space(what: str, path: str | Path, needed: int | None = None):
    """A full disk (ENOSPC, EDQUOT) met while writing becomes NoSpace naming the path and the bytes needed."""
    try:
        yield
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        # shutil.copytree gathers its failures into one shutil.Error, with no errno of its own
        full = full or (isinstance(err, shutil.Error) and os.strerror(errno.ENOSPC) in str(err))
        if not full:
            raise
        raise build_no_space_error(what, path, needed, free_bytes(path)) from None


def same_file_system(a: str | Path, b: str | Path) -> bool:
    """Whether a hard link can join a and b (or their nearest existing parents)."""
    return _nearest_existing(a).stat().st_dev == _nearest_existing(b).stat().st_dev


# --- the store --------------------------------------------------------------------------------------------------


def cas_uri(digest: str) -> str:
    return f"{CAS_PREFIX}{digest}"


def parse_cas_uri(uri: str) -> str:
    """The digest named by ledger-cas://sha256/<64 hex>; UsageError for anything else."""
    digest = uri[len(CAS_PREFIX):] if uri.startswith(CAS_PREFIX) else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UsageError(f"{uri!r} is not a content-store reference", f"expected {CAS_PREFIX}<64 lowercase hex>")
    return digest


@dataclass(frozen=True)
class StoredObject:
    digest: str
    size: int


def _identity(path: Path) -> tuple[int, int, int, int, int]:
    # ctime cannot be set by a user: if it is unchanged, the file's bytes are unchanged.
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ContentStore:
    """Objects at <home>/objects/sha256/<first two hex>/<other 62 hex>; each written once, read-only."""

    def __init__(self, home: str | Path):
        self.home = Path(home)
        self.root = self.home / "objects" / "sha256"
        self.tmp = self.home / "objects" / "tmp"  # beside the objects, so that installing one is a rename

    def path_of(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """True when the object is there and was not written since it was stored (its mtime is still 0)."""
        try:
            return self.path_of(digest).stat().st_mtime == 0
        except FileNotFoundError:
            return False

    def put_file(self, path: str | Path) -> StoredObject:
        """Store a copy of the file; return its digest. A file already stored costs one read, not a copy."""
        path = Path(path)
        before = _identity(path)
        digest = sha256_file(path)
        if self.has(digest):
            return StoredObject(digest, before[2])
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp)
        os.close(fd)
        shutil.copyfile(path, tmp_name)  # a kernel copy (sendfile): no bytes pass through Python
        if _identity(path) != before:
            # The file changed while we read it: trust only the bytes we copied.
            digest = sha256_file(tmp_name)
        return StoredObject(self._install(Path(tmp_name), digest), os.path.getsize(self.path_of(digest)))

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._install(Path(tmp_name), digest)
        return digest

    def _install(self, tmp: Path, digest: str) -> str:
        final = self.path_of(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.utime(tmp, (0, 0))
        os.replace(tmp, final)  # atomic; replaces a damaged object of the same name
        return digest

    def read_bytes(self, digest: str) -> bytes:
        return self._checked_path(digest).read_bytes()

    def stage(self, digest: str, dest: str | Path) -> Path:
        """Put the object at dest: a hard link (instant, no space), or a copy across file systems."""
        source = self._checked_path(digest)
        dest = Path(dest)
        with explain_no_space(f"object sha256:{digest[:12]}…", dest, source.stat().st_size):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, dest)
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                shutil.copyfile(source, dest)
        return dest

    def _checked_path(self, digest: str) -> Path:
        if not self.has(digest):
            raise NotFound(
                f"object sha256:{digest[:12]}… is not in the content store {self.root}",
                "it was never stored here, or was deleted or modified; pin the original files again",
            )
        return self.path_of(digest)


def open_content_store(home: str | Path | None = None) -> ContentStore:
    if home is None:
        from ledger.config import load_settings

        home = load_settings().home
    return ContentStore(home)


# --- local file pins --------------------------------------------------------------------------------------------


def local_path_of(uri: str) -> Path:
    """The path named by file:///abs, file://relative or a bare path (relative to the working directory)."""
    raw = unquote(uri[len("file://"):]) if uri.startswith("file://") else uri
    if "://" in raw or not raw:
        raise UsageError(f"{uri!r} is not a local path", "use file:///absolute/path or a path")
    return Path(raw).expanduser().absolute()


def build_manifest_objects(entries: list[tuple[str, str, int]]) -> list[dict]:
    """DataObject dicts sorted by key, from (key, sha256, size); the sha256 goes in `etag`."""
    return [{"key": k, "version_id": None, "etag": d, "size": s} for k, d, s in sorted(entries)]


def build_file_pin(uri: str, objects: list[dict], manifest_sha256: str) -> dict:
    return {
        "uri": uri,
        "kind": "file",
        "objects": objects,
        "object_count": len(objects),
        "total_bytes": sum(o["size"] for o in objects),
        "manifest_sha256": manifest_sha256,
        "pinned": True,
        "snapshot_uri": cas_uri(manifest_sha256),
    }


def manifest_digest(objects: Iterable[dict]) -> str:
    """sha256 of the canonical JSON of the sorted objects list; the manifest is stored under this digest. Hashed an
    object at a time: a listing of a million objects is not copied into one text first."""
    sha256 = hashlib.sha256()
    for piece in iter_canonical_list(objects):
        sha256.update(piece)
    return sha256.hexdigest()


def list_channel_files(root: str | Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files of a channel directory as sorted (key, path), and the links refused, as "key -> target: why".

    Symbolic links are followed, as `cp -rL` would, where they land inside the channel. A link out of it is
    refused (it would copy files the channel does not hold, /etc/passwd say), and so are a link to nothing and a
    link to a directory above itself (a loop): each refusal is named, so that nothing is left out unsaid.
    """
    root = Path(root)
    inside = root.resolve()
    files: list[tuple[str, Path]] = []
    refused: list[str] = []

    def walk(directory: Path, prefix: str, above: frozenset[Path]) -> None:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            key, path = prefix + entry.name, Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                why = ("points outside the channel" if not target.is_relative_to(inside)
                       else "points to nothing" if not target.exists()
                       else "loops back to a directory above it" if target in above or target == inside
                       else None)
                if why:
                    refused.append(f"{key} -> {os.readlink(path)}: {why}")
                    continue
            if path.is_dir():
                walk(path, key + "/", above | {path.resolve()})
            elif path.is_file():
                files.append((key, path))

    walk(root, "", frozenset({inside}))
    return sorted(files), refused


def plan_refused_links_gap(channel: str, refused: list[str]) -> Gap | None:
    """Pure: the gap that names the links a channel's pin left out, or None when there are none."""
    if not refused:
        return None
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return Gap(what=f"data channel {channel}",
               why=f"{len(refused)} symbolic link(s) were not stored: {refused[0]}{more}",
               fix="copy the files into the channel directory; a link may point only inside the channel")


def pin_file_channel(uri: str, store: ContentStore | None = None) -> dict:
    """Copy a file or a directory's files into the store; return a DataChannelPin-shaped dict.

    Keys are paths relative to the directory (a single file's key is its name), as the channel will see them.
    The manifest itself is stored too, so `snapshot_uri` (ledger-cas://sha256/<manifest_sha256>) names the channel.
    Links that list_channel_files refuses are left out; `pin_file_channel_and_refusals` names them.
    """
    return pin_file_channel_and_refusals(uri, store)[0]


def pin_file_channel_and_refusals(uri: str, store: ContentStore | None = None) -> tuple[dict, list[str]]:
    """pin_file_channel, and the symbolic links it refused (see list_channel_files)."""
    store = store or open_content_store()
    path = local_path_of(uri)
    refused: list[str] = []
    if path.is_dir():
        files, refused = list_channel_files(path)
    elif path.is_file():
        files = [(path.name, path)]
    else:
        raise NotFound(f"{uri} does not exist", "check the path of the channel")
    entries = []
    for key, file in files:
        stored = store.put_file(file)
        entries.append((key, stored.digest, stored.size))
    objects = build_manifest_objects(entries)
    digest = store.put_bytes(canonical_bytes(objects))  # stored under manifest_digest(objects)
    return build_file_pin(uri, objects, digest), refused


def load_manifest(manifest_sha256: str, store: ContentStore | None = None) -> list[dict]:
    store = store or open_content_store()
    return json.loads(store.read_bytes(manifest_sha256))


def stage_file_pin(pin: dict, dest: str | Path, store: ContentStore | None = None) -> list[Path]:
    """Restore a pinned channel into dest from the store: each object at its key. Returns the staged files.

    Every object is checked before any is linked, so a channel is staged whole or not at all.
    """
    store = store or open_content_store()
    dest = Path(dest)
    objects = pin.get("objects") or []
    if not objects and pin.get("manifest_sha256"):
        objects = load_manifest(pin["manifest_sha256"], store)
    missing = [o["key"] for o in objects if not store.has(o["etag"])]
    if missing:
        raise NotFound(
            f"{len(missing)} file(s) of the pinned channel {pin.get('uri')} are not in the content store "
            f"(first: {missing[0]})",
            f"the store at {store.root} lost them; pin the channel again from its files",
        )
    if not same_file_system(store.root, dest):  # copies, not hard links: they take room
        check_free_space(f"the channel {pin.get('uri')}", dest, sum(o.get("size") or 0 for o in objects))
    dest.mkdir(parents=True, exist_ok=True)
    staged = []
    for obj in objects:
        target = (dest / obj["key"]).resolve()
        if not target.is_relative_to(dest.resolve()):
            raise UsageError(f"pinned key {obj['key']!r} points outside the channel", "the pin is malformed")
        staged.append(store.stage(obj["etag"], target))
    return staged


def stage_cas_uri(uri: str, dest: str | Path, store: ContentStore | None = None) -> tuple[dict, list[Path]]:
    """Stage a channel named by ledger-cas://sha256/<manifest digest>; returns the pin it amounts to and the files."""
    store = store or open_content_store()
    digest = parse_cas_uri(uri)
    objects = load_manifest(digest, store)
    pin = build_file_pin(uri, objects, digest)
    return pin, stage_file_pin(pin, dest, store)


def pin_source_dir(path: str | Path, store: ContentStore | None = None) -> dict:
    """Pack a source directory deterministically into the store; returns a SourceArchive-shaped dict.

    Its `uri` (ledger-cas://sha256/<archive digest>) can be given as `sagemaker_submit_directory` to a local job.
    """
    store = store or open_content_store()
    src = local_path_of(str(path))
    if not src.is_dir():
        raise NotFound(f"source directory {src} does not exist", "check --source-dir")
    store.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        archive = Path(tmp) / "sourcedir.tar.gz"
        pack_tar_gz(src, archive)
        stored = store.put_file(archive)
    return {"uri": cas_uri(stored.digest), "version_id": None, "sha256": stored.digest}


__all__ = [
    "CAS_PREFIX",
    "ContentStore",
    "StoredObject",
    "build_tree_digest",
    "cas_uri",
    "check_free_space",
    "explain_no_space",
    "extract_tar",
    "free_bytes",
    "list_channel_files",
    "load_manifest",
    "local_path_of",
    "manifest_digest",
    "open_content_store",
    "pack_tar_gz",
    "parse_cas_uri",
    "pin_file_channel",
    "pin_file_channel_and_refusals",
    "pin_source_dir",
    "plan_refused_links_gap",
    "sha256_file",
    "stage_cas_uri",
    "stage_file_pin",
    "tree_entries",
    "tree_sha256",
]
