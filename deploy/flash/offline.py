"""The offline installer: one self-extracting file a technician carries to a site by USB.

``build_offline_installer`` writes ``fovea-installer-<model>-v<N>.run`` (a shell header and a
tar.gz payload holding the wheels, the bundle, the trusted key, the systemd unit and the install
scripts) and ``<file>.sha256``. Run on the device it verifies the checksums first (the payload's
sha256 embedded in the header, the whole file's against ``.sha256`` beside it, then every file),
creates the venv from the wheels and finishes with the same steps as ``fovea flash``, locally
(:func:`main`, ``python -m deploy.flash.offline``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import socket
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from deploy.flash.plan import (
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    DEFAULT_ROOT,
    SYSTEM_PYTHON,
    TEGRA_RELEASE,
    WORKER_REQUIREMENTS,
    FlashPlan,
    FlashTarget,
)
from deploy.flash.steps import bundle_manifest
from deploy.flash.supervisor import ServiceSpec, render_unit
from deploy.flash.worker import l4t_release
from deploy.transport import LocalTransport, file_sha256

_MARKER = "__FOVEA_PAYLOAD__"
WORKER_OVERRIDE = "worker-requirements.txt"
"""In the payload's ``jetson/``: the worker requirements the installer's builder chose."""

_HEADER = """\
#!/bin/sh
# Fovea offline installer ({title}). Usage: sh {name} [--root DIR] [--prefix DIR] [--port N]
#   [--python python3.11] [--supervisor auto|systemd|process] [--listen ADDR]
#   [--worker auto|yes|no] [--system-python /usr/bin/python3]
# On a Jetson (/etc/nv_tegra_release; FOVEA_TEGRA_RELEASE names another file) the TensorRT
# worker gets its own venv made by JetPack's Python (--system-python).
set -eu
PAYLOAD_SHA256={payload_sha}
self=$0
if [ -f "$self.sha256" ]; then
  want=$(cut -d' ' -f1 < "$self.sha256")
  got=$(sha256sum "$self" | cut -d' ' -f1)
  if [ "$want" != "$got" ]; then
    echo "error: $self does not match $self.sha256 (copy damaged?); nothing installed" >&2
    exit 3
  fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
line=$(awk '/^{marker}$/ {{ print NR + 1; exit }}' "$self")
tail -n +"$line" "$self" > "$tmp/payload.tar.gz"
got=$(sha256sum "$tmp/payload.tar.gz" | cut -d' ' -f1)
if [ "$got" != "$PAYLOAD_SHA256" ]; then
  echo "error: $self is corrupt (payload sha256 $got," \
    "expected $PAYLOAD_SHA256); nothing installed" >&2
  exit 3
fi
tar -xzf "$tmp/payload.tar.gz" -C "$tmp"
sh "$tmp/fovea/install.sh" "$@"
exit $?
{marker}
"""

_INSTALL_SH = """\
#!/bin/sh
# Runs from the unpacked installer: verify every file, make the venv, then finish with
# python -m deploy.flash.offline (the same steps as fovea flash, on this machine).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root={root}; prefix={prefix}; port={port}; python=python3.11; supervisor=auto; listen=0.0.0.0
worker=auto; system_python=/usr/bin/python3; tegra=${{FOVEA_TEGRA_RELEASE:-/etc/nv_tegra_release}}
while [ $# -gt 0 ]; do
  case "$1" in
    --worker) worker=$2; shift 2 ;;
    --system-python) system_python=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --supervisor) supervisor=$2; shift 2 ;;
    --listen) listen=$2; shift 2 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! (cd "$here" && sha256sum --quiet -c SHA256SUMS); then
  echo "error: files differ from SHA256SUMS; nothing installed" >&2; exit 3
fi
if ! command -v "$python" >/dev/null; then
  echo "error: $python not found; install Python 3.11 or pass --python" >&2; exit 2
fi
site=""
[ -f "$tegra" ] && site=--system-site-packages
[ -x "$prefix/venv/bin/python" ] || "$python" -m venv $site "$prefix/venv"
PIP_CONFIG_FILE=/dev/null "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check \\
  --no-index --find-links "$here/wheels" "$here/wheels/{wheel}[{extras}]"
exec "$prefix/venv/bin/python" -m deploy.flash.offline --from "$here" --root "$root" \\
  --prefix "$prefix" --port "$port" --python "$python" --supervisor "$supervisor" \\
  --listen "$listen" --worker "$worker" --system-python "$system_python" --tegra-release "$tegra"
"""


@dataclass(frozen=True)
class OfflineInstaller:
    """The installer file, its checksum file and the checksum."""

    path: Path
    sha256_path: Path
    sha256: str


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(f"fovea/{name}")
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def build_offline_installer(plan: FlashPlan, out_dir: Path) -> OfflineInstaller:
    """Write the self-extracting installer for ``plan`` (needs its wheel) and its ``.sha256``."""
    if plan.wheel is None:
        raise ValueError("the offline installer needs the fovea-edge wheel (FlashPlan.wheel)")
    manifest = bundle_manifest(plan.bundle)
    files: dict[str, bytes] = {f"wheels/{w.name}": w.read_bytes() for w in plan.wheel_files()}
    files["bundle/" + plan.bundle.name] = plan.bundle.read_bytes()
    files["keys/" + plan.trusted_key.name] = plan.trusted_key.read_bytes()
    for req in WORKER_REQUIREMENTS.values():  # the agent's wheel has no deploy/jetson/
        if req.is_file():
            files[f"jetson/{req.name}"] = req.read_bytes()
    if plan.worker_requirements is not None:
        files[f"jetson/{WORKER_OVERRIDE}"] = plan.worker_requirements.read_bytes()
    venv = f"{DEFAULT_PREFIX}/venv"
    spec = ServiceSpec(
        name=plan.unit_name, user=plan.service_user, root=DEFAULT_ROOT, prefix=DEFAULT_PREFIX,
        argv=(f"{venv}/bin/fovea-agent", "serve", "--root", DEFAULT_ROOT, "--host",
              plan.listen_host, "--port", str(DEFAULT_PORT)),
    )  # fmt: skip
    files[f"{plan.unit_name}.service"] = render_unit(spec).encode()
    install = _INSTALL_SH.format(
        root=DEFAULT_ROOT, prefix=DEFAULT_PREFIX, port=DEFAULT_PORT,
        wheel=plan.wheel.name, extras=plan.extras,
    )  # fmt: skip
    files["install.sh"] = install.encode()
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in sorted(files.items()):
            _add(tar, name, data, 0o755 if name.endswith(".sh") else 0o644)
        _add(tar, "SHA256SUMS", sums.encode())
    payload = buf.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"fovea-installer-{manifest.name}-v{manifest.version}.run"
    header = _HEADER.format(
        title=f"{manifest.name} v{manifest.version}", name=path.name, marker=_MARKER,
        payload_sha=hashlib.sha256(payload).hexdigest(),
    )  # fmt: skip
    path.write_bytes(header.encode() + payload)
    path.chmod(0o755)
    digest = file_sha256(path)
    sha_path = path.with_name(path.name + ".sha256")
    sha_path.write_text(f"{digest}  {path.name}\n")
    return OfflineInstaller(path, sha_path, digest)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options ``install.sh`` passes to ``python -m deploy.flash.offline``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.flash.offline")
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--python", default="python3.11")
    parser.add_argument("--supervisor", default="auto", choices=["auto", "systemd", "process"])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--worker", default="auto", choices=["auto", "yes", "no"])
    parser.add_argument("--system-python", default=SYSTEM_PYTHON)
    parser.add_argument("--tegra-release", default=TEGRA_RELEASE)
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> FlashPlan:
    """The flash plan of an unpacked installer folder (``--from``), for this machine.

    The worker's requirements come from the folder (the installed wheel has no
    ``deploy/jetson/``): the builder's own file if it gave one, else this Jetson's release's.
    """
    src: Path = args.source
    wheel = next(iter(sorted((src / "wheels").glob("fovea_edge-*.whl"))), None)
    requirements = src / "jetson" / WORKER_OVERRIDE
    if not requirements.is_file():
        tegra = Path(args.tegra_release)
        release = l4t_release(tegra.read_text(errors="replace")) if tegra.is_file() else None
        known = WORKER_REQUIREMENTS.get(release or "")
        requirements = src / "jetson" / known.name if known else requirements
    return FlashPlan(
        bundle=next(iter(sorted((src / "bundle").glob("*.tar")))),
        trusted_key=next(iter(sorted((src / "keys").glob("*.pub")))),
        wheel=wheel, wheelhouse=src / "wheels", device_python=args.python,
        supervisor=args.supervisor, listen_host=args.listen, worker=args.worker,
        system_python=args.system_python, tegra_release=args.tegra_release,
        worker_requirements=requirements if requirements.is_file() else None,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Device side of the installer: flash this machine from an unpacked installer folder."""
    from rich.console import Console

    from deploy.flash.run import flash, summary_table

    args = parse_args(argv)
    plan = plan_from_args(args)
    target = FlashTarget(LocalTransport(socket.gethostname()), args.root, args.prefix, args.port)
    console = Console()
    [result] = flash([target], plan, console=console)
    console.print(summary_table([result]))
    for step in result.steps:
        if step.name in ("probe", "worker", "user") and step.detail:
            console.print(f"{step.name}: {step.detail}")
    if result.token:
        console.print(f"fleet account token (shown once; keep it for the fleet): {result.token}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
