"""Secret redaction: pure, so no fixtures; a property test that no secret value survives anywhere."""

from __future__ import annotations

import copy

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ledger.capture.secrets import is_secret_name, redact_request, redact_url_password
from ledger.record import REDACTED, canonical_json

SECRET_NAMES = [
    "api_key", "API_KEY", "apiKey", "APIKey", "WANDB_API_KEY", "HF_TOKEN", "github_token", "DB_PASSWORD",
    "dbPassword", "dbpassword", "passwd", "PWD", "client_secret", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "credentials", "gcp-credential", "basic.auth", "ssh_key", "private_key", "authToken", "api_key_2", "key",
]  # fmt: skip
ORDINARY_NAMES = [
    "keys_to_keep", "max_tokens", "tokenizer", "tokenizer_name", "key_column", "pad_token", "eos_token",
    "label_key", "s3_key", "auth_type", "AWS_ACCESS_KEY_ID", "learning_rate", "num_round", "monkey", "keyboard",
    "sagemaker_submit_directory", "sagemaker_program", "max_depth",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_redact_request_replaces_values_lists_keys_and_leaves_the_input_alone():
    request = {
        "TrainingJobName": "job-1",
        "HyperParameters": {"max_depth": "5", "api_key": '"sk-live-123"', "tokenizer": "bpe"},
        "Environment": {"DB_PASSWORD": "hunter2", "DATABASE_URL": "postgres://app:s3cr3t@db:5432/app", "MODE": "fast"},
        "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
    }
    original = copy.deepcopy(request)

    redacted, keys = redact_request(request)

    assert request == original  # never mutated
    assert keys == ["HyperParameters.api_key", "Environment.DB_PASSWORD", "Environment.DATABASE_URL"]
    assert redacted["HyperParameters"] == {"max_depth": "5", "api_key": REDACTED, "tokenizer": "bpe"}
    assert redacted["Environment"]["DB_PASSWORD"] == REDACTED
    assert redacted["Environment"]["DATABASE_URL"] == f"postgres://app:{REDACTED}@db:5432/app"
    assert redacted["Environment"]["MODE"] == "fast"
    assert redacted["AlgorithmSpecification"] == original["AlgorithmSpecification"]


def test_requests_without_sections_pass_through():
    assert redact_request({"TrainingJobName": "j"}) == ({"TrainingJobName": "j"}, [])
    assert redact_request({"HyperParameters": None}) == ({"HyperParameters": None}, [])


def test_url_passwords_inside_json_quotes():
    assert redact_url_password('"https://u:p@h/x"') == f'"https://u:{REDACTED}@h/x"'
    assert redact_url_password("https://h/x@y") == "https://h/x@y"  # no password: unchanged
    assert redact_url_password("user@example.com") == "user@example.com"


# --- property: no secret value appears anywhere in what would be stored -------------------------------------------

name_prefixes = st.sampled_from(["", "my_", "PROD_", "service-", "db.", "svc2_", "team/"])
secret_names = st.builds(lambda prefix, name: prefix + name, name_prefixes, st.sampled_from(SECRET_NAMES))
ordinary_names = st.sampled_from(ORDINARY_NAMES)
secret_values = st.text(min_size=6, max_size=40).filter(lambda v: v.strip())
plain_values = st.text(alphabet="0123456789.", max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    hyper_secrets=st.dictionaries(secret_names, secret_values, max_size=4),
    env_secrets=st.dictionaries(secret_names, secret_values, max_size=4),
    hyper_plain=st.dictionaries(ordinary_names, plain_values, max_size=4),
    url_password=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_~!$&()*+,;=", min_size=6, max_size=20),
)
def test_no_secret_value_survives(hyper_secrets, env_secrets, hyper_plain, url_password):
    request = {
        "TrainingJobName": "job",
        "HyperParameters": {**hyper_plain, **hyper_secrets},
        "Environment": {**env_secrets, "DATABASE_URL": f"postgres://app:{url_password}@db/app"},
    }
    secrets = [*hyper_secrets.values(), *env_secrets.values(), url_password]
    everything_else = canonical_json(
        {"names": [*request["HyperParameters"], *request["Environment"]], "plain": hyper_plain, "marker": REDACTED,
         "rest": "TrainingJobName job postgres://app:@db/app HyperParameters Environment"}
    )  # fmt: skip
    for secret in secrets:  # a value that is also part of a name or of a kept value cannot be told apart
        assume(secret not in everything_else and canonical_json(secret)[1:-1] not in everything_else)

    redacted, keys = redact_request(request)

    text = canonical_json(redacted)
    for secret in secrets:
        assert canonical_json(secret)[1:-1] not in text
    assert set(keys) == {f"HyperParameters.{k}" for k in hyper_secrets} | {f"Environment.{k}" for k in env_secrets} | {
        "Environment.DATABASE_URL"
    }
