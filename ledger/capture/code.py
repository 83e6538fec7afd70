"""Code: the git commit, branch, remote and uncommitted diff, and the source the SDK uploaded for the job.

A detached HEAD is a fact (recorded as `detached: true`), not a gap. No repository, no commit, no remote, or a
commit no remote has are gaps: each means the code cannot be fetched again from anywhere but this machine.
The uncommitted diff is returned as bytes (binary-safe, `git diff HEAD --binary`) with its secrets redacted, for
the caller to store as a blob; the record holds the sha256 of those bytes and `diff_redactions`, how many
secrets were taken out. Untracked file names are redacted too.

What the job really ran is the uploaded source: SDK 2.x names its `sourcedir.tar.gz` in the hyperparameter
`sagemaker_submit_directory`; SDK 3.x uploads S3Prefix channels `code` and `sm_drivers`, usually into a bucket
without versioning, so those are pinned by a digest of their content (FIELD-NOTES.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ledger.capture import aws_error_code, client_for
from ledger.capture.secrets import redact_bytes, redact_text
from ledger.errors import UsageError
from ledger.record import CodePin, Gap, SourceArchive, sha256_hex

MAX_UNTRACKED_LISTED = 1000
SDK3_CODE_CHANNELS = ("code", "sm_drivers")
MAX_KEPT_CODE_BYTES = 64 * 1024**2  # code channels up to this size are kept as ledger blobs
# A canonical patch whatever the user's git config says: no colour, no external diff drivers or text
# conversions, binary changes included so that `git apply` can restore the tree.
DIFF_OPTIONS = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv")


# --- pure decisions ---------------------------------------------------------------------------------------------


def build_public_remote_url(url: str) -> str:
    """A remote URL without the credentials some people embed in it (https://user:token@host/…)."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def decode_hyperparameter(value: Any) -> Any:
    """The package's one decoder of hyperparameters, the training toolkit's rule: SDK 2.x framework estimators
    send each value JSON-encoded ('"s3://…"', '5'); a value that is not JSON is taken as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def build_hyperparameter_text(value: Any) -> str:
    """A hyperparameter as the user wrote it: '"reg:squarederror"' -> 'reg:squarederror'; '5', '0.1', 'true'
    and text that is not JSON stay as they are (the decoded 5 or True would not print as written)."""
    decoded = decode_hyperparameter(value)
    return decoded if isinstance(decoded, str) else str(value)


def plan_submit_directory(request: dict[str, Any] | None) -> str | None:
    """The `sagemaker_submit_directory` a request names, decoded, or None."""
    value = ((request or {}).get("HyperParameters") or {}).get("sagemaker_submit_directory")
    value = decode_hyperparameter(value)
    return value if isinstance(value, str) and value else None


def plan_code_path(request: dict[str, Any] | None) -> str | None:
    """A local source directory named by the request (local mode: file://…), whose repository should be used."""
    submit = plan_submit_directory(request)
    if submit and submit.startswith("file://"):
        return submit[len("file://") :]
    return None


def plan_code_channel_names(request: dict[str, Any]) -> list[str]:
    """The 3.x code channels of a request. A channel named `code` alone may be user data, so `sm_drivers`, which
    only ModelTrainer makes, must be there too."""
    names = [c.get("ChannelName") for c in request.get("InputDataConfig") or []]
    if "sm_drivers" not in names:
        return []
    return [name for name in SDK3_CODE_CHANNELS if name in names]


def plan_tree_sha256(pairs: list[tuple[str, str]]) -> str:
    """Digest of a tree of (relative path, sha256) pairs, independent of where it is stored and of timestamps.

    The product's one rule for tree digests (content_store.build_tree_digest), so a 3.x code channel, a 2.x
    sourcedir.tar.gz and the local backend's staged code compare equal when they hold the same files.
    """
    from ledger.capture.content_store import build_tree_digest

    return build_tree_digest(dict(pairs))


def build_stored_diff(diff: bytes) -> tuple[bytes, int]:
    """The diff as the ledger keeps it: each secret in it replaced by REDACTED, and how many were. Only this is
    stored and digested (`diff_sha256`): a digest of the original would let anyone who reads the ledger test
    guesses of a short secret against it, the rest of the diff being known."""
    return redact_bytes(diff)


# --- git --------------------------------------------------------------------------------------------------------


def capture_code(
    path: str | os.PathLike | None = None, request: dict[str, Any] | None = None
) -> tuple[CodePin, list[Gap], bytes]:
    """Pin the git state of the repository holding `path`.

    `path` defaults to a local submit directory named by `request`, then to the working directory. The caller
    passes the source_dir of an estimator when it is local, since a notebook's working directory may be
    elsewhere. Returns (pin, gaps, diff bytes; empty when the tree is clean).
    """
    path = os.fspath(path or plan_code_path(request) or os.getcwd())
    try:
        import git
    except ImportError as error:  # GitPython refuses to import without a git executable
        return CodePin(), [Gap(what="code", why=f"git is not available: {error}", fix="install git")], b""
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        gap = Gap(
            what=f"code in {path}",
            why="not inside a git repository: the code that launched the job is not recorded",
            fix=f"cd {path} && git init && git add -A && git commit -m 'code for training', then launch again",
        )
        return CodePin(), [gap], b""
    with repo:
        try:
            return _capture_repo(repo, path)
        except git.GitCommandError as error:
            return CodePin(), [Gap(what=f"code in {path}", why=f"git failed: {error}", fix="check the repository")], b""


def _capture_repo(repo, path: str) -> tuple[CodePin, list[Gap], bytes]:
    gaps: list[Gap] = []
    root = repo.working_tree_dir
    what = f"code in {root}"
    try:
        commit = repo.head.commit.hexsha
    except ValueError:  # a repository without any commit yet
        commit = None
        gaps.append(Gap(what=what, why="the repository has no commit yet", fix="git add -A && git commit -m 'first'"))
    detached = repo.head.is_detached
    branch = None if detached else repo.active_branch.name

    remote_url, remote_name = _remote(repo)
    if remote_url is None:
        gaps.append(
            Gap(
                what=what,
                why="no remote: the commit exists only on this machine",
                fix="git remote add origin <url> && git push -u origin HEAD",
            )
        )
    elif commit and not repo.git.branch("-r", "--contains", commit).strip():
        gaps.append(
            Gap(
                what=f"{what}, commit {commit[:12]}",
                why=f"no branch of remote {remote_name} contains the commit (not pushed, as far as this clone knows)",
                fix=f"git push {remote_name} HEAD" + (f":{branch}" if branch else ":refs/heads/<branch>"),
            )
        )

    dirty = repo.is_dirty(index=True, working_tree=True, untracked_files=False)
    diff, redactions = b"", {}
    if dirty and commit:
        diff = repo.git.diff("HEAD", *DIFF_OPTIONS, stdout_as_string=False, strip_newline_in_stdout=False)
        diff, redactions["diff_redactions"] = build_stored_diff(diff)
    untracked = [redact_text(name)[0] for name in repo.untracked_files]  # a file may be named by its token
    pin = CodePin(
        repo_url=remote_url,
        commit=commit,
        branch=branch,
        dirty=dirty,
        diff_sha256=sha256_hex(diff) if diff else None,
        untracked=untracked[:MAX_UNTRACKED_LISTED],
        detached=detached,
        untracked_count=len(untracked),
        repo_root=root,
        **redactions,
    )
    return pin, gaps, diff


def _remote(repo) -> tuple[str | None, str | None]:
    """(URL without credentials, name) of `origin`, else of the first remote; (None, None) without one."""
    remotes = list(repo.remotes)
    if not remotes:
        return None, None
    chosen = next((r for r in remotes if r.name == "origin"), remotes[0])
    try:
        urls = list(chosen.urls)
    except Exception:  # a remote without a url: treated as no remote
        return None, None
    return (build_public_remote_url(urls[0]), chosen.name) if urls else (None, None)


# --- uploaded source --------------------------------------------------------------------------------------------


def _sha256_stream(body, sink=None) -> str:
    hasher = hashlib.sha256()
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        hasher.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return hasher.hexdigest()


def _archive_tree_sha256(path: str | os.PathLike) -> str | None:
    """The tree digest of a tar archive's files (content_store's rule), or None when it is not a tar archive."""
    import tarfile

    from ledger.capture.content_store import tree_sha256

    try:
        return tree_sha256(path)
    except (tarfile.TarError, OSError, EOFError):
        return None


def capture_source_archive(request: dict[str, Any], session=None) -> tuple[SourceArchive | None, list[Gap]]:
    """The SDK 2.x source archive named by `sagemaker_submit_directory`: version id, sha256 and tree_sha256.

    One GET: the archive is small, so it is read once to hash its bytes and its files. `tree_sha256` ignores the
    timestamps the SDK writes into every new tar, so the same code uploaded twice compares equal. None when the
    request names no archive. A local (file://) directory is pinned by its tree digest alone. A bucket without
    versioning is not a gap: the archive's key is unique to the job and both digests are recorded (a reproduction
    checks them); the git pin is the copy that can be fetched again.
    """
    import tempfile

    from botocore.exceptions import BotoCoreError, ClientError

    uri = plan_submit_directory(request)
    if not uri:
        return None, []
    what = f"source archive {uri}"
    if uri.startswith("file://"):
        from ledger.capture.data import file_uri_path, hash_file

        local = file_uri_path(uri)
        if not local.exists():
            return SourceArchive(uri=uri), [Gap(what=what, why=f"{local} does not exist", fix="correct source_dir")]
        if local.is_dir():
            from ledger.capture.content_store import tree_sha256

            return SourceArchive(uri=uri, tree_sha256=tree_sha256(local)), []
        return SourceArchive(uri=uri, sha256=hash_file(local), tree_sha256=_archive_tree_sha256(local)), []
    from ledger.capture.data import parse_s3_uri

    try:
        bucket, key = parse_s3_uri(uri)
    except UsageError as error:
        return SourceArchive(uri=uri), [Gap(what=what, why=error.message, fix=error.hint)]
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-source-") as scratch:
            copy_path = os.path.join(scratch, "archive")
            response = client_for(session, "s3").get_object(Bucket=bucket, Key=key)
            with open(copy_path, "wb") as sink:
                sha = _sha256_stream(response["Body"], sink)
            tree = _archive_tree_sha256(copy_path)
    except ClientError as error:
        code = aws_error_code(error)
        return SourceArchive(uri=uri), [
            Gap(what=what, why=f"the archive cannot be read: {code}", fix=f"grant s3:GetObject on s3://{bucket}/{key}")
        ]
    except BotoCoreError as error:
        gap = Gap(what=what, why=f"S3 could not be reached: {error}", fix="check the network")
        return SourceArchive(uri=uri), [gap]
    from ledger.capture.data import build_version_id

    return SourceArchive(uri=uri, version_id=build_version_id(response.get("VersionId")), sha256=sha,
                         tree_sha256=tree), []


def plan_unpinned_requirements(text: str) -> list[str]:
    """The lines of a requirements file that do not pin one version with `==` (what pip may resolve differently
    next time). Blank lines, comments and pip options (`--index-url`, `-r other.txt`) are not requirements. Pure."""
    unpinned = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith(("--", "-r", "-c")):
            continue
        if "==" not in line:
            unpinned.append(line)
    return unpinned


def plan_code_channel_pinned(channel: dict[str, Any]) -> bool:
    """A code channel is pinned when every file has a version id, or the ledger kept a copy of its bytes. Pure."""
    objects = channel.get("objects") or []
    return bool(objects) and (channel.get("kept") is True or all(o.get("version_id") for o in objects))


def _requirements_gaps(name: str, uri: str, files: dict[str, bytes]) -> list[Gap]:
    gaps = []
    for key, data in sorted(files.items()):
        if not key.rsplit("/", 1)[-1].startswith("requirements") or not key.endswith(".txt"):
            continue
        loose = plan_unpinned_requirements(data.decode("utf-8", "replace"))
        if loose:
            gaps.append(Gap(
                what=f"code channel {name}: {key}",
                why=f"{len(loose)} requirement(s) without ==, installed as whatever pip resolves at run time: "
                    + ", ".join(loose[:5]),
                fix=f"pin each one in {key}, e.g. {loose[0].split(';')[0].strip()}==<the version you trained with>"))
    return gaps


def capture_code_channels(
    request: dict[str, Any], session=None, keep: dict[str, bytes] | None = None
) -> tuple[dict[str, dict[str, Any]], list[Gap]]:
    """The SDK 3.x code channels, each pinned by content: {name: {uri, tree_sha256, object_count, total_bytes,
    objects: [{key, version_id, etag, size, sha256}], kept}}.

    tree_sha256 is the tree digest (plan_tree_sha256) of (key relative to the channel URI, sha256 of the bytes),
    so the same code uploaded under another job's prefix has the same digest. One listing, then one GET per file
    (code is small). The default bucket usually keeps no versions, so the bytes themselves are the pin: when
    `keep` is given, each file's bytes go into it under their sha256 (the caller stores them as ledger blobs) and
    the channel is `kept`, so a reproduction can restore it. What cannot be pinned is a gap: an unversioned
    channel larger than MAX_KEPT_CODE_BYTES, and requirements lines without `==`.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from ledger.capture.data import list_latest_versions, parse_s3_uri

    names = set(plan_code_channel_names(request))
    pinned: dict[str, dict[str, Any]] = {}
    gaps: list[Gap] = []
    for channel in request.get("InputDataConfig") or []:
        name = channel.get("ChannelName")
        if name not in names:
            continue
        uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri", "")
        try:
            bucket, prefix = parse_s3_uri(uri)
            s3 = client_for(session, "s3")
            listed = sorted(list_latest_versions(s3, bucket, prefix), key=lambda o: o.key)
            total = sum(o.size or 0 for o in listed)
            keeping = keep is not None and total <= MAX_KEPT_CODE_BYTES
            objects, files = [], {}
            for entry in listed:
                extra = {"VersionId": entry.version_id} if entry.version_id else {}
                data = s3.get_object(Bucket=bucket, Key=entry.key, **extra)["Body"].read()
                sha = hashlib.sha256(data).hexdigest()
                relative = entry.key[len(prefix) :].lstrip("/")
                objects.append({"key": relative, "version_id": entry.version_id, "etag": entry.etag,
                                "size": len(data), "sha256": sha})
                files[relative] = data
                if keeping:
                    keep[sha] = data
            pinned[name] = {
                "uri": uri,
                "tree_sha256": plan_tree_sha256([(o["key"], o["sha256"]) for o in objects]),
                "object_count": len(objects),
                "total_bytes": total,
                "objects": objects,
                "kept": keeping,
            }
            if not plan_code_channel_pinned(pinned[name]):
                too_large = f" ({total} bytes, more than {MAX_KEPT_CODE_BYTES})" if keep is not None else ""
                why = (f"bucket {bucket} keeps no versions of these {len(objects)} file(s), and the ledger kept "
                       f"no copy of them{too_large}" if objects else f"no files under {uri}")
                gaps.append(Gap(what=f"code channel {name} ({uri})", why=why,
                                fix=f"enable versioning: aws s3api put-bucket-versioning --bucket {bucket} "
                                    "--versioning-configuration Status=Enabled"))
            gaps += _requirements_gaps(name, uri, files)
        except UsageError as error:
            gaps.append(Gap(what=f"code channel {name}", why=error.message, fix=error.hint))
        except (ClientError, BotoCoreError) as error:
            why = f"cannot be read: {aws_error_code(error)}"
            gaps.append(Gap(what=f"code channel {name} ({uri})", why=why, fix="grant s3:ListBucket and s3:GetObject"))
    return pinned, gaps
