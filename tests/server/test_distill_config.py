from pathlib import Path

import pytest

from server.distill.config import load_config, parse_config
from server.training import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_example_config_are_valid() -> None:
    cfg = parse_config({})
    assert cfg.loss.alpha.at(0.5) == 0.5 and cfg.monitor.retention_threshold == 0.85
    example = load_config(Path(__file__).parents[2] / "configs" / "distill.yaml")
    assert example.search.enabled and example.student.name == "resnet-student"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'"):
        load_config(_write(tmp_path, "train:\n  epoch: 3\n"))


def test_bad_values_name_field_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml.*\n.*train\.epochs"):
        load_config(_write(tmp_path, "train: {epochs: zero}\n"))
    with pytest.raises(ConfigError, match="alpha must stay in"):
        load_config(_write(tmp_path, "loss: {alpha: {start: 1.5}}\n"))


def test_yaml_is_data_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "out: !!python/object/apply:os.system ['true']\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_cached_teacher_conflicts_with_feature_distillation() -> None:
    with pytest.raises(ConfigError, match="need the live teacher"):
        parse_config({"train": {"cache_teacher": True}})
    with pytest.raises(ConfigError, match="need the live teacher"):
        parse_config({"train": {"cache_teacher": True}, "loss": {"feature_weight": 0}})
    ok = parse_config(
        {
            "train": {"cache_teacher": True},
            "loss": {"feature_weight": 0},
            "monitor": {"enabled": False},
        }
    )
    assert ok.train.cache_teacher


def test_schedules_move_between_ends() -> None:
    cfg = parse_config({"loss": {"temperature": {"start": 5, "end": 2, "kind": "cosine"}}})
    t = cfg.loss.temperature
    assert t.at(0) == 5 and t.at(1) == 2 and 2 < t.at(0.5) < 5
