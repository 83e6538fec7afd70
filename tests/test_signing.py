"""Signed reports: Ed25519 over the report's digest and the file's sha256; one byte changed and it fails."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ledger import audit
from ledger.audit import signing
from ledger.errors import TamperDetected, UsageError
from ledger.store.ledger import open_ledger
from tests.test_audit import run_cli, seed


@pytest.fixture
def report_files(ledger_home, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    code, _, err = run_cli(capsys, "audit", "keygen", str(tmp_path / "keys" / "auditor"))
    assert code == 0, err
    return runs, tmp_path / "keys" / "auditor", tmp_path / "keys" / "auditor.pub"


def test_keygen_writes_a_private_key_only_its_owner_can_read(report_files, capsys):
    _runs, private, public = report_files
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    assert signing.key_id(signing.load_public_key(public)) == signing.key_id(signing.load_private_key(private).public_key())
    code, _, err = run_cli(capsys, "audit", "keygen", str(private))
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("fmt", ["html", "json", "md"])
def test_a_signed_report_verifies_and_one_byte_changed_fails(report_files, tmp_path, capsys, fmt):
    runs, private, public = report_files
    report = tmp_path / f"audit.{fmt}"
    code, out, err = run_cli(capsys, "audit", runs["gappy"].run_id, "-o", str(report), "--sign", str(private))
    assert code == 0, err
    assert f"Signed: {report}.sig" in out
    signature = json.loads((tmp_path / f"audit.{fmt}.sig").read_text())
    digest = signature["statement"]["report_digest"]
    assert digest in out and signature["statement"]["format"] == fmt
    code, out, err = run_cli(capsys, "audit", "verify", str(report), "--key", str(public))
    assert code == 0 and "Signature OK" in out and digest in out, err
    data = bytearray(report.read_bytes())
    position = data.index(runs["gappy"].job_name.encode()) + 2
    data[position] ^= 0x01  # one byte, one bit of it
    report.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "audit", "verify", str(report), "--key", str(public))
    assert code == 3 and "changed after it was signed" in err


def test_a_whitespace_byte_in_a_json_report_is_caught_too(report_files, tmp_path):
    """The signature covers the file's bytes, not only the canonical JSON, so even a change that leaves the
    report's data equal is caught."""
    runs, private, public = report_files
    book = open_ledger()
    report = audit.collect_report(book, [runs["clean"].run_id])
    path = audit.save_report(report, tmp_path / "r.json", "json")
    signing.sign_report_file(path, private, report["digest"], "json")
    assert signing.check_report_signature(path, public).ok
    path.write_text(path.read_text().replace('  "kind"', '   "kind"', 1))
    check = signing.check_report_signature(path, public)
    assert not check.ok and "changed after it was signed" in check.problems[0]


def test_another_key_or_an_altered_signature_fails(report_files, tmp_path, capsys):
    runs, private, public = report_files
    report = tmp_path / "audit.html"
    assert run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(report), "--sign", str(private))[0] == 0
    other_private, other_public = signing.generate_keypair(tmp_path / "other")
    check = signing.check_report_signature(report, other_public)
    assert not check.ok and "not with the key given" in check.problems[0]
    sig = tmp_path / "audit.html.sig"
    document = json.loads(sig.read_text())
    document["statement"]["report_digest"] = "0" * 64  # claim another report
    sig.write_text(json.dumps(document))
    code, _, err = run_cli(capsys, "audit", "verify", str(report), "--key", str(public))
    assert code == 3 and "signature file was altered" in err
    with pytest.raises(TamperDetected):
        signing.require_valid_signature(signing.check_report_signature(report, public))


def test_openssh_keys_work_and_other_key_types_are_refused(report_files, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    runs, _private, _public = report_files
    key = Ed25519PrivateKey.generate()
    (tmp_path / "id_ed25519").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.OpenSSH,
                                                            serialization.NoEncryption()))
    (tmp_path / "id_ed25519.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                            serialization.PublicFormat.OpenSSH))
    book = open_ledger()
    report = audit.collect_report(book, [runs["clean"].run_id])
    path = audit.save_report(report, tmp_path / "r.md", "md")
    signing.sign_report_file(path, tmp_path / "id_ed25519", report["digest"], "md")
    assert signing.check_report_signature(path, tmp_path / "id_ed25519.pub").ok
    (tmp_path / "ec.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UsageError, match="not an Ed25519 key"):
        signing.load_private_key(tmp_path / "ec.pem")


def test_the_signed_statement_is_the_report_digest_and_the_file_digest():
    statement = signing.build_statement("a" * 64, "audit.pdf", "b" * 64, "pdf", "2026-11-27T00:00:00Z")
    assert statement == {"kind": "ledger.audit-signature", "algorithm": "Ed25519", "report_digest": "a" * 64,
                         "file": "audit.pdf", "file_sha256": "b" * 64, "format": "pdf",
                         "signed_at": "2026-11-27T00:00:00Z"}


def test_signing_with_a_missing_key_fails_before_any_work(report_files, tmp_path, capsys):
    runs, _private, _public = report_files
    code, _, err = run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(tmp_path / "r.html"),
                           "--sign", str(tmp_path / "nope"))
    assert code == 1 and "cannot read the private key" in err and not (tmp_path / "r.html").exists()
