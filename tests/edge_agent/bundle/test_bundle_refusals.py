"""Every way a bundle must be refused, and that a refusal leaves nothing behind."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair, load_private_key
from edge_agent.bundle import BundleError, Keyring, Manifest, open_bundle

Members = list[tuple[tarfile.TarInfo, bytes]]


def _read(bundle: Path) -> Members:
    with tarfile.open(bundle) as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            out.append((m, f.read() if f else b""))
        return out


def _write(members: Members, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out


def _repack(bundle: Path, edit: Callable[[Members], Members]) -> Path:
    return _write(edit(_read(bundle)), bundle.with_name("tampered.tar"))


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def _replace(members: Members, name: str, data: bytes) -> Members:
    return [(i, data if i.name == name else d) for i, d in members]


def _resign(members: Members, key: Path, change: Callable[[dict], dict]) -> Members:
    manifest = json.loads(dict((i.name, d) for i, d in members)["manifest.json"])
    data = json.dumps(change(manifest)).encode()
    sig = load_private_key(key).sign(data)
    return _replace(_replace(members, "manifest.json", data), "manifest.sig", sig)


def _refused(bundle: Path, keyring: Keyring, match: str, **kwargs: object) -> None:
    dest = bundle.parent / "dest"
    with pytest.raises(BundleError, match=match):
        open_bundle(bundle, dest, keyring, **kwargs)  # type: ignore[arg-type]
    assert not dest.exists(), "a refused bundle must leave nothing behind"


def test_a_good_bundle_opens(bundle: Path, keyring: Keyring) -> None:
    assert open_bundle(bundle, bundle.parent / "dest", keyring).version == 2


def test_altered_manifest_is_a_bad_signature(bundle: Path, keyring: Keyring) -> None:
    def edit(members: Members) -> Members:
        data = dict((i.name, d) for i, d in members)["manifest.json"]
        return _replace(members, "manifest.json", data.replace(b'"version": 2', b'"version": 9'))

    _refused(_repack(bundle, edit), keyring, "bad signature")


def test_untrusted_key_is_refused(tiny_export: Path, tmp_path: Path, keyring: Keyring) -> None:
    stranger, _ = generate_keypair(tmp_path / "stranger", "evil")
    _refused(build_bundle(tiny_export, tmp_path / "s.tar", 3, stranger), keyring, "untrusted key")


def test_revoked_key_is_refused(
    bundle: Path, keyring: Keyring, signing_key: tuple[Path, Path]
) -> None:
    assert keyring.revoked is not None
    keyring.revoked.mkdir(parents=True)
    (keyring.revoked / "old.pub").write_bytes(signing_key[1].read_bytes())
    _refused(bundle, keyring, "revoked key")


def test_no_trusted_keys(bundle: Path, tmp_path: Path) -> None:
    _refused(bundle, Keyring.in_dir(tmp_path / "empty"), "no trusted keys")


def test_file_content_mismatch(bundle: Path, keyring: Keyring) -> None:
    def edit(members: Members) -> Members:
        data = dict((i.name, d) for i, d in members)["model.fp32.onnx"]
        flipped = bytes([data[0] ^ 1]) + data[1:]
        return _replace(members, "model.fp32.onnx", flipped)

    _refused(_repack(bundle, edit), keyring, "model.fp32.onnx sha256 mismatch")


def test_file_size_mismatch(bundle: Path, keyring: Keyring) -> None:
    def edit(members: Members) -> Members:
        data = dict((i.name, d) for i, d in members)["export.json"]
        return _replace(members, "export.json", data + b" ")

    _refused(_repack(bundle, edit), keyring, "export.json is .* bytes, the manifest says")


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/evil", "a/../../evil", "./x", "a\\..\\b"])
def test_path_traversal_is_refused(bundle: Path, keyring: Keyring, name: str) -> None:
    tampered = _repack(bundle, lambda m: [*m, (_info(name), b"x")])
    _refused(tampered, keyring, "path traversal")


@pytest.mark.parametrize(
    ("kind", "word"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "device file"),
        (tarfile.BLKTYPE, "device file"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_links_and_devices_are_refused(
    bundle: Path, keyring: Keyring, kind: bytes, word: str
) -> None:
    tampered = _repack(bundle, lambda m: [*m, (_info("extra", kind, "/etc/passwd"), b"")])
    _refused(tampered, keyring, word)


def test_link_replacing_a_listed_file_is_refused(bundle: Path, keyring: Keyring) -> None:
    def edit(members: Members) -> Members:
        kept = [(i, d) for i, d in members if i.name != "golden.npz"]
        return [*kept, (_info("golden.npz", tarfile.SYMTYPE, "/etc/passwd"), b"")]

    _refused(_repack(bundle, edit), keyring, "symbolic link")


def test_unexpected_file_is_refused(bundle: Path, keyring: Keyring) -> None:
    tampered = _repack(bundle, lambda m: [*m, (_info("payload.sh"), b"#!/bin/sh\n")])
    _refused(tampered, keyring, r"unexpected files .*payload\.sh")


def test_unexpected_directory_is_refused(bundle: Path, keyring: Keyring) -> None:
    tampered = _repack(bundle, lambda m: [*m, (_info("stash", tarfile.DIRTYPE), b"")])
    _refused(tampered, keyring, "unexpected directories")


def test_missing_file_is_refused(bundle: Path, keyring: Keyring) -> None:
    tampered = _repack(bundle, lambda m: [(i, d) for i, d in m if i.name != "validation.npz"])
    _refused(tampered, keyring, r"missing: \['validation.npz'\]")


@pytest.mark.parametrize("name", ["manifest.json", "manifest.sig"])
def test_unsigned_bundle_is_refused(bundle: Path, keyring: Keyring, name: str) -> None:
    tampered = _repack(bundle, lambda m: [(i, d) for i, d in m if i.name != name])
    _refused(tampered, keyring, f"{name} is missing")


def test_duplicate_member_is_refused(bundle: Path, keyring: Keyring) -> None:
    tampered = _repack(bundle, lambda m: [*m, (_info("export.json"), b"{}")])
    _refused(tampered, keyring, "appears twice")


def test_signed_manifest_with_traversal_is_still_refused(
    bundle: Path, keyring: Keyring, signing_key: tuple[Path, Path]
) -> None:
    def edit(members: Members) -> Members:
        def change(m: dict) -> dict:
            m["files"]["../outside"] = m["files"].pop("export.json")
            return m

        return _resign(members, signing_key[0], change)

    _refused(_repack(bundle, edit), keyring, "unsafe path")


@pytest.mark.parametrize("installed", [2, 5])
def test_not_newer_version_is_refused(bundle: Path, keyring: Keyring, installed: int) -> None:
    _refused(bundle, keyring, "not newer than the installed", installed_version=installed)
    dest = bundle.parent / "forced"
    manifest = open_bundle(bundle, dest, keyring, installed_version=installed, allow_downgrade=True)
    assert manifest.version == 2 and (dest / "manifest.json").is_file()


def test_newer_version_opens(bundle: Path, keyring: Keyring) -> None:
    assert open_bundle(bundle, bundle.parent / "d", keyring, installed_version=1).version == 2


def test_bundle_needing_a_newer_agent_is_refused(
    tiny_export: Path, tmp_path: Path, signing_key: tuple[Path, Path], keyring: Keyring
) -> None:
    key = signing_key[0]
    future = build_bundle(tiny_export, tmp_path / "f.tar", 3, key, min_agent_version="99.0")
    _refused(future, keyring, "needs agent version >= 99.0")
    assert open_bundle(future, tmp_path / "ok", keyring, agent="99.0.1").version == 3


def test_not_a_tar(tmp_path: Path, keyring: Keyring) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00" * 10 + b"garbage" * 100)
    _refused(junk, keyring, "not a readable bundle tar|damaged tar|missing")


def test_existing_destination_is_refused(bundle: Path, keyring: Keyring) -> None:
    dest = bundle.parent / "taken"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(BundleError, match="exists"):
        open_bundle(bundle, dest, keyring)
    assert (dest / "keep").read_text() == "mine"


def test_signer_field_must_match_the_signing_key(
    bundle: Path, keyring: Keyring, signing_key: tuple[Path, Path]
) -> None:
    def edit(members: Members) -> Members:
        return _resign(members, signing_key[0], lambda m: {**m, "signer": "0" * 16})

    _refused(_repack(bundle, edit), keyring, "names signer 0000000000000000")
    assert Manifest  # the schema is what the signed bytes are parsed with


def test_the_manifest_carries_the_task(bundle: Path, keyring: Keyring) -> None:
    from models import DR_GRADING

    assert open_bundle(bundle, bundle.parent / "d", keyring).task == DR_GRADING


def test_a_bundle_for_another_task_opens_and_an_unservable_task_is_refused_by_name(
    bundle: Path, keyring: Keyring, signing_key: tuple[Path, Path]
) -> None:
    import yaml

    glaucoma = yaml.safe_load(
        (Path(__file__).parents[3] / "configs" / "tasks" / "glaucoma-referral.yaml").read_text()
    )

    def other_task(m: dict) -> dict:
        return {**m, "task": glaucoma, "labels": glaucoma["classes"]}

    def labels_not_classes(m: dict) -> dict:
        return {**m, "task": glaucoma}

    def output_named_like_the_input(m: dict) -> dict:
        task = {**glaucoma, "outputs": {"classes": "images", "quality": "gradable_logit"}}
        return {**m, "task": task, "labels": glaucoma["classes"]}

    edit = _repack(bundle, lambda ms: _resign(ms, signing_key[0], other_task))
    opened = open_bundle(edit, edit.parent / "opened", keyring)
    assert (opened.task.name, opened.task.kind) == ("glaucoma-referral", "binary")
    edit = _repack(bundle, lambda ms: _resign(ms, signing_key[0], output_named_like_the_input))
    _refused(edit, keyring, "task glaucoma-referral: outputs.classes is 'images'")
    edit = _repack(bundle, lambda ms: _resign(ms, signing_key[0], labels_not_classes))
    _refused(edit, keyring, "are not task glaucoma-referral's classes")
