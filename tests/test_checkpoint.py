"""ledger.checkpoint: C2SP signed notes and tlog-checkpoints, Ed25519, against published vectors."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import checkpoint as C
from ledger import merkle as M

# --- known-answer vectors ---------------------------------------------------------------------------------------------

# golang.org/x/mod/sumdb/note note_test.go (TestNewSigner, TestSign, TestOpen)
# and the package doc example in note.go.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n")

# Real checkpoints of the Go checksum database (origin "go.sum database tree",
# key name "sum.golang.org"), as quoted in public documents:
#  * transparency-dev/witness cmd README ("Testing with HTTPie"): size 15081221,
#    followed by two cosignatures from test.example.com (unknown keys here);
#  * a Japanese blog post on Go modules (sumdb lookup cache), size 63096908.
# Verifier key of sum.golang.org, as embedded in the go command:
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CP_1 = (
    "go.sum database tree\n15081221\nBoMMe1wd25Tco0mYGROkyqxHZWx+hcSCtMV315Lu6Lg=\n\n"
    "\u2014 sum.golang.org Az3grilD7vQqTrv66jRgKM84Y80KTprrSt4bKmiOPxgmS5ZVBTeCl6dUvjYnN13R+C8j0jGY1WnUADGMkok3U0m2Zgo=\n"
    "\u2014 test.example.com qTGhC3917mAr6hGh+T55tNjxaej/D/GQivJZRIj7XGdAcQOTqfMWIPgp/v/904LEduN/h2sSRtHUJXUL4b9Gm7Bz4Qc=\n"
    "\u2014 test.example.com /Pa7Y/dUvWMAAAAAQVwkQVi81ArPV7BIaQYrMIxyzY0m8a4BdeeBhSKd3PviPK4/3Sd+NKSc5N7PDTCfAkUSVniN+R2oKIggA4iiDQ==\n"
).encode("utf-8")
SUMDB_CP_2 = (
    "go.sum database tree\n63096908\n8lHrQPRYe4KT4WQ9/Qk8/taKnD6IRHbFgfN7vQE2Y54=\n\n"
    "\u2014 sum.golang.org Az3gri/oVBN1jAhNZ/iS+W31psFAWRT20/GyrhpU6taFwulQGetBkH5S7wpGXdS935jiIGiUUAXBVHzT/P6fYhqAmAk=\n"
).encode("utf-8")


def test_go_note_kat_keys():
    s = C.Signer.parse(PETER_SKEY)
    assert s.name == "PeterNeumann" and s.key_id == 0xC74F20A3
    assert s.encode() == PETER_SKEY
    assert s.verifier().encode() == PETER_VKEY
    v = C.Verifier.parse(PETER_VKEY)
    assert v == s.verifier()
    # key ID = SHA-256(name || "\n" || 0x01 || pubkey)[:4]
    assert hashlib.sha256(b"PeterNeumann\n\x01" + v.public_key).digest()[:4] == bytes.fromhex("c74f20a3")


def test_go_note_kat_sign_exact_bytes():
    msg = C.sign_note(GO_TEXT, [C.Signer.parse(PETER_SKEY)])
    assert msg == (GO_TEXT + "\n" + PETER_SIG).encode("utf-8")


def test_go_note_kat_open():
    peter, enoch = C.Verifier.parse(PETER_VKEY), C.Verifier.parse(ENOCH_VKEY)
    msg = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    n = C.open_note(msg, [peter])
    assert n.text == GO_TEXT
    assert [(s.name, s.key_id) for s in n.sigs] == [("PeterNeumann", 0xC74F20A3)]
    assert [(s.name, s.key_id) for s in n.unverified_sigs] == [("EnochRoot", 0xAF0CFE78)]
    n = C.open_note(msg, [peter, enoch])
    assert len(n.sigs) == 2 and not n.unverified_sigs
    with pytest.raises(C.UnverifiedNote):
        C.open_note(msg, [])
    # corrupted known signature: whole note rejected (as Go's TestOpen)
    bad = (GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]).encode()
    with pytest.raises(C.InvalidNoteSignature):
        C.open_note(bad, [peter])
    # duplicates of a verified signature are ignored; too many lines rejected
    C.open_note((GO_TEXT + "\n" + PETER_SIG * 3 + ENOCH_SIG * 2).encode(), [peter])
    with pytest.raises(C.NoteError):
        C.open_note((GO_TEXT + "\n" + PETER_SIG * 101).encode(), [peter])


@pytest.mark.parametrize("bad", [
    GO_TEXT,                                               # no signatures
    GO_TEXT + "\n",                                        # blank line, nothing after
    GO_TEXT + "\n" + PETER_SIG[:-1],                       # last line without newline
    "\x01" + GO_TEXT + "\n" + PETER_SIG,                   # control character
    GO_TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
    GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    GO_TEXT.replace("\n", "\r\n") + "\r\n" + PETER_SIG,    # CRLF
    GO_TEXT + "\n" + PETER_SIG.replace("\u2014", "-"),     # hyphen, not em dash
    GO_TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),       # missing base64 padding
])
def test_go_note_kat_malformed(bad):
    with pytest.raises(C.NoteError):
        C.open_note(bad.encode("utf-8"), [C.Verifier.parse(PETER_VKEY)])


def test_invalid_utf8_rejected():
    with pytest.raises(C.NoteError):
        C.open_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), [C.Verifier.parse(PETER_VKEY)])


def test_key_manglings_rejected():
    # every proper substring and every single-byte increment (Go's TestNewVerifier/TestNewSigner)
    for key, parse in [(PETER_VKEY, C.Verifier.parse), (PETER_SKEY, C.Signer.parse)]:
        b = key
        for i in range(len(b) + 1):
            for j in range(i + 1, len(b) + 1):
                if i == 0 and j == len(b):
                    continue
                with pytest.raises((C.NoteError, ValueError)):
                    parse(b[i:j])
        for i in range(len(b)):
            mangled = b[:i] + chr(ord(b[i]) + 1) + b[i + 1:]
            with pytest.raises((C.NoteError, ValueError)):
                parse(mangled)
    # wrong length key with adjusted key hash; unknown algorithm with adjusted hash
    with pytest.raises(C.NoteError):
        C.Verifier.parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(C.NoteError):
        C.Verifier.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_real_sumdb_checkpoints_verify():
    v = C.Verifier.parse(SUMDB_VKEY)
    assert v.name == "sum.golang.org" and v.key_id == 0x033DE0AE
    cp, note = C.open_checkpoint(SUMDB_CP_1, [v], origin="go.sum database tree")
    assert cp.size == 15081221 and cp.extensions == ()
    assert base64.b64encode(cp.root).decode() == "BoMMe1wd25Tco0mYGROkyqxHZWx+hcSCtMV315Lu6Lg="
    assert len(note.sigs) == 1 and len(note.unverified_sigs) == 2   # cosignatures ignored
    cp, _ = C.open_checkpoint(SUMDB_CP_2, [v], origin="go.sum database tree")
    assert cp.size == 63096908
    # tampering the size by one digit breaks the signature
    with pytest.raises(C.InvalidNoteSignature):
        C.open_checkpoint(SUMDB_CP_2.replace(b"63096908", b"63096909"), [v])
    with pytest.raises(C.NoteError):
        C.open_checkpoint(SUMDB_CP_2, [v], origin="sum.golang.org")


# --- checkpoint body rules --------------------------------------------------------------------------------------------

ROOT = M.leaf_hash(b"x")


def test_format_checkpoint_exact():
    body = C.format_checkpoint("example.com/ledger", 7, ROOT)
    assert body == "example.com/ledger\n7\n" + base64.b64encode(ROOT).decode() + "\n"
    assert C.format_checkpoint("o", 0, M.empty_root()) == \
        "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    body = C.format_checkpoint("o", 1, ROOT, ["ext one", "ext2"])
    assert body.endswith("\next one\next2\n")
    assert C.parse_checkpoint(body) == C.Checkpoint("o", 1, ROOT, ("ext one", "ext2"))


@pytest.mark.parametrize("args", [
    ("", 1, ROOT, ()), ("a\nb", 1, ROOT, ()), ("o", -1, ROOT, ()), ("o", 1 << 64, ROOT, ()),
    ("o", 1, ROOT[:31], ()), ("o", 1, ROOT, ("",)), ("o", 1, ROOT, ("a\nb",)),
    ("o\t", 1, ROOT, ()), ("o", True, ROOT, ()),
])
def test_format_checkpoint_rejects(args):
    with pytest.raises(C.NoteError):
        C.format_checkpoint(*args)


R64 = base64.b64encode(ROOT).decode()
R31 = base64.b64encode(ROOT[:31]).decode()


@pytest.mark.parametrize("text", [
    f"o\n1\n{R64}",                     # no final newline
    "o\n1\n",                          # too few lines
    f"\n1\n{R64}\n",                    # empty origin
    f"o\n01\n{R64}\n",                  # leading zero
    f"o\n+1\n{R64}\n",                  # sign
    f"o\n-1\n{R64}\n",
    f"o\n 1\n{R64}\n",
    f"o\n1.0\n{R64}\n",
    f"o\n١\n{R64}\n",                   # non-ASCII digit
    f"o\n18446744073709551616\n{R64}\n",  # 2**64
    f"o\n1\n{R64[:-1]}\n",              # missing padding
    f"o\n1\n{R31}\n",   # 31 bytes
    "o\n1\n" + base64.urlsafe_b64encode(bytes([0xfb]) * 32).decode() + "\n",  # URL alphabet
    f"o\n1\n{R64[:-2]}B=\n",            # non-canonical trailing bits
    f"o\n1\n{R64}\n\n",                 # blank extension line
    f"o\n1\n{R64}\n\next\n",            # blank line inside the body
])
def test_parse_checkpoint_rejects(text):
    with pytest.raises(C.NoteError):
        C.parse_checkpoint(text)


def test_parse_checkpoint_accepts_zero_and_max():
    assert C.parse_checkpoint(f"o\n0\n{R64}\n").size == 0
    assert C.parse_checkpoint(f"o\n18446744073709551615\n{R64}\n").size == (1 << 64) - 1


# --- round trips, tampering, wrong keys -------------------------------------------------------------------------------

def _signer(name="example.com/ledger"):
    skey, vkey = C.generate_key(name)
    return C.Signer.parse(skey), C.Verifier.parse(vkey)


def test_generated_key_strings():
    skey, vkey = C.generate_key("example.com/ledger")
    assert skey.startswith("PRIVATE+KEY+example.com/ledger+")
    s, v = C.Signer.parse(skey), C.Verifier.parse(vkey)
    assert s.verifier() == v and s.encode() == skey and v.encode() == vkey
    with pytest.raises(C.NoteError):
        C.generate_key("has space")
    with pytest.raises(C.NoteError):
        C.generate_key("a+b")
    with pytest.raises(C.NoteError):
        C.generate_key("nbsp\u00a0name")


def test_round_trip_and_tamper():
    s, v = _signer()
    cp = C.Checkpoint("example.com/ledger", 1234, ROOT)
    msg = C.sign_checkpoint(cp, [s])
    assert msg.count(b"\n\n") == 1 and msg.endswith(b"\n")
    line = msg.split(b"\n\n")[1].decode()
    assert line.startswith("\u2014 example.com/ledger ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 68 and int.from_bytes(blob[:4], "big") == v.key_id
    got, note = C.open_checkpoint(msg, [v], origin="example.com/ledger")
    assert got == cp

    # tamper with any byte of the body -> rejected (bad signature or malformed)
    body_len = len(msg.split(b"\n\n")[0]) + 1
    for i in range(body_len):
        t = bytearray(msg)
        t[i] = (t[i] + 1) % 128 or 0x41
        if t[i] == 0x0A:
            t[i] = 0x42
        with pytest.raises(C.NoteError):
            C.open_checkpoint(bytes(t), [v])

    # wrong key (same name, other key -> other key ID -> unknown -> unverified)
    _, other = _signer()
    with pytest.raises(C.UnverifiedNote):
        C.open_checkpoint(msg, [other])
    # same name and key ID but a different public key (forged verifier): fails to verify
    forged = C.Verifier(v.name, v.key_id, other.public_key)
    with pytest.raises(C.InvalidNoteSignature):
        C.open_checkpoint(msg, [forged])
    # ambiguous verifier list
    with pytest.raises(C.NoteError):
        C.open_note(msg, [v, forged])


def test_multiple_signers_and_cosigning():
    s1, v1 = _signer("example.com/ledger")
    s2, v2 = _signer("witness.example/w1")
    cp = C.Checkpoint("example.com/ledger", 5, ROOT)
    msg = C.sign_checkpoint(cp, [s1, s2])
    n = C.open_note(msg, [v2])
    assert [s.name for s in n.sigs] == ["witness.example/w1"]
    assert [s.name for s in n.unverified_sigs] == ["example.com/ledger"]
    # add a signature to an existing note, keeping the old one
    s3, v3 = _signer("witness.example/w2")
    n1 = C.open_note(msg, [v1, v2])
    msg2 = C.sign_note(n1.text, [s3], existing=n1.sigs)
    n2 = C.open_note(msg2, [v1, v2, v3])
    assert {s.name for s in n2.sigs} == {"example.com/ledger", "witness.example/w1", "witness.example/w2"}


def test_sign_note_rejects_bad_text():
    s, _ = _signer()
    for text in ["no newline", "tab\there\n", "cr\r\n"]:
        with pytest.raises(C.NoteError):
            C.sign_note(text, [s])


def test_note_text_may_contain_blank_lines_split_at_last():
    s, v = _signer()
    text = "a\n\nb\n"
    msg = C.sign_note(text, [s])
    assert C.open_note(msg, [v]).text == text
    with pytest.raises(C.NoteError):          # but not a checkpoint body
        C.parse_checkpoint(text)


@settings(max_examples=50, deadline=None)
@given(origin=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                                             blacklist_categories=("Cs",)), min_size=1, max_size=40),
       size=st.integers(min_value=0, max_value=(1 << 64) - 1),
       root=st.binary(min_size=32, max_size=32),
       ext=st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                            min_size=1, max_size=20), max_size=3))
def test_checkpoint_round_trip_property(origin, size, root, ext):
    s, v = SIGNER_VERIFIER
    cp = C.Checkpoint(origin, size, root, tuple(ext))
    msg = C.sign_checkpoint(cp, [s])
    assert C.open_checkpoint(msg, [v], origin=origin)[0] == cp


SIGNER_VERIFIER = _signer("example.com/prop")
