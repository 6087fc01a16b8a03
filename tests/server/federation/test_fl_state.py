"""Settings from the run config, and the per-round checkpoint a restarted ServerApp resumes from."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from server.federation.settings import RUN_CONFIG_DEFAULTS, FederationSettings, SettingsError
from server.federation.state import RunState, StateError, load_state, save_state
from server.federation.weights import weights_digest

ROOT = Path(__file__).resolve().parents[3]


def test_pyproject_declares_every_run_config_key_with_its_default() -> None:
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == RUN_CONFIG_DEFAULTS
    assert app["components"]["serverapp"] == "server.federation.app:app"


def test_settings_validate_and_name_the_key() -> None:
    s = FederationSettings.from_run_config({"model": "m.json", "num-rounds": 2, "codec": "fp16"})
    assert s.num_rounds == 2 and s.round_config(2).codec == "fp16"
    assert s.round_config(1).proximal_mu == 0.01  # fedprox by default
    fedavg = FederationSettings.from_run_config({"model": "m.json", "strategy": "fedavg"})
    assert fedavg.round_config(1).proximal_mu == 0.0
    with pytest.raises(SettingsError, match="'strategy'"):
        FederationSettings.from_run_config({"model": "m.json", "strategy": "fedsgd"})
    with pytest.raises(SettingsError, match="unknown run config keys"):
        FederationSettings.from_run_config({"model": "m.json", "rounds": 3})
    with pytest.raises(SettingsError, match="'model'"):
        FederationSettings.from_run_config({})
    with pytest.raises(SettingsError, match="lr"):
        FederationSettings.from_run_config({"model": "m.json", "lr": -1.0})


def _weights(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(3, value, np.float32), "n": np.array(2, dtype=np.int64)}


def test_checkpoint_resumes_from_the_last_round(tmp_path: Path) -> None:
    deployed = _weights(0.0)
    digest = weights_digest(deployed)
    assert load_state(tmp_path, digest) is None
    for rnd in (1, 2):
        w = _weights(float(rnd))
        state = RunState(
            round=rnd, model="m.json", deployed_digest=digest, global_digest=weights_digest(w),
            strategy="fedavg", history=[{"round": r} for r in range(1, rnd + 1)],
        )  # fmt: skip
        save_state(tmp_path, state, w, deployed)
    resumed = load_state(tmp_path, digest)
    assert resumed is not None
    assert resumed.state.round == 2 and len(resumed.state.history) == 2
    np.testing.assert_array_equal(resumed.weights["w"], 2.0)
    np.testing.assert_array_equal(resumed.deployed["w"], 0.0)


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    deployed = _weights(0.0)
    digest = weights_digest(deployed)
    state = RunState(round=1, model="m.json", deployed_digest=digest, global_digest=digest,
                     strategy="fedavg")  # fmt: skip
    save_state(tmp_path, state, deployed, deployed)
    with pytest.raises(StateError, match="other weights"):
        load_state(tmp_path, weights_digest(_weights(5.0)))
    (tmp_path / "global.safetensors").write_bytes(b"broken")
    with pytest.raises(StateError):
        load_state(tmp_path, digest)
