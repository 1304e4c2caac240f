"""The gateway's pure parts (authorized_keys, settings) and the identity it gives the store:
a read-only key is refused by the store, and every audit row names key-id, fingerprint
and client address. The SSH behaviour itself is tested end to end in e2e/test_gateway.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
from sqlmodel import Session

from gateway.config import gateway_settings
from gateway.keys import AuthorizedKeysError, AuthorizedKeysFile, parse_authorized_keys
from store import campaigns, profiles, segments
from store.actors import gateway_actor
from store.audit import audit_log
from store.db import create_workspace, transaction
from store.errors import ReadOnlyError, StoreError

ROOT = Path(__file__).resolve().parents[1]


def public_key() -> tuple[str, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key().decode().strip(), key.get_fingerprint("sha256")


def test_authorized_keys_give_role_and_key_id_by_fingerprint():
    (alice, alice_fp), (bob, bob_fp), (nora, nora_fp) = public_key(), public_key(), public_key()
    keys = parse_authorized_keys(
        "# the support team\n"
        f'role="operator",key-id="alice" {alice}\n'
        f'key-id="bob",role="read_only" {bob}\n'
        "\n"
        f'key-id="nora" {nora}\n'
    )
    assert (keys[alice_fp].role, keys[alice_fp].key_id, keys[alice_fp].problem) == (
        "operator",
        "alice",
        None,
    )
    assert keys[bob_fp].role == "read_only" and keys[bob_fp].problem is None
    # A key without a role authenticates but is told why it gets no console.
    assert "no role" in keys[nora_fp].problem and "line 5" in keys[nora_fp].problem


@pytest.mark.parametrize(
    "line, message",
    [
        ('role="operator",key-id="a" ssh-ed25519 AAAAnotbase64', "not a public key"),
        ('role=operator,key-id="a" {key}', "needs a value"),
        ('role="operator",command="sh",key-id="a" {key}', "'command' is not supported"),
        ('role="operator",role="read_only",key-id="a" {key}', "given twice"),
        ("", "no keys"),
    ],
)
def test_malformed_authorized_keys_are_rejected_whole_with_the_line(line, message):
    key, _ = public_key()
    with pytest.raises(AuthorizedKeysError, match=message):
        parse_authorized_keys(line.format(key=key))


def test_key_ids_and_roles_are_checked():
    key, fp = public_key()
    bad_role = parse_authorized_keys(f'role="admin",key-id="a" {key}')[fp]
    assert "role 'admin'" in bad_role.problem
    bad_id = parse_authorized_keys(f'role="operator",key-id="a b;rm" {key}')[fp]
    assert "key-id 'a b;rm'" in bad_id.problem


def test_a_malformed_edit_keeps_the_last_good_copy(tmp_path):
    (alice, alice_fp), (bob, bob_fp) = public_key(), public_key()
    path = tmp_path / "authorized_keys"
    path.write_text(f'role="operator",key-id="alice" {alice}\n')
    file = AuthorizedKeysFile(path)
    assert set(file.current()) == {alice_fp}
    path.write_text(f'role="operator",key-id="bob" {bob}\nrole="operator" garbage\n')
    assert set(file.current()) == {alice_fp} and "line 2" in file.error
    path.write_text(f'role="operator",key-id="bob" {bob}\n')
    assert set(file.current()) == {bob_fp} and file.error is None


def test_settings_flags_win_over_the_config_file_over_defaults(tmp_path):
    table = {"listen": "127.0.0.1:2200", "idle_timeout": 60, "host_key": str(tmp_path / "hk")}
    settings = gateway_settings(table, listen="0.0.0.0:2301")
    assert (settings.host, settings.port, settings.idle_timeout) == ("0.0.0.0", 2301, 60.0)
    assert settings.host_key == tmp_path / "hk"
    assert settings.authorized_keys.name == "authorized_keys"  # the documented default
    defaults = gateway_settings({})
    assert (defaults.port, defaults.idle_timeout, defaults.max_sessions_per_key) == (2222, 1800, 5)
    with pytest.raises(StoreError, match="unknown setting"):
        gateway_settings({"idle_timout": 5})
    with pytest.raises(StoreError, match="positive number"):
        gateway_settings({"max_sessions": 0})
    with pytest.raises(StoreError, match="HOST:PORT"):
        gateway_settings({}, listen="2222")


def test_read_only_key_is_refused_by_the_store_and_audited_with_key_id_and_fingerprint(engine):
    operator = gateway_actor("alice", "operator", "SHA256:alicefp", "198.51.100.7", 40022)
    viewer = gateway_actor("bob", "read_only", "SHA256:bobfp", "198.51.100.8", 40023)
    with transaction(engine) as session:
        database = profiles.create_database(session, operator, "shop", [("region", "text")])
        segment = segments.create_segment(session, operator, "everyone")
        session.flush()
        campaigns.create_campaign(session, operator, "Spring", database, segment)
    with transaction(engine) as session, pytest.raises(ReadOnlyError, match="bob is read-only"):
        campaigns.activate(session, viewer, campaigns.get_campaign(session, "Spring"))
    with Session(engine) as session:
        assert campaigns.get_campaign(session, "Spring").status == "draft"
        lines = audit_log(session, limit=10)
        refused = audit_log(session, actor="bob")
        created = audit_log(session, action_prefix="campaign.create")
    assert [(r.actor, r.outcome, r.key_fingerprint, r.origin) for r in refused] == [
        ("bob", "refused", "SHA256:bobfp", "ssh 198.51.100.8:40023")
    ]
    assert [(r.actor, r.key_fingerprint) for r in created] == [("alice", "SHA256:alicefp")]
    assert all(line.key_fingerprint for line in lines)  # every row of a gateway session
    assert lines[0].action == "campaign.activate"  # newest first


def test_plain_cli_commands_do_not_import_the_gateway(tmp_path):
    create_workspace(f"sqlite:///{tmp_path / 'w.db'}").dispose()  # what `init` runs
    code = (
        "import sys\n"
        "from console.cli.main import main\n"
        f"assert main(['--db', {str(tmp_path / 'w.db')!r}, 'audit', '--json']) == 0\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('asyncssh', 'gateway', 'textual')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
