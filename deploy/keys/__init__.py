"""Signing keys on the workstation: key pairs, the trust ledger, rotation, revocation, updates.

Private keys never leave this side; devices learn new trust through signed trust updates.
"""

from deploy.keys.ledger import (
    LEDGER_NAME,
    UPDATES_DIR,
    Ledger,
    LedgerKey,
    apply_update,
    issue_update,
    load_ledger,
    read_update,
    save_ledger,
)
from deploy.keys.lifecycle import (
    DEFAULT_KEY_DIR,
    REVOKED_DIR,
    KeyInfo,
    generate_key,
    key_dir_from_env,
    list_keys,
    resolve_key,
    revoke_key,
    rotate_key,
)
from deploy.keys.signing import generate_keypair, load_private_key, sign_trust_update

__all__ = [
    "DEFAULT_KEY_DIR",
    "LEDGER_NAME",
    "REVOKED_DIR",
    "UPDATES_DIR",
    "KeyInfo",
    "Ledger",
    "LedgerKey",
    "apply_update",
    "generate_key",
    "generate_keypair",
    "issue_update",
    "key_dir_from_env",
    "list_keys",
    "load_ledger",
    "load_private_key",
    "read_update",
    "resolve_key",
    "revoke_key",
    "rotate_key",
    "save_ledger",
    "sign_trust_update",
]
