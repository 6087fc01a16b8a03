"""Getting bundles onto devices: build and sign (``bundle``, ``keys``), flash, fleet and rollout.

The transports here reach a device over SSH or on this machine; ``flash`` installs the agent and
a bundle with them, ``fleet`` keeps the inventory and rolls bundles out in stages.
"""

from deploy.transport import (
    CommandFailed,
    CommandTimeout,
    HostKeyRejected,
    HostUnreachable,
    LocalTransport,
    RunResult,
    SshTarget,
    SshTransport,
    Transport,
    TransportError,
    file_sha256,
)

__all__ = [
    "CommandFailed",
    "CommandTimeout",
    "HostKeyRejected",
    "HostUnreachable",
    "LocalTransport",
    "RunResult",
    "SshTarget",
    "SshTransport",
    "Transport",
    "TransportError",
    "file_sha256",
]
