"""Secrets: values that must never reach the ledger, replaced by a marker before anything is stored.

The rule looks at the *words* of a name (split on `_ - . /`, spaces and camelCase), not at substrings, so that
`api_key`, `HF_TOKEN`, `dbPassword` and `AWS_SECRET_ACCESS_KEY` are redacted while `keys_to_keep`, `max_tokens`,
`tokenizer`, `key_column`, `pad_token` and `AWS_ACCESS_KEY_ID` are kept:

- a name holding a strong word anywhere (secret, password, passwd, pwd, passphrase, credential(s), apikey...) is
  secret; a strong word inside a run-together word counts too (`dbpassword`);
- `token`, `key` and `auth` are secret only as the last word (`github_token`, `ssh_key`, `basic_auth`), since as
  a qualifier they name something else (`key_column`, `auth_type`), and not after a qualifier that makes them
  ordinary ML settings (`pad_token`, `label_key`, `s3_key`).

A value that is a URL with a password in it (`postgres://user:pw@host/db`) has the password replaced, whatever
its name. Redacting a hyperparameter loses it for an identical relaunch; the reproduction asks for it again.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ledger.record import REDACTED

REDACTED_SECTIONS = ("HyperParameters", "Environment")
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

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")


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


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s\"']*):(?P<password>[^@/\s\"']+)@")


def redact_url_password(value: str) -> str:
    """'scheme://user:pw@host/…' -> 'scheme://user:***REDACTED***@host/…', wherever in the value (also inside
    the JSON quotes SDK 2.x puts around hyperparameters); any other value unchanged."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", value)


def redact_request(request: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of a CreateTrainingJob request with secret values in HyperParameters and Environment replaced by
    REDACTED, and the redacted keys ('HyperParameters.api_key', 'Environment.DB_PASSWORD'). Pure: the input is
    not changed."""
    redacted = copy.deepcopy(request)
    redacted_keys: list[str] = []
    for section in REDACTED_SECTIONS:
        values = redacted.get(section)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if is_secret_name(name):
                values[name] = REDACTED
                redacted_keys.append(f"{section}.{name}")
            elif isinstance(value, str):
                cleaned = redact_url_password(value)
                if cleaned != value:
                    values[name] = cleaned
                    redacted_keys.append(f"{section}.{name}")
    return redacted, redacted_keys
