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
        ("stage: sft\ninner:\n  rat: 3\n", r"config.yaml.inner: unknown key\(s\) \['rat'\] for Inner; known: \['names', 'rate'\]"),
        ("stage: finetune\n", r"config.yaml.stage: Input should be 'pretrain' or 'sft', got 'finetune'"),
        ("stage: sft\nlimit: many\n", r"config.yaml.limit\b.*valid integer"),
        ("stage: sft\nbetas: [1]\n", r"config.yaml.betas\[1\]: required"),
        ("inner: {}\n", r"config.yaml.stage: required"),
        ("stage: sft\ninner: {rate: fast, names: [a, 2]}\n", r"inner.rate: .*number(.|\n)*inner.names\[1\]: .*string"),
        ("stage: [unclosed\n", "not valid YAML"),
    ],
)
def test_mistakes_are_reported_with_their_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml_config(Outer, path)


def test_post_init_validation_surfaces_as_config_error() -> None:
    with pytest.raises(ConfigError, match="config: max_steps"):
        from_dict(TrainerConfig, {"output_dir": "x", "max_steps": 0})


def test_yaml_strings_that_are_numbers_are_read_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("stage: sft\ninner: {rate: 1e-4}\n")  # YAML 1.1 (PyYAML) leaves 1e-4 a string
    assert load_yaml_config(Outer, path).inner.rate == 1e-4


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_yaml_config(Outer, "/nonexistent/recipe.yaml")
