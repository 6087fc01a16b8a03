"""The ServerApp's settings: every run config key, its default, and the validated settings object.

``RUN_CONFIG_DEFAULTS`` is the source of truth for ``[tool.flwr.app.config]`` in pyproject.toml
(a test keeps the two equal); ``flwr run --run-config 'k=v ...'`` overrides any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_agent.fl import CODECS, RoundConfig

__all__ = [
    "DP_MODES",
    "RUN_CONFIG_DEFAULTS",
    "STRATEGIES",
    "FederationSettings",
    "SettingsError",
]

STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum")
DP_MODES: tuple[str, ...] = ("none", "server-fixed", "client-fixed")

RUN_CONFIG_DEFAULTS: dict[str, bool | int | float | str] = {
    # what to adapt, where the run lives
    "model": "",
    "run-dir": ".fovea/federation/run",
    "num-rounds": 3,
    # strategy and sampling
    "strategy": "fedprox",
    "fraction-train": 1.0,
    "fraction-evaluate": 1.0,
    "min-train-nodes": 2,
    "min-evaluate-nodes": 2,
    "min-available-nodes": 2,
    "trim-beta": 0.2,
    "krum-malicious": 0,
    # waiting policy
    "round-timeout": 600.0,
    "node-wait-timeout": 300.0,
    # update validation
    "max-update-norm-ratio": 3.0,
    # the round's instructions to the devices (edge_agent.fl.protocol.RoundConfig)
    "local-epochs": 1,
    "lr": 0.001,
    "proximal-mu": 0.01,
    "distill-alpha": 0.5,
    "distill-temperature": 2.0,
    "batch-size": 16,
    "min-cases": 16,
    "codec": "none",
    "heldout-fraction": 0.2,
    "class-balance": 0.5,
    "norm-stats": "auto",
    # differential privacy (Flower's fixed-clipping wrappers)
    "dp": "none",
    "dp-noise-multiplier": 1.0,
    "dp-clipping-norm": 10.0,
    # promotion
    "distill-config": "",
    "heldout-limit": 2000,
    # points; the held-out size a margin needs: server/federation/gate.py (2.5 at 2,000 images)
    "promotion-margin": 2.5,
    "validated-model": "",
    "promote": True,
    "export-config": "",
    "signing-key": "",
    "bundle-version": 0,
    # scale rehearsal: simulated sites (edge_agent.fl.simulated), only under `--simulation`
    "sim-dir": ".fovea/federation/sim-sites",
    "sim-cases": 32,
}


class SettingsError(ValueError):
    """A run config value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class FederationSettings:
    """The validated run config (field ``num_rounds`` is run config key ``num-rounds``)."""

    model: str
    run_dir: str
    num_rounds: int
    strategy: str
    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    trim_beta: float
    krum_malicious: int
    round_timeout: float
    node_wait_timeout: float
    max_update_norm_ratio: float
    local_epochs: int
    lr: float
    proximal_mu: float
    distill_alpha: float
    distill_temperature: float
    batch_size: int
    min_cases: int
    codec: str
    heldout_fraction: float
    class_balance: float
    norm_stats: str
    dp: str
    dp_noise_multiplier: float
    dp_clipping_norm: float
    distill_config: str
    heldout_limit: int
    promotion_margin: float
    validated_model: str
    promote: bool
    export_config: str
    signing_key: str
    bundle_version: int
    sim_dir: str
    sim_cases: int

    def __post_init__(self) -> None:
        checks = [
            (bool(self.model), "model", "set it to a checkpoint .json, export or bundle dir"),
            (bool(self.run_dir), "run-dir", "must not be empty"),
            (self.num_rounds >= 1, "num-rounds", "must be >= 1"),
            (self.strategy in STRATEGIES, "strategy", f"use one of {', '.join(STRATEGIES)}"),
            (0 < self.fraction_train <= 1, "fraction-train", "must be in (0, 1]"),
            (0 <= self.fraction_evaluate <= 1, "fraction-evaluate", "must be in [0, 1]"),
            (self.min_train_nodes >= 1, "min-train-nodes", "must be >= 1"),
            (self.min_evaluate_nodes >= 0, "min-evaluate-nodes", "must be >= 0"),
            (
                self.min_available_nodes >= max(self.min_train_nodes, self.min_evaluate_nodes),
                "min-available-nodes",
                "must be >= min-train-nodes and min-evaluate-nodes",
            ),
            (0 <= self.trim_beta < 0.5, "trim-beta", "must be in [0, 0.5)"),
            (self.krum_malicious >= 0, "krum-malicious", "must be >= 0"),
            (self.round_timeout > 0, "round-timeout", "must be > 0 seconds"),
            (self.node_wait_timeout > 0, "node-wait-timeout", "must be > 0 seconds"),
            (self.max_update_norm_ratio > 1, "max-update-norm-ratio", "must be > 1"),
            (self.codec in CODECS, "codec", f"use one of {', '.join(CODECS)}"),
            (self.dp in DP_MODES, "dp", f"use one of {', '.join(DP_MODES)}"),
            (self.dp_noise_multiplier >= 0, "dp-noise-multiplier", "must be >= 0"),
            (self.dp_clipping_norm > 0, "dp-clipping-norm", "must be > 0"),
            (
                not (self.dp == "client-fixed" and self.codec == "int8-delta"),
                "codec",
                "dp client-fixed needs codec none or fp16 (fixedclipping_mod clips the reply's "
                "arrays against the sent ones, by name)",
            ),
            (self.heldout_limit >= 1, "heldout-limit", "must be >= 1"),
            (self.promotion_margin >= 0, "promotion-margin", "must be >= 0 points"),
            (self.bundle_version >= 0, "bundle-version", "must be >= 0 (0: deployed + 1)"),
            (bool(self.sim_dir), "sim-dir", "must not be empty"),
            (self.sim_cases >= 1, "sim-cases", "must be >= 1"),
        ]
        for ok, key, what in checks:
            if not ok:
                value = getattr(self, key.replace("-", "_"))
                raise SettingsError(f"run config {key!r} = {value!r}: {what}")
        self.round_config(1)  # the device-side checks (lr > 0, ...) fail here, not on devices

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederationSettings:
        """Validate Flower's run config (defaults for missing keys; unknown keys are errors)."""
        unknown = sorted(set(run_config) - set(RUN_CONFIG_DEFAULTS))
        if unknown:
            raise SettingsError(
                f"unknown run config keys {unknown}; known: {', '.join(RUN_CONFIG_DEFAULTS)}"
            )
        values: dict[str, Any] = {}
        for key, default in RUN_CONFIG_DEFAULTS.items():
            raw = run_config.get(key, default)
            values[key.replace("-", "_")] = _coerce(key, raw, default)
        return cls(**values)

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """The run config form (kebab-case keys), e.g. to record beside the run."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def round_config(self, server_round: int) -> RoundConfig:
        """The devices' instructions for a round; only FedProx sends a proximal term."""
        try:
            return RoundConfig(
                server_round=server_round,
                local_epochs=self.local_epochs,
                lr=self.lr,
                proximal_mu=self.proximal_mu if self.strategy == "fedprox" else 0.0,
                distill_alpha=self.distill_alpha,
                distill_temperature=self.distill_temperature,
                batch_size=self.batch_size,
                min_cases=self.min_cases,
                codec=self.codec,
                heldout_fraction=self.heldout_fraction,
                class_balance=self.class_balance,
                norm_stats=self.norm_stats,
            )
        except ValueError as e:
            raise SettingsError(str(e)) from None

    def path(self, key: str) -> Path | None:
        """A path-valued key (``model``, ``run-dir`` ...) resolved, or None when empty."""
        value = getattr(self, key.replace("-", "_"))
        return Path(value).expanduser().resolve() if value else None


def _coerce(key: str, raw: Any, default: bool | int | float | str) -> Any:
    kind = type(default)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1", "yes"):
            return True
        if str(raw).lower() in ("false", "0", "no"):
            return False
    elif kind is int and isinstance(raw, int | float) and not isinstance(raw, bool):
        if float(raw).is_integer():
            return int(raw)
    elif kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    elif kind is str and isinstance(raw, str):
        return raw
    raise SettingsError(f"run config {key!r} = {raw!r} is not a {kind.__name__}")
