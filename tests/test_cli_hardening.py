"""The command line under bad input: always one red line and exit code 1, never a traceback."""

from __future__ import annotations

import shutil
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from qwen_audio.cli import app

runner = CliRunner()


def zero_bit_wav(path: Path) -> Path:
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 0, 0, 0)
    path.write_bytes(b"RIFF" + struct.pack("<I", 236) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", 200) + bytes(200))
    return path


def one_red_line(result) -> str:  # noqa: ANN001 - click's Result
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_markup_in_a_file_name_is_printed_as_written(tmp_path: Path) -> None:
    # "[/]" crashed the error printer (rich markup) and "[bold]" vanished from names
    assert "missing[/].wav" in one_red_line(runner.invoke(app, ["info", str(tmp_path / "missing[/].wav")]))
    named = tmp_path / "[b].wav"  # short: the table's file column is narrow
    sf.write(named, np.zeros(16_000, np.float32), 16_000)
    result = runner.invoke(app, ["info", str(named)])
    assert result.exit_code == 0 and "[b].wav" in result.output


def test_a_wav_with_zero_bits_per_sample(tmp_path: Path) -> None:
    assert "cannot be decoded" in one_red_line(runner.invoke(app, ["info", str(zero_bit_wav(tmp_path / "z.wav"))]))


def test_output_dir_that_is_a_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    wav = tmp_path / "t.wav"
    sf.write(wav, np.zeros(16_000, np.float32), 16_000)
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    for folder in (taken, taken / "below"):
        line = one_red_line(runner.invoke(app, ["transcribe", str(wav), "--output-dir", str(folder), "--model", str(tiny_model_dir)]))
        assert "--output-dir" in line


def test_model_folder_without_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    wav = tmp_path / "t.wav"
    sf.write(wav, np.zeros(16_000, np.float32), 16_000)
    empty = tmp_path / "model"
    empty.mkdir()
    shutil.copy(tiny_model_dir / "config.json", empty / "config.json")
    assert "no weights" in one_red_line(runner.invoke(app, ["caption", str(wav), "--model", str(empty)]))


@pytest.mark.parametrize("option", [["--max-upload-mb", "nan"], ["--max-upload-mb", "0"], ["--max-audio-seconds", "nan"],
                                    ["--max-audio-seconds", "inf"], ["--batch-wait-ms", "nan"], ["--shutdown-grace", "nan"],
                                    ["--shutdown-grace", "-1"]])
def test_serve_refuses_limits_that_are_not_finite_and_positive(option: list[str]) -> None:
    assert option[0].removeprefix("--").replace("-", "_") in one_red_line(runner.invoke(app, ["serve", *option])).replace("-", "_")


def test_serve_on_a_busy_port_or_a_foreign_address(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_red_line(runner.invoke(app, ["serve", "--port", str(port), "--model", str(tmp_path)]))
    assert "cannot listen on 127.0.0.1" in line  # said before the model is looked for (tmp_path has none)
    assert "cannot listen on 192.0.2.1" in one_red_line(runner.invoke(app, ["serve", "--host", "192.0.2.1", "--port", "0"]))


def test_chat_survives_a_bad_audio(tmp_path: Path, tiny_model_dir: Path) -> None:
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(80, np.float32), 16_000)  # 5 ms: too short for one encoder frame
    script = f"/audio {zero_bit_wav(tmp_path / 'z.wav')}\nwhat is it?\n/audio {short}\nand this?\nhello\n/quit\n"
    result = runner.invoke(app, ["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3"], input=script)
    assert result.exit_code == 0, result.output
    assert result.output.count("error:") == 2 and result.output.count("assistant>") >= 1
    assert result.output.rstrip().splitlines()[-1].startswith("assistant>")  # "hello" was answered
