"""cli.py end to end (typer's runner): commands, outputs, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from qwen_audio.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@pytest.fixture()
def wav(tmp_path: Path) -> Path:
    t = np.arange(16_000) / 16_000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16_000)
    return path


def test_info_reports_the_front_end_view(wav: Path) -> None:
    result = runner.invoke(app, ["info", str(wav)])
    assert result.exit_code == 0, result.output
    assert "tone.wav" in result.output and "27" in result.output  # 1 s → 27 audio tokens


def test_the_console_script_keeps_each_exit_code_and_freezes_the_collector_before_exit(
    monkeypatch: pytest.MonkeyPatch, wav: Path, tmp_path: Path,
) -> None:
    from importlib.metadata import entry_points

    from qwen_audio import cli

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "qwen-audio"]
    assert script.load() is cli.main
    frozen: list[bool] = []
    monkeypatch.setattr(cli.gc, "freeze", lambda: frozen.append(True))
    for argv, code in ((["info", str(wav)], 0), (["info", str(tmp_path / "missing.wav")], 1)):
        monkeypatch.setattr("sys.argv", ["qwen-audio", *argv])
        with pytest.raises(SystemExit) as exited:
            cli.main()
        assert exited.value.code == code
    assert frozen == [True, True]


@pytest.mark.parametrize("command", [["info"], ["transcribe"], ["caption"], ["classify"]])
def test_missing_file_is_a_one_line_error(tmp_path: Path, command: list[str]) -> None:
    result = runner.invoke(app, [*command, str(tmp_path / "missing.wav")])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output


def test_a_folder_given_as_audio_says_to_name_its_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["transcribe", str(tmp_path)])
    assert result.exit_code == 1
    assert "a folder, not an audio file" in result.output and "Traceback" not in result.output


def test_corrupt_audio_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot really")
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1 and "error:" in result.output


def test_missing_model_is_a_one_line_error(tmp_path: Path, wav: Path) -> None:
    result = runner.invoke(app, ["transcribe", str(wav), "--model", str(tmp_path)])
    assert result.exit_code == 1 and "config.json" in result.output


def test_transcribe_writes_subtitles(model_dir: Path, wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "subs"
    result = runner.invoke(app, ["transcribe", str(wav), "--language", "en", "--output-format", "srt",
                                 "--output-dir", str(out), "--model", str(model_dir), "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert (out / "tone.srt").is_file()
    result = runner.invoke(app, ["transcribe", str(wav), "--language", "en", "-f", "json", "--output-dir", str(out),
                                 "--model", str(model_dir), "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "tone.json").read_text())
    assert payload["language"] == "en" and isinstance(payload["text"], str) and payload["duration"] == 1.0
    assert isinstance(payload["words"], list)
    assert all({"word", "start", "end"} <= set(w) for w in payload["words"])


def test_bad_options_are_refused(model_dir: Path, wav: Path) -> None:
    result = runner.invoke(app, ["transcribe", str(wav), "-f", "docx", "--model", str(model_dir)])
    assert result.exit_code == 1 and "output-format" in result.output


def test_a_bug_keeps_its_traceback_while_user_errors_are_one_line() -> None:
    from qwen_audio.cli import friendly_errors
    from qwen_audio.errors import ConfigError

    def broken() -> None:
        raise ValueError("an internal invariant failed")

    with pytest.raises(ValueError, match="invariant"):  # a real bug is not dressed up as a user error
        friendly_errors(broken)()

    def refused() -> None:
        raise ConfigError("--beams must be ≥ 1")

    with pytest.raises(typer.Exit) as exit_info:
        friendly_errors(refused)()
    assert exit_info.value.exit_code == 1


def test_chat_reads_turns_and_attaches_audio(model_dir: Path, wav: Path) -> None:
    script = f"/audio {wav}\nwhat is this?\n/audio /nonexistent.wav\n/reset\nhello\n/quit\n"
    result = runner.invoke(app, ["chat", "--model", str(model_dir), "--max-new-tokens", "4"], input=script)
    assert result.exit_code == 0, result.output
    assert "no such file" in result.output
    assert result.output.count("assistant>") == 2


def test_demo_runs_on_the_bundled_samples() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "speech_en.flac" in result.output or "speech_en" in result.output


def test_build_tokenizer_from_manifests(tmp_path: Path) -> None:
    import json

    from qwen_audio.tokenizer import QwenAudioTokenizer

    lines = [{"id": f"r{i}", "audio": "a.wav", "task": "asr", "audio_language": "en", "text_language": "en",
              "text": f"the red cat number {i} sees the blue dog"} for i in range(50)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    chat = {"id": "c", "messages": [{"role": "user", "content": "what colour is the cat?"},
                                    {"role": "assistant", "content": "the cat is red"}]}
    (tmp_path / "c.jsonl").write_text(json.dumps(chat) + "\n")
    out = tmp_path / "qwen.tiktoken"
    result = runner.invoke(app, ["build-tokenizer", str(tmp_path / "m.jsonl"), str(tmp_path / "c.jsonl"),
                                 "--out", str(out), "--vocab-size", "300"])
    assert result.exit_code == 0, result.output
    tokenizer = QwenAudioTokenizer(out)
    assert 256 < tokenizer.n_ranks <= 300
    ids = tokenizer.encode_prompt("the red cat").ids
    assert len(ids) < len("the red cat") and tokenizer.decode(ids) == "the red cat"


def test_transcribe_decodes_with_the_models_beams_unless_told(model_dir: Path, wav: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_audio.api import QwenAudio

    seen: list[int] = []
    real = QwenAudio.transcribe

    def spy(self: QwenAudio, *args: object, **kwargs: object) -> object:
        seen.append(kwargs["options"].num_beams)  # type: ignore[union-attr]
        return real(self, *args, **kwargs)

    monkeypatch.setattr(QwenAudio, "transcribe", spy)
    monkeypatch.setattr(QwenAudio, "speech_beams", property(lambda self: 3))
    base = ["transcribe", str(wav), "--language", "en", "--model", str(model_dir), "--max-new-tokens", "4"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--beams", "1"]).exit_code == 0
    assert seen == [3, 1]
    result = runner.invoke(app, [*base, "--beams", "0"])
    assert result.exit_code != 0 and "beams" in result.output


@pytest.mark.parametrize("output_format", ["txt", "json", "srt"])
def test_results_reach_stdout_verbatim_however_long(model_dir: Path, wav: Path, output_format: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped output is data: no wrapping at the console's width, no markup or emoji codes taken from the text."""
    from qwen_audio.api import QwenAudio
    from qwen_audio.formats.timestamps import Word
    from qwen_audio.infer.engine import Transcript

    spoken = [f"word{i}" for i in range(60)] + [":smile:", "[bold]loud[/bold]"]
    words = tuple(Word(w, i * 0.5, i * 0.5 + 0.4) for i, w in enumerate(spoken))
    said = Transcript(" ".join(spoken), "en", 40.0, words)
    monkeypatch.setattr(QwenAudio, "transcribe", lambda self, *args, **kwargs: said)
    result = runner.invoke(app, ["transcribe", str(wav), "--language", "en", "--model", str(model_dir),
                                 "-f", output_format])
    assert result.exit_code == 0, result.output
    if output_format == "txt":
        assert result.stdout == said.text + "\n"
    elif output_format == "json":
        payload = json.loads(result.stdout)
        assert payload["text"] == said.text and [w["word"] for w in payload["words"]] == spoken
    else:
        assert ":smile:" in result.stdout and "[bold]loud[/bold]" in result.stdout


@pytest.mark.parametrize("command", [["transcribe", "--language", "en"], ["caption"], ["classify"]])
def test_a_corrupt_file_in_a_batch_costs_only_itself(model_dir: Path, wav: Path, tmp_path: Path,
                                                      command: list[str]) -> None:
    """Each bad file is one line naming it, the good ones before and after it are done, exit code 1."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot really")
    later = tmp_path / "later.wav"
    later.write_bytes(wav.read_bytes())
    result = runner.invoke(app, [*command, str(wav), str(bad), str(later), "--model", str(model_dir),
                                 *(["--max-new-tokens", "4"] if command[0] == "transcribe" else [])])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bad.wav" in result.stderr and "1 of 3 files failed" in result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["tone.wav", "later.wav"]


def test_several_files_printed_each_say_which_file_they_are(model_dir: Path, wav: Path, tmp_path: Path) -> None:
    later = tmp_path / "later.wav"
    later.write_bytes(wav.read_bytes())
    base = ["transcribe", str(wav), str(later), "--language", "en", "--model", str(model_dir), "--max-new-tokens", "4"]
    result = runner.invoke(app, [*base, "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # JSON Lines
    assert [row["file"] for row in rows] == [str(wav), str(later)] and all("words" in row for row in rows)
    result = runner.invoke(app, [*base, "-f", "srt"])
    assert result.exit_code == 1 and "--output-dir" in result.output
    translated = runner.invoke(app, ["translate", str(wav), str(later), "--language", "en", "--to", "fr",
                                     "--model", str(model_dir)])
    assert translated.exit_code == 0, translated.output
    assert [line.split(":")[0] for line in translated.stdout.splitlines()] == ["tone.wav", "later.wav"]
    alone = runner.invoke(app, ["transcribe", str(wav), "--language", "en", "--model", str(model_dir),
                                "--max-new-tokens", "4"])
    assert alone.exit_code == 0 and not alone.stdout.startswith("tone.wav")  # one file: the text alone


def test_an_output_dir_never_takes_two_files_to_one_name(model_dir: Path, wav: Path, tmp_path: Path) -> None:
    twin = tmp_path / "elsewhere" / wav.name
    twin.parent.mkdir()
    twin.write_bytes(wav.read_bytes())
    result = runner.invoke(app, ["transcribe", str(wav), str(twin), "--output-dir", str(tmp_path / "out"),
                                 "--model", str(model_dir)])
    assert result.exit_code == 1 and "would both write tone.txt" in result.output
    assert not (tmp_path / "out").exists()  # refused before any work


def test_audio_without_speech_prints_nothing_and_says_why_on_stderr(model_dir: Path, wav: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Music or noise: the transcript stays empty (what a script reads), and the person is told it heard no speech."""
    from qwen_audio.api import QwenAudio
    from qwen_audio.infer.engine import Transcript

    monkeypatch.setattr(QwenAudio, "transcribe", lambda self, audio, *a, **k: Transcript("", "unknown", 1.0, ()))
    result = runner.invoke(app, ["transcribe", str(wav), "--model", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "\n" and "tone.wav: no speech heard" in result.stderr
    as_json = runner.invoke(app, ["transcribe", str(wav), "-f", "json", "--model", str(model_dir)])
    assert json.loads(as_json.stdout)["language"] == "unknown" and json.loads(as_json.stdout)["text"] == ""
    monkeypatch.setattr(QwenAudio, "transcribe", lambda self, audio, *a, **k: Transcript("hello", "en", 1.0, ()))
    spoken = runner.invoke(app, ["transcribe", str(wav), "--model", str(model_dir)])
    assert spoken.stdout == "hello\n" and "no speech" not in spoken.stderr


def test_a_dash_reads_the_audio_piped_to_stdin(model_dir: Path, wav: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``ffmpeg … - | qwen-audio transcribe -``: the model reads the piped bytes; --output-dir names it stdin."""
    from qwen_audio.api import QwenAudio
    from qwen_audio.infer.engine import Transcript

    heard: list[object] = []

    def transcribe(self, audio, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        heard.append(audio)
        return Transcript("piped", "en", 1.0, ())

    monkeypatch.setattr(QwenAudio, "transcribe", transcribe)
    base = ["transcribe", "-", "--language", "en", "--model", str(model_dir)]
    result = runner.invoke(app, base, input=wav.read_bytes())
    assert result.exit_code == 0, result.output
    assert result.stdout == "piped\n" and heard == [wav.read_bytes()]
    result = runner.invoke(app, [*base, str(wav), "--output-dir", str(tmp_path / "out")], input=wav.read_bytes())
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["stdin.txt", "tone.txt"]
    assert heard[1:] == [wav.read_bytes(), str(wav)]
    empty = runner.invoke(app, base, input=b"")
    assert empty.exit_code == 1 and "nothing was piped in" in empty.output
    twice = runner.invoke(app, [*base, "-"], input=wav.read_bytes())
    assert twice.exit_code == 1 and "can be named once" in twice.output
    info = runner.invoke(app, ["info", "-"], input=wav.read_bytes())
    assert info.exit_code == 0 and "27" in info.output  # 1 s → 27 audio tokens, as from the file
