"""Tests of the offline corpus generator (qwen_audio.data.synth).

The split tests prove the held-out material is new (no shared sentence, voice variant,
instrument program or sound source); the label tests check the audio against what the labels
claim (word spans have speech and gaps are silent, notes have their MIDI pitch, events sit where
the scene says). Anything that runs espeak-ng or fluidsynth is skipped when they are absent.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qwen_audio.data import read_chat_manifest, read_manifest, validate_manifest
from qwen_audio.data.synth import SPLITS, SYSTEM_PACKAGES, CorpusConfig, make_corpus
from qwen_audio.data.synth import lexicon as lx
from qwen_audio.data.synth import music, sentences, splits, sounds, speech

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_FLUIDSYNTH = shutil.which("fluidsynth") is not None and music.find_soundfont() is not None
needs_tools = pytest.mark.skipif(
    not (HAVE_ESPEAK and HAVE_FLUIDSYNTH),
    reason=f"corpus generation needs the Debian packages {' '.join(SYSTEM_PACKAGES)}",
)
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")
SR = 16_000


# ---------------------------------------------------------------- pure split assignment


def test_voice_variants_are_disjoint_and_cover_every_variant() -> None:
    seen: dict[str, str] = {}
    for split in SPLITS:
        for gender, variants in splits.voice_variants(split).items():
            assert variants, f"{split} has no {gender} voice"
            for v in variants:
                assert v not in seen, f"variant {v} is in {seen[v]} and {split}"
                seen[v] = split
    assert set(seen) == set(speech.FEMALE_VARIANTS) | set(speech.MALE_VARIANTS)


def test_instrument_programs_are_disjoint_and_every_split_has_every_family() -> None:
    owner: dict[int, str] = {}
    for split in SPLITS:
        programs = splits.family_programs(split)
        assert set(programs) == set(music.FAMILIES)
        for family, progs in programs.items():
            assert progs, f"{split} has no {family} program"
            assert all(music.program_family(p) == family for p in progs)
            for p in progs:
                assert p not in owner, f"program {p} is in {owner[p]} and {split}"
                owner[p] = split


def test_sentence_split_is_a_function_of_the_text() -> None:
    rng = random.Random(0)
    texts = [sentences.sample_sentence("en", rng).text for _ in range(400)]
    assigned = [splits.split_of_text(t) for t in texts]
    assert assigned == [splits.split_of_text(t) for t in texts]
    share = {s: assigned.count(s) / len(assigned) for s in SPLITS}
    assert 0.7 < share["train"] < 0.9 and share["test"] > 0.04 and share["validation"] > 0.04


def test_korean_particles_follow_the_final_consonant() -> None:
    # 책 ends in a consonant → 책을; 개 ends in a vowel → 개를 (and 민수 → 민수는).
    assert [w.text for w in sentences.verb_clause("ko", 0, 0, 10)] == ["민수는", "책을", "본다"]
    assert [w.text for w in sentences.verb_clause("ko", 0, 0, 1)] == ["민수는", "개를", "본다"]


def test_romance_colours_agree_with_the_noun() -> None:
    assert sentences.colour_clause("es", 5, 0)[-1].text == "roja"  # la vaca es roja
    assert sentences.colour_clause("it", 2, 1)[0].text == "l'uccello"
    assert [w.text for w in sentences.colour_clause("de", 1, 0)] == ["der", "Hund", "ist", "rot"]


def test_midi_file_is_well_formed() -> None:
    data = music.midi_bytes([music.Note(40, 60, 100, 0.0, 1.0), music.Note(0, 64, 50, 0.5, 1.0)])
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    assert int.from_bytes(data[18:22], "big") == len(data) - 22
    assert data.endswith(b"\xff\x2f\x00")


# ---------------------------------------------------------------- labels vs synthesis


@needs_espeak
@pytest.mark.slow
def test_every_lexicon_word_is_read_in_its_own_language() -> None:
    """espeak-ng marks words it cannot read natively with a language switch like "(en)"."""
    for language in lx.LANGUAGES:
        voice = speech.ESPEAK_VOICES[language][0]
        words = sorted({w.spoken for w in sentences.all_entries(language)})
        out = subprocess.run(["espeak-ng", "-q", "-x", "-v", voice], input="\n".join(words),
                             capture_output=True, text=True, check=True).stdout
        assert "(" not in out, f"{language}: espeak-ng switched language: {out[:300]}"


@needs_espeak
@pytest.mark.parametrize("language", lx.LANGUAGES)
def test_word_spans_hold_speech_and_gaps_are_silent(language: str) -> None:
    sentence = sentences.sample_sentence(language, random.Random(7))
    voice = speech.Voice(language, speech.ESPEAK_VOICES[language][0], "m3", "male", 170, 50)
    rendered = speech.render_speech(speech.SpeechSpec(sentence, voice, seed=1, augment=False))
    x = rendered.samples
    assert [w.word for w in rendered.words] == [w.text for w in sentence.words]
    edges = [0.0] + [t for w in rendered.words for t in (w.start, w.end)] + [len(x) / SR]
    for w in rendered.words:
        span = x[int(w.start * SR): int(w.end * SR)]
        assert np.sqrt(np.mean(span**2)) > 0.01, f"no speech inside {w}"
        # The word's own render, trimmed, is as long as its labelled span (0.01 s rounding).
        alone = speech.espeak_samples(
            next(s.spoken for s in sentence.words if s.text == w.word), voice)
        lo, hi = speech.effects.active_bounds(alone)
        assert abs((hi - lo) / SR - (w.end - w.start)) <= 0.021
    for gap_start, gap_end in zip(edges[0::2], edges[1::2]):
        gap = x[int(np.ceil(gap_start * SR)): int(gap_end * SR)]
        assert np.abs(gap).max(initial=0.0) == 0.0, f"sound in gap {gap_start}–{gap_end}"


@needs_espeak
def test_female_variants_speak_higher_than_male_variants() -> None:
    def f0(variant: str) -> float:
        voice = speech.Voice("en", "en-us", variant, "?", 160, 50)
        return music.estimate_f0(speech.espeak_samples("the cat is red", voice), 60, 400)

    female = [f0(v) for v in ("f2", "Annie", "linda")]
    male = [f0(v) for v in ("m2", "Mike", "john")]
    assert min(female) > max(male)


def _harmonic_salience(x: np.ndarray, freq: float) -> float:
    seg = x[int(0.05 * SR): SR].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 1 << 16))
    freqs = np.fft.rfftfreq(1 << 16, 1 / SR)
    total = 0.0
    for h in range(1, 6):
        if h * freq > SR / 2 - 200:
            break
        band = (freqs > h * freq * 2 ** (-0.25 / 12)) & (freqs < h * freq * 2 ** (0.25 / 12))
        total += spectrum[band].max()
    return total


def assert_note_has_pitch(x: np.ndarray, midi_pitch: int) -> None:
    """The labelled pitch's harmonic series beats those one and two semitones away."""
    f = 440.0 * 2 ** ((midi_pitch - 69) / 12)
    label = _harmonic_salience(x, f)
    for step in (-2, -1, 1, 2):
        assert label > _harmonic_salience(x, f * 2 ** (step / 12)), (midi_pitch, step)


# ---------------------------------------------------------------- the tiny corpus end to end


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (HAVE_ESPEAK and HAVE_FLUIDSYNTH):
        pytest.skip(f"corpus generation needs {' '.join(SYSTEM_PACKAGES)}")
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, CorpusConfig(size="tiny", seed=3, workers=1), progress=False)
    return out


def _records(root: Path, name: str) -> dict[str, list]:
    return {s: list(read_manifest(root / s / f"{name}.jsonl")) for s in SPLITS}


def _read(root: Path, split: str, rel: str) -> np.ndarray:
    x, rate = sf.read(root / split / rel, dtype="float32")
    assert rate == SR and x.ndim == 1
    return x


@needs_tools
@pytest.mark.slow
def test_tiny_corpus_is_complete_and_valid(tiny_corpus: Path) -> None:
    summary = json.loads((tiny_corpus / "corpus.json").read_text())
    assert summary["seed"] == 3 and "espeak" in summary["versions"]["espeak_ng"].lower()
    tasks = set()
    for split in SPLITS:
        for name in ("speech", "numbers", "music", "sounds", "scenes", "chat"):
            path = tiny_corpus / split / f"{name}.jsonl"
            assert validate_manifest(path) == [], path
            assert sum(summary["counts"][split][name].values()) > 0
        for name in ("speech", "numbers", "music", "sounds", "scenes"):
            for r in read_manifest(tiny_corpus / split / f"{name}.jsonl"):
                tasks.add(r.task)
                info = sf.info(tiny_corpus / split / r.audio)
                assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
                assert abs(info.frames / SR - r.duration) < 1e-3
        for chat in read_chat_manifest(tiny_corpus / split / "chat.jsonl"):
            assert all((tiny_corpus / split / a.path).is_file() for a in chat.audios)
    assert {"asr", "srwt", "language_id", "gender", "aqa", "s2tt", "note_analysis", "pitch",
            "instrument", "velocity", "music_caption", "sound_event", "caption", "scene"} <= tasks
    assert {r.audio_language for r in _records(tiny_corpus, "speech")["train"]} == set(lx.LANGUAGES)


@needs_tools
@pytest.mark.slow
def test_tiny_corpus_splits_share_no_sentence_voice_program_or_source(tiny_corpus: Path) -> None:
    material: dict[str, dict[str, set]] = {s: {"text": set(), "variant": set(), "program": set(),
                                              "source": set()} for s in SPLITS}
    for split in SPLITS:
        m = material[split]
        for name in ("speech", "numbers"):
            for r in read_manifest(tiny_corpus / split / f"{name}.jsonl"):
                if r.task == "asr" and not r.meta.get("itn"):
                    m["text"].add(r.text)
                m["variant"].add(r.meta["variant"])
        for r in read_manifest(tiny_corpus / split / "music.jsonl"):
            m["program"].add(r.meta["program"])
        for r in read_manifest(tiny_corpus / split / "sounds.jsonl"):
            m["source"].add((r.meta["event_type"], r.meta["source_id"]))
        for r in read_manifest(tiny_corpus / split / "scenes.jsonl"):
            m["source"] |= {(e["event_type"], e["source_id"]) for e in r.meta["events"]}
        assert all(m.values()), f"{split} is missing material: {m}"
    for kind in ("text", "variant", "program", "source"):
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            shared = material[a][kind] & material[b][kind]
            assert not shared, f"{a} and {b} share {kind}: {sorted(shared)[:5]}"


@needs_tools
@pytest.mark.slow
def test_tiny_corpus_labels_match_the_audio(tiny_corpus: Path) -> None:
    scripts = {"zh": (0x4E00, 0x9FFF), "ja": (0x3040, 0x30FF), "ko": (0xAC00, 0xD7A3)}
    for split in SPLITS:
        for r in _records(tiny_corpus, "speech")[split]:
            lang = r.audio_language
            assert r.meta["voice"].split("+")[0] in speech.ESPEAK_VOICES[lang]
            assert (r.meta["variant"] in speech.FEMALE_VARIANTS) == (r.meta["gender"] == "female")
            if lang in scripts and r.task == "asr":
                lo, hi = scripts[lang]
                assert any(lo <= ord(c) <= hi for c in r.text), (lang, r.text)
            if r.task == "srwt":
                x = _read(tiny_corpus, split, r.audio)
                inside = np.concatenate([x[int(w.start * SR): int(w.end * SR)] for w in r.words])
                outside = x[: int(r.words[0].start * SR)]
                assert np.sqrt(np.mean(inside**2)) > 2 * np.sqrt(np.mean(outside**2) + 1e-12)
                assert sentences.join_words([w.word for w in r.words], lang) == r.text
        for r in _records(tiny_corpus, "numbers")[split]:
            if r.task == "asr" and r.meta.get("itn"):
                numbers = tuple(int(n) for n in r.text.split())
                spoken = [w.spoken for w in sentences.number_sequence(r.audio_language,
                                                                     list(numbers)).words]
                assert spoken == r.meta["spoken"]
        for r in _records(tiny_corpus, "music")[split]:
            if r.task == "pitch":
                assert_note_has_pitch(_read(tiny_corpus, split, r.audio), int(r.text))
                assert music.program_family(r.meta["program"]) == r.meta["family"]
        for r in _records(tiny_corpus, "scenes")[split]:
            if r.task != "scene":
                continue
            x = _read(tiny_corpus, split, r.audio)
            mask = np.zeros(len(x), bool)
            for e in r.meta["events"]:
                mask[int(e["start"] * SR): int(e["end"] * SR)] = True
                assert e["event_type"] in sounds.SCENES[r.text][2]
            if (~mask).sum() > SR // 2:
                assert np.sqrt(np.mean(x[mask] ** 2)) > np.sqrt(np.mean(x[~mask] ** 2))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "corpus.json":
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


@needs_tools
@pytest.mark.slow
def test_corpus_is_identical_for_any_worker_count(tiny_corpus: Path, tmp_path: Path) -> None:
    make_corpus(tmp_path, CorpusConfig(size="tiny", seed=3, workers=2), progress=False)
    assert _digest(tmp_path) == _digest(tiny_corpus)


def test_unknown_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown corpus size"):
        CorpusConfig(size="huge")


def test_cli_names_the_packages_to_install_when_tools_are_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from qwen_audio.data.synth import cli

    monkeypatch.setattr(cli, "missing_system_tools", lambda: ["espeak-ng"])
    result = CliRunner().invoke(cli.app, [str(tmp_path / "c"), "--size", "tiny"])
    assert result.exit_code == 1
    assert "apt-get install espeak-ng fluidsynth timgm6mb-soundfont" in result.output
    assert not (tmp_path / "c").exists()


def test_held_out_counts_follow_the_scaled_train_count() -> None:
    config = CorpusConfig(size="small", scale=2.0)
    assert config.count(40, "train") == 80
    assert config.count(40, "validation") == config.count(40, "test") == 8
    assert CorpusConfig(size="tiny").count(1, "test") == 1  # never an empty held-out split


def test_config_can_limit_the_splits() -> None:
    from qwen_audio.data.synth.config import CorpusConfig
    from qwen_audio.errors import ConfigError

    assert CorpusConfig(splits=("test",)).splits == ("test",)
    with pytest.raises(ConfigError):
        CorpusConfig(splits=("dev",))
    with pytest.raises(ConfigError):
        CorpusConfig(splits=())


def test_clicking_events_never_overrun_their_buffer() -> None:
    """Regression: a jittered last click onset at the very end broke a default-size corpus run."""
    from qwen_audio.data.synth import sounds

    for seed in range(300):
        event = sounds.render_event("clicking", seed % 40, seed)
        assert np.isfinite(event.samples).all() and event.samples.size > 0


def test_config_can_limit_families_and_speech_languages() -> None:
    from qwen_audio.data.synth.plan import plan_split
    from qwen_audio.data.synth.render import SpeechJob
    from qwen_audio.errors import ConfigError

    config = CorpusConfig(size="small", splits=("train",), families=("speech",), languages=("en",))
    jobs = plan_split(config, "train")
    assert jobs and all(isinstance(job, SpeechJob) for job in jobs)
    assert {job.spec.sentence.language for job in jobs} == {"en"}
    everything = plan_split(CorpusConfig(size="small", splits=("train",)), "train")
    # the English speech of a full plan is the same draw: a subset adds nothing and shifts nothing
    english = [j for j in everything if isinstance(j, SpeechJob) and j.spec.sentence.language == "en"]
    assert [j.id for j in english] == [j.id for j in jobs]
    assert [j.spec for j in english] == [j.spec for j in jobs]
    for bad in ({"families": ("video",)}, {"languages": ("xx",)}, {"families": ()}):
        with pytest.raises(ConfigError):
            CorpusConfig(**bad)  # type: ignore[arg-type]


@needs_tools
def test_a_speech_only_corpus_has_no_other_family_and_no_chats(tmp_path: Path) -> None:
    make_corpus(tmp_path, CorpusConfig(size="tiny", seed=5, splits=("train",), families=("speech",),
                                       languages=("en", "de")), progress=False)
    summary = json.loads((tmp_path / "corpus.json").read_text())
    counts = summary["counts"]["train"]
    assert counts["speech"]["asr"] > 0 and counts["music"] == counts["sounds"] == {}
    assert counts["chat"] == {"chat": 0}
    languages = {r.audio_language for r in read_manifest(tmp_path / "train" / "speech.jsonl")}
    assert languages == {"en", "de"}
    assert summary["families"] == ["speech"] and summary["languages"] == ["en", "de"]


@pytest.mark.parametrize("args, message", [(["--size", "huge"], "unknown corpus size 'huge'"),
                                           (["--family", "video"], "families must be a non-empty subset")])
def test_cli_refuses_a_bad_size_or_family_before_writing_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from qwen_audio.data.synth import cli

    monkeypatch.setattr(cli, "missing_system_tools", lambda: [])
    result = CliRunner().invoke(cli.app, [str(tmp_path / "c"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "c").exists()
