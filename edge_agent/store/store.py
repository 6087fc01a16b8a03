"""The device's state database: users, screenings, reviews, updates, audit chain, case images."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.store import audit as _audit
from edge_agent.store import auditkey as _key
from edge_agent.store import cases as _cases
from edge_agent.store import digests as _d
from edge_agent.store import reconcile as _reconcile
from edge_agent.store import sqlite as _sqlite
from edge_agent.store.connections import Connections, utc_now
from edge_agent.store.keying import keyed_already, keyed_chain, lost_key_message
from edge_agent.store.records import (
    Case,
    Retention,
    Review,
    Update,
    User,
    review_from_row,
    update_from_row,
)
from edge_agent.store.schema import ROLES, SCHEMA_VERSION, StoreError, migrate
from edge_agent.store.sqlite import SqliteError
from models import NUM_GRADES

_USER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _json(value: dict[str, Any], what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} must be a JSON-serialisable dict without NaN ({e})") from e


class Store(Connections):
    """SQLite state in WAL mode; safe to share between threads (one connection per thread).

    Every change that matters (users, screenings, reviews, case images and their retention,
    updates, backups) appends an audit entry in the same transaction, so the log and the data
    cannot disagree. Screenings, reviews and images are entered by the sha256 of their content,
    and entries carry a MAC made with the device key kept in ``audit_key`` (default
    ``keys/audit.key`` beside the database, mode 0600): ``verify_audit`` names every row edited,
    deleted, swapped or inserted behind the agent's back, and ``signed_head`` is the anchor the
    fleet keeps off the device.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        cases_dir: Path | None = None,
        retention: Retention | None = None,
        clock: Callable[[], datetime] = utc_now,
        busy_timeout_s: float = 30.0,
        audit_key: Path | None = None,
        rekey: bool = False,
    ) -> None:
        """``rekey``: the audit key was lost; start a new one, opened by an ``audit.rekeyed``
        entry that covers the old head, then an entry for every row (as the first keying)."""
        super().__init__(Path(path), clock, busy_timeout_s)
        self.cases_dir = cases_dir if cases_dir is not None else self.path.parent / "cases"
        self.retention = retention if retention is not None else Retention()
        self.audit_key = audit_key or self.path.parent / "keys" / "audit.key"
        if not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: directory {self.path.parent} does not exist")
        new_key = not self.audit_key.exists()
        rekeying = new_key and keyed_already(self._conn())
        if rekeying != rekey:
            raise StoreError(lost_key_message(self.audit_key, self.path, rekey))
        self._key = _key.load_or_create(self.audit_key)
        action = _d.REKEYED if rekeying else _d.KEYED
        step = keyed_chain(self._key, self._time, self.cases_dir, SCHEMA_VERSION, new_key, action)
        migrate(self._conn(), self.path, step)
        if rekeying:  # a keyed database is past the migration that runs the step: run it here
            with self._write() as conn:
                step(conn)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, *, actor: str = "system") -> str:
        """Create an account and return its bearer token (shown once; only its hash is kept)."""
        if not _USER_NAME.match(name or ""):
            raise StoreError(f"invalid user name {name!r}: 1-64 letters, digits, '.', '_', '-'")
        if role not in ROLES:
            raise StoreError(f"invalid role {role!r} for user {name!r}; roles: {', '.join(ROLES)}")
        token = secrets.token_urlsafe(32)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"user {name!r} already exists")
            now = self._time()
            conn.execute(
                "INSERT INTO users (name, role, token_sha256, created) VALUES (?, ?, ?, ?)",
                (name, role, _token_hash(token), now),
            )
            _audit.append(conn, self._key, now, actor, "user.add", {"user": name, "role": role})
        return token

    def rotate_token(self, name: str, *, actor: str = "system") -> str:
        """Give ``name`` a new token (the old one stops working) and return it."""
        token = secrets.token_urlsafe(32)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE users SET token_sha256 = ? WHERE name = ?", (_token_hash(token), name)
            )
            if cur.rowcount != 1:
                raise StoreError(f"no user {name!r}")
            _audit.append(conn, self._key, self._time(), actor, "user.token", {"user": name})
        return token

    def set_disabled(self, name: str, disabled: bool = True, *, actor: str = "system") -> None:
        """Disable (or re-enable) an account; a disabled account's token is refused."""
        with self._write() as conn:
            cur = conn.execute("UPDATE users SET disabled = ? WHERE name = ?", (disabled, name))
            if cur.rowcount != 1:
                raise StoreError(f"no user {name!r}")
            action = "user.disable" if disabled else "user.enable"
            _audit.append(conn, self._key, self._time(), actor, action, {"user": name})

    def authenticate(self, token: str) -> User | None:
        """The enabled account holding ``token``, or None."""
        if not token:
            return None
        row = (
            self._conn()
            .execute(
                "SELECT name, role, created, disabled FROM users WHERE token_sha256 = ?",
                (_token_hash(token),),
            )
            .fetchone()
        )
        if row is None or row["disabled"]:
            return None
        return User(row["name"], row["role"], row["created"], bool(row["disabled"]))

    def users(self) -> list[User]:
        """All accounts, by name."""
        rows = self._conn().execute("SELECT name, role, created, disabled FROM users ORDER BY name")
        return [User(r["name"], r["role"], r["created"], bool(r["disabled"])) for r in rows]

    # -- screenings and reviews --------------------------------------------------------------

    def record_screening(
        self,
        *,
        user: str,
        model_version: int | None,
        request: dict[str, Any],
        result: dict[str, Any],
        case_id: str | None = None,
    ) -> str:
        """Store one screening and return its case id (a new uuid unless given)."""
        case_id = _cases.check_case_id(case_id) if case_id else str(uuid.uuid4())
        request_json, result_json = _json(request, "request"), _json(result, "result")
        with self._write() as conn:
            now = self._time()
            try:
                conn.execute(
                    "INSERT INTO screenings (case_id, created, user, model_version, request, "
                    "result) VALUES (?, ?, ?, ?, ?, ?)",
                    (case_id, now, user, model_version, request_json, result_json),
                )
            except sqlite3.IntegrityError as e:
                raise StoreError(f"case {case_id} already exists") from e
            digest = _d.screening_digest(now, user, model_version, request_json, result_json)
            detail = _d.screening_entry(case_id, model_version, digest)
            _audit.append(conn, self._key, now, user, _d.SCREEN, detail)
        return case_id

    def get_case(self, case_id: str) -> Case | None:
        """The case with its reviews (oldest first), or None when there is no such case."""
        conn = self._conn()
        row = conn.execute("SELECT * FROM screenings WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            return None
        reviews = conn.execute(
            "SELECT * FROM reviews WHERE case_id = ? ORDER BY id", (case_id,)
        ).fetchall()
        return Case(
            row["case_id"],
            row["created"],
            row["user"],
            row["model_version"],
            json.loads(row["request"]),
            json.loads(row["result"]),
            tuple(review_from_row(r) for r in reviews),
        )

    def recent_cases(self, limit: int = 50) -> list[Case]:
        """The latest ``limit`` cases, newest first."""
        ids = self._conn().execute(
            "SELECT case_id FROM screenings ORDER BY created DESC, rowid DESC LIMIT ?", (limit,)
        )
        return [c for (cid,) in ids.fetchall() if (c := self.get_case(cid)) is not None]

    def record_review(
        self,
        case_id: str,
        *,
        user: str,
        grade: int | None,
        gradable: bool = True,
        comment: str = "",
        labels: tuple[str, ...] | None = None,
        num_classes: int = NUM_GRADES,
    ) -> Review:
        """Record a clinician's verdict (nothing with ``gradable=False``); earlier reviews stay.
        ``grade`` is the class index, 0 to ``num_classes - 1`` (DR: the grade 0-4); a
        multilabel review gives ``labels`` (the findings' names, possibly none) and no grade."""
        missing = gradable and grade is None and labels is None
        if missing or (grade is not None and not 0 <= grade < num_classes):
            raise StoreError(
                f"review of case {case_id}: grade must be 0-{num_classes - 1}, got {grade!r}"
            )
        if not gradable and (grade is not None or labels is not None):
            raise StoreError(f"review of case {case_id}: an ungradable image has no grade")
        stored = None if labels is None else json.dumps(list(labels))
        with self._write() as conn:
            known = conn.execute("SELECT 1 FROM screenings WHERE case_id = ?", (case_id,))
            if known.fetchone() is None:
                raise StoreError(f"no case {case_id!r}")
            now = self._time()
            cur = conn.execute(
                "INSERT INTO reviews (case_id, user, grade, labels, gradable, comment, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (case_id, user, grade, stored, gradable, comment, now),
            )
            review_id = int(cur.lastrowid or 0)
            digest = _d.review_digest(case_id, user, grade, stored, gradable, comment, now)
            found = None if labels is None else list(labels)
            detail = _d.review_entry(review_id, case_id, grade, gradable, found, digest)
            _audit.append(conn, self._key, now, user, _d.REVIEW, detail)
        return Review(review_id, case_id, user, grade, gradable, comment, now, labels)

    # -- updates, audit, backup --------------------------------------------------------------

    def record_update(
        self,
        *,
        from_version: int | None,
        to_version: int | None,
        slot: str,
        status: str,
        detail: dict[str, Any] | None = None,
        actor: str = "installer",
    ) -> Update:
        """Record an install, rollback or failed attempt in the update history."""
        detail = detail or {}
        text = _json(detail, "update detail")
        with self._write() as conn:
            now = self._time()
            cur = conn.execute(
                "INSERT INTO updates (time, from_version, to_version, slot, status, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now, from_version, to_version, slot, status, text),
            )
            summary = {"from": from_version, "to": to_version, "slot": slot, "status": status}
            _audit.append(conn, self._key, now, actor, "update", summary)
            update_id = int(cur.lastrowid or 0)
        return Update(update_id, now, from_version, to_version, slot, status, json.loads(text))

    def updates(self) -> list[Update]:
        """The update history, oldest first."""
        rows = self._conn().execute("SELECT * FROM updates ORDER BY id")
        return [update_from_row(r) for r in rows]

    def audit(self, actor: str, action: str, detail: dict[str, Any] | None = None) -> None:
        """Append an entry (who did what) to the audit log; the actions that vouch for rows
        (screen, review, case.image, retention, audit.keyed) are the store's own."""
        if action in _d.CLINICAL_ACTIONS:
            raise StoreError(f"audit action {action!r} is written by the store itself only")
        with self._write() as conn:
            _audit.append(conn, self._key, self._time(), actor, action, detail or {})

    def audit_entries(self, since_seq: int = 0, limit: int = 1000) -> list[_audit.AuditEntry]:
        """Audit entries after ``since_seq``, oldest first."""
        rows = self._conn().execute(
            "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (since_seq, limit)
        )
        return [_audit.entry_from_row(r) for r in rows]

    def verify_audit(
        self, anchor: _audit.Anchor | tuple[int, str] | None = None
    ) -> _audit.AuditCheck:
        """Check the whole chain, every clinical row against its entry, and an ``anchor`` kept
        off the device (a signed head, or ``(seq, hash)``); every problem found."""
        if isinstance(anchor, tuple):
            anchor = _audit.Anchor(*anchor)
        return _reconcile.verify(self._conn(), self._key, self.cases_dir, anchor)

    def signed_head(self) -> dict[str, Any]:
        """The chain's head for anchoring off the device: ``seq``, ``hash`` (the last entry's
        MAC), ``time``, ``key_id`` (names the device key) and ``mac`` (over the rest)."""
        seq, digest = _audit.last(self._conn())
        return _audit.sign_head(self._key, seq, digest, self._time())

    def backup(self, dest: Path | str, *, actor: str = "system") -> Path:
        """Write a consistent copy of the database to ``dest`` while others keep writing."""
        dest = Path(dest)
        if not dest.parent.is_dir():
            raise StoreError(f"backup destination directory {dest.parent} does not exist")
        if dest.resolve() == self.path.resolve():
            raise StoreError(f"backup destination {dest} is the live database itself")
        self.audit(actor, "backup", {"dest": str(dest)})
        try:
            return _sqlite.backup(self._conn(), dest)
        except SqliteError as exc:
            raise StoreError(str(exc)) from None

    # -- case images -------------------------------------------------------------------------

    def save_case_image(self, case_id: str, image: np.ndarray) -> Path:
        """Keep a case's preprocessed image (uint8 S x S x 3), then apply the retention limit."""
        if self.get_case(case_id) is None:
            raise StoreError(f"no case {case_id!r}: record the screening before its image")
        path, digest = _cases.write_image(self.cases_dir, case_id, image)
        try:
            with self._write() as conn:
                now = self._time()
                conn.execute(
                    "INSERT OR REPLACE INTO case_images (case_id, file, saved) VALUES (?, ?, ?)",
                    (case_id, path.name, now),
                )
                detail = {"case_id": case_id, "sha256": digest}
                _audit.append(conn, self._key, now, "store", _d.IMAGE, detail)
        except BaseException:
            _cases.remove_image(path)
            raise
        self.prune_case_images()
        return path

    def prune_case_images(self) -> int:
        """Remove the oldest images beyond the retention limits (an audited removal); how many
        were removed."""
        with self._write() as conn:
            doomed = _cases.over_retention(conn, self.retention, self._clock())
            if doomed:
                conn.executemany(
                    "DELETE FROM case_images WHERE case_id = ?", [(c,) for c in doomed]
                )
                detail = {"images": sorted(doomed.keys())}
                _audit.append(conn, self._key, self._time(), "retention", _d.RETENTION, detail)
        for name in doomed.values():
            _cases.remove_image(self.cases_dir / name)
        return len(doomed)

    def case_image(self, case_id: str) -> np.ndarray | None:
        """The stored preprocessed image of a case, or None."""
        row = (
            self._conn()
            .execute("SELECT file FROM case_images WHERE case_id = ?", (case_id,))
            .fetchone()
        )
        return None if row is None else _cases.read_image(self.cases_dir / row[0])

    def reviewed_cases(
        self, *, findings: bool = False, skipped: list[str] | None = None
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """(image, label) for every kept image whose latest review is gradable, oldest first:
        the class index (DR: the grade), or with ``findings`` the list of findings a multilabel
        review named (possibly none). Only cases whose screening, latest review and image match
        their audit entries are given; the others are named in ``skipped``."""
        trusted = _reconcile.trusted(self._conn(), self._key, self.cases_dir)
        return _cases.reviewed(
            self._conn(), self.cases_dir, trusted, findings=findings, skipped=skipped
        )

    def reviewed_outcomes(self, model_version: int | None = None) -> list[tuple[float, int]]:
        """(P(refer), clinician's class) of each verified reviewed case (of that model)."""
        trusted = _reconcile.trusted(self._conn(), self._key, self.cases_dir)
        return _cases.reviewed_outcomes(self._conn(), trusted, model_version)

    def counts(self) -> dict[str, int]:
        """How many users, screenings, reviews, kept images, updates and audit entries exist."""
        conn = self._conn()
        tables = ("users", "screenings", "reviews", "case_images", "updates", "audit")
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
