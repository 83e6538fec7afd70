"""Secrets: values that must never reach the ledger, replaced by a marker before anything is stored.

Two rules find them, and every text a user wrote goes through both (the request, the git diff, untracked file
names, job logs, failure reasons):

**By name.** The rule looks at the *words* of a name (split on `_ - . /`, spaces and camelCase), not at
substrings, so that `api_key`, `HF_TOKEN`, `dbPassword` and `AWS_SECRET_ACCESS_KEY` are redacted while
`keys_to_keep`, `max_tokens`, `tokenizer`, `key_column`, `pad_token` and `AWS_ACCESS_KEY_ID` are kept:

- a name holding a strong word anywhere (secret, password, passwd, pwd, passphrase, credential(s), apikey...) is
  secret; a strong word inside a run-together word counts too (`dbpassword`);
- `token`, `key` and `auth` are secret only as the last word (`github_token`, `ssh_key`, `basic_auth`), since as
  a qualifier they name something else (`key_column`, `auth_type`), and not after a qualifier that makes them
  ordinary ML settings (`pad_token`, `label_key`, `s3_key`).

In a request the names are the keys of HyperParameters and Environment, the Key of each Tag, and `--flag`s in
ContainerArguments and ContainerEntrypoint; in text, the name of an assignment (`password = "…"`, `TOKEN=…`,
`"api_key": "…"`).

**By value.** detect-secrets' pattern detectors (AWS keys, private keys, JWTs, GitHub, GitLab, Slack, Stripe,
npm, PyPI, OpenAI, SendGrid, Twilio, Telegram, Discord, Azure, IBM, Artifactory, Mailchimp, Square tokens, and
passwords in URLs): their regular expressions, run on each text through `find_secret_spans`; and a URL's
password that BasicAuthDetector refuses because it holds one of `!$&'()*+,;=`, which a URL may hold. Its entropy
detectors are left out (digests, ETags and version ids are high-entropy and not secret), and so is its keyword
detector, whose regexes took 89 s on 16 KB of `passwordpassword…` here (the assignment rule above does its work
in linear time).

**Linear time.** A detector never sees more than SCAN_WINDOW characters at once: the text is cut into windows at
line ends, and a line longer than a window is cut into windows that overlap by SCAN_OVERLAP, so that a secret up
to that long lies whole in one of them. Some of detect-secrets' expressions are quadratic on a long run of
token characters (JwtTokenDetector: 3.7 s on 64 KB of `eyJeyJ…`; Artifactory's, OpenAI's and npm's have the same
shape); within a window that costs a bounded amount, so a scan costs time in proportion to the text. A private
key's body is found with `str.find` from its BEGIN line to its END line.

**What is kept.** A redacted value becomes REDACTED; in a request, each redacted value keeps a salted digest
(scrypt, with a random salt a record) in the record's `redactions`, so that a relaunch can check that the secret
it is given is the one the job used, while someone who reads the database pays 16 MiB and tens of milliseconds
for each guess of a short secret they test (a salted sha256 would let them test millions a second). Redacting a hyperparameter loses it for an identical relaunch; the reproduction asks
for it again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ledger.record import REDACTED

REDACTED_SECTIONS = ("HyperParameters", "Environment")  # sections whose values a relaunch can put back by name
STRONG_WORDS = {
    "secret", "secrets", "password", "passwords", "passwd", "pwd", "passphrase", "credential", "credentials",
    "apikey", "apikeys", "privatekey", "secretkey", "authtoken", "accesstoken", "apitoken", "bearertoken",
    "refreshtoken", "sessiontoken", "clientsecret",
}  # fmt: skip
STRONG_SUBSTRINGS = ("password", "passwd", "secret", "credential", "passphrase", "apikey")
LAST_WORDS = {"token", "key", "auth"}
ORDINARY_QUALIFIERS = {
    "token": {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end"},
    "key": {
        "s3", "object", "sort", "label", "text", "partition", "primary", "foreign", "join", "group", "feature",
        "target", "image", "input", "output", "metric", "column", "field", "dict", "cache", "hash", "prefix",
    },
    "auth": set(),
}  # fmt: skip

SCAN_WINDOW = 4096  # characters a detector sees at once
SCAN_OVERLAP = 1024  # windows of one long line overlap by this much: a secret up to this long is seen whole
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}  # the interactive parameters of scrypt's paper
KDF_NAME = "scrypt n=16384 r=8 p=1 dklen=32"
MAX_DIGESTS = 16  # distinct secrets digested a record; past that a redaction is kept without a digest (cost)
NAME_RULE = "secret name"

# detect-secrets detectors left out: entropy (digests and version ids are not secrets), public IPs, and keywords
# (quadratic; the assignment rule below does that work).
SKIPPED_DETECTORS = {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector", "KeywordDetector",
                     "PrivateKeyDetector"}  # its BEGIN lines are found by _private_key_spans, with the key's body
# Detectors whose first group is the secret (a password after `user:`, a key after `aws_secret_key = '`); for
# the others the whole match is.
GROUP_IS_SECRET = {"AWSKeyDetector", "BasicAuthDetector", "CloudantDetector", "IbmCloudIamDetector",
                   "IbmCosHmacDetector", "SoftlayerDetector", "NpmDetector"}
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-=+/.]*")  # a JWT's signature, after the header and payload matched
_MATCH_EDGES = " \t\r\n\"'=:"  # delimiters some detectors match around a token (Artifactory)

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")
# `name = value`, `name: "value"`, `--name=value`, `"name": "value"`: bounded repeats only, so linear.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.-])-{0,2}(?P<name>[A-Za-z_][\w.-]{0,63})["']?\]?[ \t]{0,8}(?::=|=>|==|=|:)[ \t]{0,8}"""
    r"""(?P<quote>["'`]?)(?P<value>[^\s"'`,;()\[\]{}<>]{1,512})""")
# A URL's password: detect-secrets' BasicAuthDetector refuses one holding RFC 3986's sub-delimiters
# (`!$&'()*+,;=`), which a userinfo may hold. Anchored on `://`, with bounded repeats: linear.
_URL_PASSWORD = re.compile(r"""://[^:@/\s"']{0,256}:(?P<password>[^@/\s"']{1,256})@""")
URL_RULE = "password in a URL"
_NOT_A_VALUE = {"none", "null", "nil", "true", "false", "undefined", "str", "string", "int", "bytes", "optional"}


def split_name_words(name: str) -> list[str]:
    """'DB_PASSWORD' -> ['db', 'password']; 'apiKey' -> ['api', 'key']; 'HFHubToken' -> ['hf', 'hub', 'token']."""
    return [w.lower() for part in re.split(r"[^A-Za-z0-9]+", name) for w in _WORD.findall(part)]


def is_secret_name(name: str) -> bool:
    words = [w for w in split_name_words(str(name)) if not w.isdigit()]  # api_key_2 ends in key
    if not words:
        return False
    if any(w in STRONG_WORDS or any(s in w for s in STRONG_SUBSTRINGS) for w in words):
        return True
    last = words[-1].rstrip("0123456789")  # apiKey2 ends in key
    if last in LAST_WORDS:
        qualifier = words[-2] if len(words) > 1 else None
        return qualifier not in ORDINARY_QUALIFIERS[last]
    return False


# --- finding secrets in text: linear in its length -----------------------------------------------------------


@lru_cache(maxsize=1)
def _detectors() -> tuple[tuple[str, tuple[re.Pattern, ...]], ...]:
    """(name, compiled regexes) of detect-secrets' pattern detectors, imported once."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    return tuple((cls.__name__, tuple(cls.denylist)) for cls in get_mapping_from_secret_type_to_class().values()
                 if cls.__name__ not in SKIPPED_DETECTORS)


def plan_scan_windows(text: str, window: int = SCAN_WINDOW, overlap: int = SCAN_OVERLAP) -> list[tuple[int, int]]:
    """Pure: (start, end) windows covering `text`, each at most `window` long, cut after a line end where there
    is one in the window's second half; a window cut inside a line overlaps the next by `overlap`."""
    spans, start, size = [], 0, len(text)
    while start < size:
        end = min(start + window, size)
        if end < size:
            newline = text.rfind("\n", start + window // 2, end)
            if newline != -1:
                spans.append((start, newline + 1))
                start = newline + 1
                continue
        spans.append((start, end))
        if end == size:
            break
        start = end - overlap
    return spans


def _detector_spans(chunk: str) -> list[tuple[int, int, str]]:
    from detect_secrets.plugins.jwt import JwtTokenDetector

    found = []
    for name, patterns in _detectors():
        for pattern in patterns:
            for match in pattern.finditer(chunk):
                if name in GROUP_IS_SECRET and pattern.groups and match.group(1):
                    start, end = match.span(1)
                elif name == "JwtTokenDetector":
                    if not JwtTokenDetector.is_formally_valid(match.group(0)):
                        continue
                    start, end = match.start(), _TOKEN_TAIL.match(chunk, match.end()).end()
                else:
                    start, end = match.span()
                    while start < end and chunk[start] in _MATCH_EDGES:
                        start += 1
                    while end > start and chunk[end - 1] in _MATCH_EDGES:
                        end -= 1
                if end > start and REDACTED not in chunk[start:end]:
                    found.append((start, end, name))
    for match in _URL_PASSWORD.finditer(chunk):
        if REDACTED not in match["password"]:
            found.append((*match.span("password"), URL_RULE))
    for match in _ASSIGNMENT.finditer(chunk):
        value = match["value"]
        if is_secret_name(match["name"]) and value.lower() not in _NOT_A_VALUE and not value.startswith("***"):
            found.append((*match.span("value"), NAME_RULE))
    return found


def _private_key_spans(text: str) -> list[tuple[int, int, str]]:
    """The body of each private key block, from its BEGIN line to its END line (or the end of the text)."""
    from detect_secrets.plugins.private_key import PrivateKeyDetector

    headers = sorted((m.start(), m.end()) for p in PrivateKeyDetector.denylist for m in p.finditer(text))
    spans, covered = [], 0
    for start, end in headers:
        if start < covered:
            continue  # inside the block before
        if text.startswith("-----", end):
            end += 5
        if text.startswith("PuTTY", start):
            stop = text.find("\n\n", end)
        else:
            stop = text.find("-----END", end)
        stop = len(text) if stop == -1 else stop
        body_start, body_end = end, stop
        while body_start < body_end and text[body_start].isspace():
            body_start += 1
        while body_end > body_start and text[body_end - 1].isspace():
            body_end -= 1
        if body_end > body_start:
            spans.append((body_start, body_end, "PrivateKeyDetector"))
        covered = stop
        if stop == len(text):
            break
    return spans


def find_secret_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, found_by) of each secret in `text`, in order, overlaps merged. Linear in len(text)."""
    if not text:
        return []
    found = _private_key_spans(text) if "PRIVATE KEY" in text or "PuTTY" in text else []
    for start, end in plan_scan_windows(text):
        found += [(start + a, start + b, name) for a, b, name in _detector_spans(text[start:end])]
    merged: list[list] = []
    for start, end, name in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, name])
    return [(a, b, name) for a, b, name in merged]


def redact_text(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`text` with each secret replaced by REDACTED, and [(found_by, secret)] in order. Linear."""
    spans = find_secret_spans(text)
    if not spans:
        return text, []
    parts, found, last = [], [], 0
    for start, end, name in spans:
        parts += [text[last:start], REDACTED]
        found.append((name, text[start:end]))
        last = end
    parts.append(text[last:])
    return "".join(parts), found


MAX_KNOWN = 64  # known secrets a text is cleaned of, the longest first: each is one str.replace over it
MIN_KNOWN = 4  # a shorter "secret" would blank out ordinary text wherever it occurs


def plan_known_secrets(secrets: list[str]) -> list[str]:
    """Pure: the values to clean a job's output of: each secret as sent and as the job reads it (SDK 2.x sends
    '"s3cr3t"', the script sees s3cr3t), longest first."""
    known = set()
    for secret in secrets:
        known.add(secret)
        try:
            decoded = json.loads(secret)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            known.add(decoded)
    return sorted((k for k in known if len(k) >= MIN_KNOWN and REDACTED not in k), key=len, reverse=True)[:MAX_KNOWN]


def redact_known(text: str, known: list[str]) -> str:
    """`text` redacted (redact_text), and cleaned of secrets known to be in play (a job printing its own)."""
    text = redact_text(text)[0]
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(data: bytes) -> tuple[bytes, int]:
    """Bytes (a git diff, a log) with secrets redacted, and how many; bytes that are not UTF-8 pass unchanged."""
    text = data.decode("utf-8", "surrogateescape")
    cleaned, found = redact_text(text)
    return (cleaned.encode("utf-8", "surrogateescape"), len(found)) if found else (data, 0)


def redact_url_password(value: str) -> str:
    """'scheme://user:pw@host/…' -> 'scheme://user:***REDACTED***@host/…', wherever in the value (also inside
    the JSON quotes SDK 2.x puts around hyperparameters); any other value unchanged."""
    return redact_text(value)[0]


# --- salted digests ----------------------------------------------------------------------------------------------


def new_salt() -> str:
    return os.urandom(16).hex()


def secret_digest(salt: str, value: str) -> str:
    """scrypt of the value with the record's salt: the same secret in two records digests differently, and a
    guess costs 16 MiB and tens of milliseconds to test."""
    return hashlib.scrypt(value.encode("utf-8"), salt=bytes.fromhex(salt), **SCRYPT).hex()


class _Digester:
    """Digests a record's secrets once each, and at most MAX_DIGESTS of them."""

    def __init__(self, salt: str | None):
        self.salt, self.done = salt, {}

    def __call__(self, value: str) -> str | None:
        if self.salt is None:
            return None
        if value not in self.done:
            self.done[value] = secret_digest(self.salt, value) if len(self.done) < MAX_DIGESTS else None
        return self.done[value]


# --- the request ----------------------------------------------------------------------------------------------


@dataclass
class RequestRedaction:
    request: dict[str, Any]  # the request with every secret replaced by REDACTED
    redacted_keys: list[str]  # 'HyperParameters.api_key', 'Environment.DB_URL': values a relaunch puts back
    values: list[dict[str, Any]]  # {path, found_by, digest} of each secret removed
    secrets: list[str]  # the secrets themselves: never stored; a job's log is cleaned of them (redact_known)

    def record_field(self, salt: str | None) -> dict[str, Any] | None:
        """What the record keeps as `redactions`, or None when nothing was redacted."""
        if not self.values:
            return None
        return {"salt": salt, "kdf": KDF_NAME if salt else None, "values": self.values}


def build_request_redaction(request: dict[str, Any], salt: str | None = None) -> RequestRedaction:
    """Pure (apart from hashing): every secret of a CreateTrainingJob request replaced by REDACTED.

    By name: HyperParameters and Environment values, Tag values, the value after a secret `--flag` in
    ContainerArguments and ContainerEntrypoint. By value: every other string anywhere in the request. With a
    salt, each secret removed keeps its digest. The input is not changed.
    """
    redacted = copy.deepcopy(request)
    keys: list[str] = []
    values: list[dict[str, Any]] = []
    digest = _Digester(salt)

    removed: list[str] = []

    def by_name(path: str, value: Any) -> str:
        values.append({"path": path, "found_by": NAME_RULE, "digest": digest(str(value))})
        removed.append(str(value))
        return REDACTED

    def by_value(path: str, value: str) -> str:
        cleaned, found = redact_text(value)
        values.extend({"path": path, "found_by": name, "digest": digest(secret)} for name, secret in found)
        removed.extend(secret for _, secret in found)
        return cleaned

    for section in REDACTED_SECTIONS:
        section_values = redacted.get(section)
        if not isinstance(section_values, dict):
            continue
        for name, value in section_values.items():
            path = f"{section}.{name}"
            new = by_name(path, value) if is_secret_name(name) else (
                by_value(path, value) if isinstance(value, str) else value)
            if new != value:
                section_values[name] = new
                keys.append(path)

    tags = redacted.get("Tags")
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, dict) and isinstance(tag.get("Value"), str):
            path = f"Tags[{tag.get('Key')}]"
            tag["Value"] = by_name(path, tag["Value"]) if is_secret_name(str(tag.get("Key"))) else by_value(
                path, tag["Value"])

    algorithm = redacted.get("AlgorithmSpecification")
    for field in ("ContainerArguments", "ContainerEntrypoint"):
        arguments = algorithm.get(field) if isinstance(algorithm, dict) else None
        if isinstance(arguments, list):
            algorithm[field] = _redact_arguments(f"AlgorithmSpecification.{field}", arguments, by_name, by_value)

    def walk(value: Any, path: str) -> Any:  # every other string: by value
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return by_value(path, value) if isinstance(value, str) else value

    done = (*REDACTED_SECTIONS, "Tags")
    for key in list(redacted):
        if key in done:
            continue
        if key == "AlgorithmSpecification" and isinstance(algorithm, dict):
            redacted[key] = {k: v if k in ("ContainerArguments", "ContainerEntrypoint") else walk(v, f"{key}.{k}")
                             for k, v in algorithm.items()}
        else:
            redacted[key] = walk(redacted[key], key)
    return RequestRedaction(redacted, keys, values, removed)


def _redact_arguments(path: str, arguments: list, by_name, by_value) -> list:
    """['--db-password', 'x', '--token=y', 'z'] -> the values after (or in) a secret flag redacted by name, the
    rest by value."""
    cleaned, secret_next = [], False
    for i, argument in enumerate(arguments):
        where = f"{path}[{i}]"
        if not isinstance(argument, str):
            cleaned.append(argument)
            secret_next = False
            continue
        if secret_next and not argument.startswith("--"):
            cleaned.append(by_name(where, argument))
            secret_next = False
            continue
        flag, equals, value = argument.partition("=")
        if argument.startswith("-") and is_secret_name(flag.lstrip("-")):
            if equals:
                cleaned.append(f"{flag}={by_name(where, value)}")
            else:
                cleaned.append(argument)
                secret_next = True
            continue
        secret_next = False
        cleaned.append(by_value(where, argument))
    return cleaned


def redact_request(request: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of a CreateTrainingJob request with every secret replaced by REDACTED, and the redacted keys of
    HyperParameters and Environment ('HyperParameters.api_key', 'Environment.DB_PASSWORD'). Pure: the input is
    not changed. `build_request_redaction` also gives each secret's path and salted digest."""
    result = build_request_redaction(request)
    return result.request, result.redacted_keys


# --- a relaunch: is the secret given the one that was used? -----------------------------------------------------


def check_secret(redactions: dict[str, Any] | None, path: str, recorded: Any, supplied: str) -> bool | None:
    """True when `supplied` is the secret recorded at `path` (as given, or JSON-encoded as SDK 2.x sends it),
    False when it is not, None when the record keeps no digest to check it against."""
    if not redactions or not redactions.get("salt"):
        return None
    salt = redactions["salt"]
    entries = [v for v in redactions.get("values") or [] if v.get("path") == path]
    if not entries or any(v.get("digest") is None for v in entries):
        return None
    if recorded == REDACTED:  # the whole value, redacted by name
        return any(secret_digest(salt, candidate) == entries[0]["digest"]
                   for candidate in (supplied, json.dumps(supplied)))
    cleaned, found = redact_text(supplied)  # a secret inside the value: the whole value is given
    return cleaned == recorded and [secret_digest(salt, s) for _, s in found] == [v["digest"] for v in entries]
