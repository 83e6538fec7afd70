"""OpenSSF model signing of a run's model (`ledger sign-model RUN --key KEY`): the files of the recorded model
archive, unpacked and signed with model-signing's private-key method. The signature is a Sigstore bundle, made
offline (no transparency log), that model-signing's own command verifies:

    model_signing verify key MODEL_DIR --signature MODEL_DIR.sig --public_key KEY.pub

model-signing signs with elliptic-curve keys only (P-256, P-384, P-521), not Ed25519: make one with
`ledger audit keygen KEYFILE --algorithm ecdsa-p256`.
"""

from __future__ import annotations

from pathlib import Path

from ledger.audit.signing import key_id, read_file
from ledger.errors import UsageError

CURVES = ("secp256r1", "secp384r1", "secp521r1")
KEYGEN_HINT = "make an elliptic-curve key with: ledger audit keygen KEYFILE --algorithm ecdsa-p256"


def load_model_signing_key(path: str | Path):
    """The EC private key at `path` (PEM, unencrypted), or a one-line UsageError saying which key it takes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(read_file(path, "private key"), password=None)
    except TypeError:
        raise UsageError(f"the private key {path} is encrypted", "give an unencrypted EC key") from None
    except ValueError as err:
        raise UsageError(f"{path} is not a PEM private key ({err})", KEYGEN_HINT) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in CURVES:
        kind = getattr(getattr(key, "curve", None), "name", None) or type(key).__name__.lstrip("_")
        raise UsageError(f"{path} is a {kind} key; OpenSSF model signing takes an EC key on P-256, P-384 or P-521",
                         KEYGEN_HINT)
    return key


def sign_model_dir(model_dir: Path, key_path: str | Path, signature: Path) -> str:
    """Sign every file under `model_dir` with the EC key at `key_path`; write the bundle to `signature`. Returns
    the signing key's id. A signature inside the folder is left out of what is signed, as model_signing's
    command does."""
    from model_signing import hashing, signing

    key = load_model_signing_key(key_path)
    ignored = [signature] if signature.resolve().is_relative_to(model_dir.resolve()) else []
    (signing.Config()
     .use_elliptic_key_signer(private_key=Path(key_path))
     .set_hashing_config(hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True))
     .sign(model_dir, signature))
    return key_id(key.public_key())


def build_verify_command(model_dir: Path, signature: Path, public_key: str) -> str:
    """The command that checks the signature with model-signing's own tool."""
    return f"model_signing verify key {model_dir} --signature {signature} --public_key {public_key}"
