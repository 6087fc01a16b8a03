"""Open and verify bundles: signature, trust, versions, then a safe, checked extraction."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

from edge_agent.bundle.durable import fsync_dir
from edge_agent.bundle.keys import Keyring, verifies
from edge_agent.bundle.manifest import (
    MANIFEST_NAME,
    RESERVED_NAMES,
    SIGNATURE_NAME,
    BundleError,
    FileEntry,
    Manifest,
    check_relpath,
    parse_version,
)
from edge_agent.version import agent_version
from models import TaskSpec

MAX_MANIFEST_BYTES = 4 << 20
SIGNATURE_BYTES = 64
_CHUNK = 1 << 20


def _claimed_signer(data: bytes) -> str | None:
    """The ``signer`` a manifest claims, read without trusting it (only to word errors)."""
    try:
        signer = json.loads(data).get("signer")
    except (ValueError, AttributeError):
        return None
    return signer if isinstance(signer, str) else None


def check_signature(data: bytes, signature: bytes, keys: Keyring, source: str) -> Manifest:
    """Verify ``signature`` over the manifest bytes with a trusted, unrevoked key; parse them."""
    trusted, revoked = keys.load()
    if not trusted:
        raise BundleError(
            f"no trusted keys in {keys.trusted}: copy the publisher's public key (.pub) there"
        )
    claimed = _claimed_signer(data)
    if claimed in revoked:
        raise BundleError(f"{source}: signed by revoked key {claimed}; ask for a newly signed one")
    usable = {kid: key for kid, key in trusted.items() if kid not in revoked}
    signer = next((kid for kid, key in usable.items() if verifies(key, signature, data)), None)
    if signer is None:
        if any(verifies(key, signature, data) for key in revoked.values()):
            raise BundleError(f"{source}: signed by a revoked key; ask for a newly signed bundle")
        if claimed in trusted:
            raise BundleError(
                f"{source}: bad signature: {SIGNATURE_NAME} does not match {MANIFEST_NAME} for "
                f"key {claimed}; the bundle was altered or damaged after signing"
            )
        raise BundleError(
            f"{source}: signed by untrusted key {claimed or '(unnamed)'}: no key in "
            f"{keys.trusted} verifies it; add the publisher's .pub there only if you trust it"
        )
    manifest = Manifest.from_bytes(data, source)
    if manifest.signer != signer:
        raise BundleError(f"{source}: manifest names signer {manifest.signer}, signed by {signer}")
    return manifest


def check_versions(
    manifest: Manifest,
    *,
    installed_version: int | None,
    allow_downgrade: bool,
    agent: str | None = None,
) -> None:
    """Refuse a bundle not newer than the installed one, one that needs a newer agent, or one
    whose task this agent cannot screen (see :func:`check_task`)."""
    newer = installed_version is None or manifest.version > installed_version
    if not newer and not allow_downgrade:
        raise BundleError(
            f"bundle version {manifest.version} is not newer than the installed version "
            f"{installed_version}; pass --allow-downgrade to install it anyway"
        )
    have = agent or agent_version()
    if parse_version(manifest.min_agent_version) > parse_version(have):
        raise BundleError(
            f"bundle needs agent version >= {manifest.min_agent_version}, this agent is {have}; "
            "upgrade fovea-agent first"
        )
    check_task(manifest.task)


MODEL_INPUT = "images"
"""The one input every Fovea model takes (``edge_agent.runtime.INPUT_NAME``)."""


def check_task(task: TaskSpec) -> None:
    """Refuse a task this agent cannot serve. Every kind, class list, patient rule, quality
    head, channel count and preprocessing the spec allows is screened; what remains is an
    output named like the model's input, which the KServe protocol cannot tell apart."""
    for field, name in (
        ("outputs.classes", task.outputs.classes),
        ("outputs.quality", task.outputs.quality),
    ):
        if name == MODEL_INPUT and (field == "outputs.classes" or task.quality_head):
            raise BundleError(
                f"task {task.name}: {field} is {name!r}, the name of the model's input; "
                "rename the output and export the model again"
            )


def _check_member(member: tarfile.TarInfo, source: str) -> None:
    kind = (
        "symbolic link" if member.issym()
        else "hard link" if member.islnk()
        else "FIFO" if member.isfifo()
        else "device file" if member.isdev()
        else "sparse file" if member.issparse()
        else None
    )  # fmt: skip
    if kind is None and not (member.isreg() or member.isdir()):
        kind = "special file"
    if kind:
        raise BundleError(f"{source}: member {member.name!r} is a {kind}; bundles hold only files")
    try:
        check_relpath(member.name)
    except BundleError as exc:
        raise BundleError(f"{source}: {exc} (path traversal refused)") from None


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, source: str) -> bytes:
    if member.size > limit:
        raise BundleError(f"{source}: {member.name} is {member.size} bytes, over {limit}")
    stream = tar.extractfile(member)
    assert stream is not None  # regular file, checked above
    return stream.read()


def _check_listing(
    manifest: Manifest, files: dict[str, tarfile.TarInfo], dirs: set[str], source: str
) -> None:
    names = set(files) - RESERVED_NAMES
    unexpected = sorted(names - set(manifest.files))
    if unexpected:
        raise BundleError(f"{source}: unexpected files not in the manifest: {unexpected[:5]}")
    missing = sorted(set(manifest.files) - names)
    if missing:
        raise BundleError(f"{source}: files listed in the manifest are missing: {missing[:5]}")
    parents = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    stray = sorted(dirs - parents)
    if stray:
        raise BundleError(f"{source}: unexpected directories: {stray[:5]}")
    for name, entry in manifest.files.items():
        if files[name].size != entry.size:
            raise BundleError(
                f"{source}: {name} is {files[name].size} bytes, the manifest says {entry.size}"
            )


def _copy_checked(stream: IO[bytes], dest: Path, entry: FileEntry, source: str, name: str) -> None:
    digest, size = hashlib.sha256(), 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > entry.size:
                break
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != entry.size:
        raise BundleError(f"{source}: {name} size mismatch: got {size}, expected {entry.size}")
    if digest.hexdigest() != entry.sha256:
        raise BundleError(
            f"{source}: {name} sha256 mismatch: the file was altered or damaged; "
            "get the bundle again"
        )


def open_bundle(
    bundle: Path,
    dest: Path,
    keys: Keyring,
    *,
    installed_version: int | None = None,
    allow_downgrade: bool = False,
    agent: str | None = None,
) -> Manifest:
    """Verify ``bundle`` and extract it into ``dest`` (which must not exist); return its manifest.

    Refuses (``BundleError``) links, devices, path traversal, duplicate, unexpected or missing
    files, a bad or untrusted or revoked signature, sha256/size mismatches, a version not above
    ``installed_version`` unless ``allow_downgrade``, and a bundle that needs a newer agent.
    Nothing is left in ``dest`` when it refuses; extracted files are fsynced.
    """
    source = str(bundle)
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"{dest} exists; bundles are extracted only into a new directory")
    try:
        tar = tarfile.open(bundle, "r:*")  # noqa: SIM115 (closed by the `with` below)
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{source}: not a readable bundle tar: {exc}") from None
    with tar:
        files: dict[str, tarfile.TarInfo] = {}
        dirs: set[str] = set()
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{source}: damaged tar: {exc}") from None
        for member in members:
            _check_member(member, source)
            name = member.name
            if name in files or name in dirs:
                raise BundleError(f"{source}: member {name!r} appears twice")
            if member.isdir():
                dirs.add(name)
            else:
                files[name] = member
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            if name not in files:
                raise BundleError(f"{source}: {name} is missing; this is not a signed bundle")
        data = _read_small(tar, files[MANIFEST_NAME], MAX_MANIFEST_BYTES, source)
        signature = _read_small(tar, files[SIGNATURE_NAME], SIGNATURE_BYTES, source)
        manifest = check_signature(data, signature, keys, source)
        check_versions(
            manifest,
            installed_version=installed_version,
            allow_downgrade=allow_downgrade,
            agent=agent,
        )
        _check_listing(manifest, files, dirs, source)
        _extract(tar, manifest, files, dest, source)
        _write_file(dest / MANIFEST_NAME, data)
        _write_file(dest / SIGNATURE_NAME, signature)
        fsync_dir(dest)
    return manifest


def _write_file(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _extract(
    tar: tarfile.TarFile,
    manifest: Manifest,
    files: dict[str, tarfile.TarInfo],
    dest: Path,
    source: str,
) -> None:
    dest.mkdir(parents=True)
    try:
        made = {dest}
        for name, entry in manifest.files.items():
            target = dest / name
            for parent in reversed(Path(name).parents[:-1]):
                if dest / parent not in made:
                    (dest / parent).mkdir(exist_ok=True)
                    made.add(dest / parent)
            stream = tar.extractfile(files[name])
            assert stream is not None  # regular file, checked in open_bundle
            _copy_checked(stream, target, entry, source, name)
        for directory in sorted(made, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def verify_tree(directory: Path, keys: Keyring) -> Manifest:
    """Verify an extracted bundle in ``directory``: signature, and every file exactly as listed.

    No other files, links or special files may be present. Returns the manifest; the refusal
    names every file that is missing, or else every file that does not match.
    """
    source = str(directory)
    try:
        data = (directory / MANIFEST_NAME).read_bytes()
        signature = (directory / SIGNATURE_NAME).read_bytes()
    except OSError as exc:
        raise BundleError(f"{source}: no complete bundle here ({exc})") from None
    manifest = check_signature(data, signature, keys, source)
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            rel = path.relative_to(directory).as_posix()
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise BundleError(f"{source}: {rel} is a link or special file")
            if rel not in RESERVED_NAMES:
                seen.add(rel)
    unexpected = sorted(seen - set(manifest.files))
    if unexpected:
        raise BundleError(f"{source}: unexpected files not in the manifest: {unexpected[:5]}")
    missing = sorted(name for name in manifest.files if not (directory / name).is_file())
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise BundleError(f"{source}: {', '.join(missing)} {verb} missing")
    altered = [
        name for name, entry in manifest.files.items() if not _matches(directory / name, entry)
    ]
    if altered:
        raise BundleError(
            f"{source}: {', '.join(altered)} "
            f"{'does' if len(altered) == 1 else 'do'} not match the manifest (altered or damaged)"
        )
    return manifest


def _matches(path: Path, entry: FileEntry) -> bool:
    """Whether ``path`` has the entry's size and sha256 (read in chunks, never whole)."""
    if path.stat().st_size != entry.size:
        return False
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() == entry.sha256
