"""The gateway's keys: its own Ed25519 host key and the authorized_keys file it owns.

authorized_keys is OpenSSH format, one key a line, with two options of ours:

    role="operator",key-id="alice" ssh-ed25519 AAAAC3Nz... alice@laptop
    role="read_only",key-id="bob" ssh-ed25519 AAAAC3Nz... bob@desk

A line whose key or option syntax cannot be parsed makes the whole file malformed (the
gateway keeps its last good copy, see `AuthorizedKeysFile`). A parsed key without a
valid role or key-id is kept, so that its owner authenticates and is then told exactly
what is missing (`AuthorizedKey.problem`) instead of a bare "Permission denied".
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncssh

log = logging.getLogger("gateway")

ROLES = ("operator", "read_only")
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
KNOWN_OPTIONS = ("role", "key-id")
OPTION = re.compile(r'([A-Za-z0-9-]+)(?:="((?:[^"\\]|\\.)*)")?')


class AuthorizedKeysError(ValueError):
    """The file cannot be used as a whole (the message names the line)."""


@dataclass(frozen=True)
class AuthorizedKey:
    fingerprint: str  # SHA256:…, as `ssh-keygen -l` prints it
    role: str | None
    key_id: str | None
    line: int

    @property
    def problem(self) -> str | None:
        """Why this key gets no console, or None when it is usable."""
        if self.role not in ROLES:
            given = "no role" if self.role is None else f"role {self.role!r}"
            return (
                f"this key has {given} in the gateway's authorized_keys (line {self.line}); "
                'an administrator must add role="operator" or role="read_only"'
            )
        if self.key_id is None or not KEY_ID.match(self.key_id):
            given = "no key-id" if self.key_id is None else f"key-id {self.key_id!r}"
            return (
                f"this key has {given} in the gateway's authorized_keys (line {self.line}); "
                'an administrator must add key-id="NAME" (letters, digits, . _ @ -)'
            )
        return None


def _split_options(text: str, line: int) -> tuple[dict[str, str], str]:
    """Options before the key type, as OpenSSH writes them: a,b="c",d="e\\"f"."""
    options: dict[str, str] = {}
    pos = 0
    while True:
        match = OPTION.match(text, pos)
        if not match or match.end() == pos:
            raise AuthorizedKeysError(
                f"line {line}: cannot read the options at {text[pos:][:20]!r}"
            )
        name, value = match.group(1), match.group(2)
        if name not in KNOWN_OPTIONS:
            raise AuthorizedKeysError(
                f"line {line}: option {name!r} is not supported by the gateway "
                f"(only {', '.join(KNOWN_OPTIONS)})"
            )
        if value is None:
            raise AuthorizedKeysError(f'line {line}: option {name} needs a value: {name}="…"')
        if name in options:
            raise AuthorizedKeysError(f"line {line}: option {name} is given twice")
        options[name] = re.sub(r"\\(.)", r"\1", value)
        pos = match.end()
        if pos >= len(text) or text[pos] in " \t":
            return options, text[pos:].strip()
        if text[pos] != ",":
            raise AuthorizedKeysError(f"line {line}: expected ',' or a space after {name}")
        pos += 1


def parse_authorized_keys(text: str) -> dict[str, AuthorizedKey]:
    """Keys by fingerprint. Raises AuthorizedKeysError for a file that cannot be used."""
    keys: dict[str, AuthorizedKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        options: dict[str, str] = {}
        key_text = line
        if not line.startswith(("ssh-", "ecdsa-", "sk-")):
            options, key_text = _split_options(line, number)
        try:
            key = asyncssh.import_public_key(key_text)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise AuthorizedKeysError(f"line {number}: not a public key ({exc})") from None
        fingerprint = key.get_fingerprint("sha256")
        if fingerprint in keys:
            raise AuthorizedKeysError(
                f"line {number}: the same key is already on line {keys[fingerprint].line}"
            )
        keys[fingerprint] = AuthorizedKey(
            fingerprint, options.get("role"), options.get("key-id"), number
        )
    if not keys:
        raise AuthorizedKeysError("no keys in the file")
    return keys


class AuthorizedKeysFile:
    """The authorized_keys file, re-read when it changes (new connections see an edit
    without a restart). A malformed edit is logged and the last good copy stays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, AuthorizedKey] = {}
        self._seen: tuple | None = None
        self.error: str | None = None

    def current(self) -> dict[str, AuthorizedKey]:
        try:
            st = self.path.stat()
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as exc:
            seen = ("missing", str(exc))
        if seen != self._seen:
            self._seen = seen
            self._reload()
        return self.keys

    def _reload(self) -> None:
        try:
            keys = parse_authorized_keys(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, AuthorizedKeysError) as exc:
            self.error = f"{self.path}: {exc}"
            kept = (
                f"keeping the last good copy ({len(self.keys)} keys)"
                if self.keys
                else ("no keys are accepted until it is fixed")
            )
            log.error("authorized_keys rejected: %s; %s", self.error, kept)
            return
        self.error = None
        self.keys = keys
        log.info("authorized_keys loaded: %d keys from %s", len(keys), self.path)


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The gateway's Ed25519 host key, created on first start with mode 0600 and kept,
    so its fingerprint stays the same across restarts (engineers pin it)."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="campaign-console gateway")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    log.info("host key created: %s", path)
    return key
