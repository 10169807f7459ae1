"""yaml_config.py: recipes load into frozen dataclasses; mistakes are named with their path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from qwen_audio.errors import ConfigError
from qwen_audio.train.trainer import TrainerConfig
from qwen_audio.yaml_config import from_dict, load_yaml_config, to_dict


@dataclass(frozen=True)
class Inner:
    rate: float = 1.0
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    stage: Literal["pretrain", "sft"]
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None
    betas: tuple[float, float] = (0.9, 0.99)


def test_nested_values_types_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("stage: sft\ninner:\n  rate: 3\n  names: [a, b]\nbetas: [0.8, 0.9]\n")
    config = load_yaml_config(Outer, path)
    assert config == Outer("sft", Inner(3.0, ("a", "b")), None, (0.8, 0.9))
    assert isinstance(config.inner.rate, float)
    assert from_dict(Outer, to_dict(config)) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage: sft\ninner:\n  rat: 3\n", r"config.yaml.inner: unknown key\(s\) \['rat'\]"),
        ("stage: finetune\n", r"\.stage: must be one of"),
        ("stage: sft\nlimit: many\n", r"\.limit"),
        ("stage: sft\nbetas: [1]\n", r"\.betas: expected 2 items"),
        ("inner: {}\n", r"missing 1 required positional argument: 'stage'"),
        ("stage: [unclosed\n", "not valid YAML"),
    ],
)
def test_mistakes_are_reported_with_their_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml_config(Outer, path)


def test_post_init_validation_surfaces_as_config_error() -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        from_dict(TrainerConfig, {"output_dir": "x", "max_steps": 0})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_yaml_config(Outer, "/nonexistent/recipe.yaml")
