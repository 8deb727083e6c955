"""Secrets at rest: Fernet encryption of connection secrets and Segment write keys.

The key comes from SEGMENT_ELT_FERNET_KEY; on the embedded default it is generated once into
`.local/fernet.key` (mode 0600). Plain secrets exist only in memory and in the one answer of
`segment-elt connections create`.
"""

from __future__ import annotations

import functools
import os
import secrets

from cryptography.fernet import Fernet, InvalidToken

from segment_elt.settings import settings


class SecretKeyError(RuntimeError):
    """The Fernet key is missing, malformed, or not the one the secrets were encrypted with."""


@functools.lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError) as exc:
        raise SecretKeyError(
            "SEGMENT_ELT_FERNET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from exc


def fernet_key() -> str:
    current = settings()
    if current.fernet_key:
        return current.fernet_key
    path = current.local_dir / "fernet.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(Fernet.generate_key().decode())
    return path.read_text().strip()


def encrypt(plain: str) -> str:
    return _fernet(fernet_key()).encrypt(plain.encode()).decode()


@functools.lru_cache(maxsize=4096)
def _decrypt(key: str, token: str) -> str:
    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyError(
            "a stored secret cannot be decrypted: SEGMENT_ELT_FERNET_KEY differs from the key it was encrypted with"
        ) from exc


def decrypt(token: str) -> str:
    return _decrypt(fernet_key(), token)


def new_secret() -> str:
    """A strong random shared secret for signing webhooks (256 bits)."""
    return secrets.token_urlsafe(32)
