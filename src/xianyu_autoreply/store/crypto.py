"""Secrets at rest: Fernet tokens under one or more keys (MultiFernet).

The first key encrypts; every key decrypts, so a key is rotated by putting a new one first, re-encrypting
(`SecretBox.rotate`, `Store.reencrypt_secrets`) and only then dropping the old one. Without `XAR_SECRET_KEY` a key
is generated once into `$XAR_DATA_DIR/secret.key` (mode 0600): losing that file loses every stored cookie.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import DecryptionError, SecretKeyError

KEY_FILE_NAME = "secret.key"


class SecretBox:
    """Encrypts and decrypts text secrets (cookies, proxies, API keys, stock lines) with Fernet."""

    __slots__ = ("_fernet", "_key_count", "_primary")

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key given")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip() if isinstance(key, bytes) else key.strip().encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                # Name the position, never the key itself.
                raise SecretKeyError(
                    f"secret key #{position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                    "make one with `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._primary = fernets[0]
        self._key_count = len(fernets)

    def __repr__(self) -> str:
        return f"SecretBox(keys={self._key_count})"

    @classmethod
    def from_config(cls, *, secret_key: str | None, data_dir: Path) -> SecretBox:
        """Keys from `XAR_SECRET_KEY` (comma-separated, first encrypts) or from the generated key file."""
        if secret_key and secret_key.strip():
            return cls([part for part in secret_key.split(",") if part.strip()])
        return cls([load_or_create_key_file(Path(data_dir) / KEY_FILE_NAME)])

    @staticmethod
    def generate_key() -> str:
        """A new random Fernet key, as text."""
        return Fernet.generate_key().decode("ascii")

    @property
    def key_count(self) -> int:
        """How many keys decrypt (the first also encrypts)."""
        return self._key_count

    def encrypt(self, plaintext: str) -> str:
        """Encrypt text under the first key."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Decrypt a token made under any configured key."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise DecryptionError(
                "a stored secret does not decrypt with the configured key(s): XAR_SECRET_KEY or "
                f"{KEY_FILE_NAME} changed; put the old key back (after a comma) to read it"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the first key (unchanged plaintext)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise DecryptionError("a stored secret does not decrypt with the configured key(s)") from None

    def needs_rotation(self, token: str) -> bool:
        """Whether a token was not made under the first key."""
        if self._key_count == 1:
            return False
        try:
            self._primary.decrypt(token.encode("ascii"))
        except InvalidToken:
            return True
        return False


def load_or_create_key_file(path: Path) -> str:
    """Read the key file, or create it once with a new key (mode 0600), safe against a concurrent start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(SecretBox.generate_key() + "\n")
            file.flush()
            os.fsync(file.fileno())
        return path.read_text(encoding="ascii").strip()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Our own file, readable by others: tighten it rather than keep serving from an exposed key.
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        # A concurrent creator between O_EXCL and its write; its key is there a moment later.
        raise SecretKeyError(f"{path} is empty; remove it to generate a new key (stored secrets are then lost)")
    return key
