"""World-like data (issue 16 §3): the binding Asterisk split, the text cleaner, disjoint test
texts and voices, and records that validate. Fixtures are made in the test; the parts that need
Debian packages (ffmpeg, espeak-ng, flite, the Asterisk prompts) skip without them."""

from __future__ import annotations

import gzip
import hashlib
import random
import shutil
import subprocess
import json
from pathlib import Path

import pytest
import soundfile as sf

from qwen_audio.data.manifest import validate_manifest, write_manifest
from qwen_audio.data.world import asterisk, texts, tuxpaint, voices
from qwen_audio.data.world.build import BuildConfig, TtsCounts, build_tts_stage, plan_tts
from qwen_audio.data.world.render import TtsJob, render_job, spoken_form
from qwen_audio.data.world.texts import TextSource

HAVE_FFMPEG = shutil.which("ffmpeg") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg is not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
needs_festival_en = pytest.mark.skipif(
    shutil.which("text2wave") is None or not Path("/usr/share/festival/voices/english/ked_diphone").is_dir(),
    reason="festival with festvox-kdlpc16k is not installed")
needs_festival = pytest.mark.skipif(
    shutil.which("text2wave") is None or not Path("/usr/share/festival/voices/italian").is_dir(),
    reason="festival with festvox-italp16k/festvox-itapc16k is not installed")
needs_asterisk = pytest.mark.skipif(
    not (asterisk.SOUNDS_ROOT.is_dir() and any(asterisk.SOUNDS_ROOT.glob("en_*"))
         and (asterisk.DOC_ROOT / "asterisk-core-sounds-en").is_dir()),
    reason="asterisk-core-sounds-en and asterisk-core-sounds-en-g722 are not installed")


# ---------------------------------------------------------------- the Asterisk split


def test_validation_split_is_md5_of_base_name_starting_c_to_f():
    for name in ("conf-onlyperson", "vm-intro", "digits/1", "letters/a", "agent-pass", "beep"):
        base = name.rsplit("/", 1)[-1]
        first = hashlib.md5(base.encode("utf-8")).hexdigest()[0]
        assert asterisk.prompt_split(name) == ("validation" if first in "cdef" else "train")


def test_split_ignores_folder_and_extension():
    assert asterisk.prompt_base_name("digits/1.g722") == "1"
    assert asterisk.prompt_split("digits/1") == asterisk.prompt_split("1.g722")
    splits = {asterisk.prompt_split(f"p{i}") for i in range(64)}
    assert splits == {"train", "validation"}


def test_prompt_text_cleaning():
    clean = asterisk.clean_prompt_text
    assert clean("Thank you.   Please  hold.", "en") == "Thank you. Please hold."
    assert clean("[ascending tones]", "en") is None
    assert clean("(beep)", "fr") is None
    assert clean("<beep ascending>", "en") is None
    assert clean("dot [.]", "en") == "dot"
    assert clean("Il [suo] messaggio è stato salvato.", "it") is None  # spoken or not? skip
    assert clean("Please leave a message. (simple tone sound plays)", "en") is None
    assert clean("La conferenza ? piena.", "it") == "La conferenza è piena."
    assert clean("Non pu? essere richiamato.", "it") == "Non può essere richiamato."
    assert clean("In quale cartella?", "it") == "In quale cartella?"


def _g722(path: Path, seconds: float = 0.3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", "-ar", "16000", "-ac", "1",
                    "-c:a", "g722", "-f", "g722", "-y", str(path)], check=True)


@needs_ffmpeg
def test_prompts_decode_pair_with_text_and_validate(tmp_path):
    sounds, docs = tmp_path / "sounds", tmp_path / "doc"
    voice = sounds / "en_US_f_Allison"
    _g722(voice / "hello.g722")
    other_speaker = sounds / "en_AU_f_Other"  # an asterisk-prompt-* set: sorts first, never read
    other_speaker.mkdir()
    shutil.copy(voice / "hello.g722", other_speaker / "goodbye.g722")
    for name in ("digits/7", "beep", "untranscribed", "silence/1"):
        (voice / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(voice / "hello.g722", voice / f"{name}.g722")
    text_file = docs / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz"
    text_file.parent.mkdir(parents=True)
    with gzip.open(text_file, "wt", encoding="utf-8") as f:
        f.write("; Core sounds\n\nhello: Hello,  world.\ndigits/7: seven\ngoodbye: Goodbye.\n"
                "beep: [a beep]\nsilence/1: (1 second of silence)\n")
    prompts = list(asterisk.iter_prompts("en", sounds, docs))
    assert [(p.name, p.text) for p in prompts] == [("digits/7", "seven"), ("hello", "Hello, world.")]
    by_split = asterisk.build_asterisk(tmp_path / "out", ("en",), log=lambda m: None,
                                       sounds_root=sounds, doc_root=docs)
    records = by_split["train"] + by_split["validation"]
    assert len(records) == 2
    for record in records:
        assert record.meta["split"] == asterisk.prompt_split(record.meta["prompt"])
        assert record in by_split[record.meta["split"]]
        assert Path(record.audio).is_absolute() and record.audio.endswith(".flac")
        assert record.duration == pytest.approx(0.3, abs=0.05)
    manifest = tmp_path / "train.jsonl"
    write_manifest(records, manifest)
    assert validate_manifest(manifest) == []


@needs_ffmpeg
def test_prompts_longer_than_one_encoder_window_are_left_out(tmp_path, monkeypatch):
    sounds, docs = tmp_path / "sounds", tmp_path / "doc"
    voice = sounds / "en_US_f_Allison"
    _g722(voice / "short.g722")
    _g722(voice / "monologue.g722", seconds=1.5)
    text_file = docs / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz"
    text_file.parent.mkdir(parents=True)
    with gzip.open(text_file, "wt", encoding="utf-8") as f:
        f.write("short: Hi.\nmonologue: A very long demonstration.\n")
    monkeypatch.setattr(asterisk, "MAX_PROMPT_SECONDS", 1.0)  # stands for the 30 s window
    by_split = asterisk.build_asterisk(tmp_path / "out", ("en",), log=lambda m: None, sounds_root=sounds, doc_root=docs)
    assert [r.meta["prompt"] for r in by_split["train"] + by_split["validation"]] == ["short"]


@needs_asterisk
def test_installed_prompts_keep_reserved_names_out_of_training():
    prompts = list(asterisk.iter_prompts("en"))
    assert len(prompts) > 400
    for p in prompts:
        first = hashlib.md5(p.base_name.encode()).hexdigest()[0]
        assert (p.split == "validation") == (first in "cdef")
        assert "[" not in p.text and "(" not in p.text


# ---------------------------------------------------------------- text cleaning


def _clean(text: str, language: str = "en") -> str | None:
    return texts.clean_sentence(texts.normalise(text, language), language)


def test_cleaner_keeps_plain_sentences_and_unifies_punctuation():
    assert _clean("He said “hello” to me -- twice.") == "He said hello to me, twice."
    assert _clean("Is it raining again?!") == "Is it raining again?"
    assert _clean("Wer Bäume pflanzt, liebt sich und andere.", "de") == \
        "Wer Bäume pflanzt, liebt sich und andere."
    assert _clean("¿Para qué te preocupas?", "es") == "¿Para qué te preocupas?"


def test_cleaner_repairs_italian_ascii_accents():
    assert _clean("Errare e' umano, perche' lo dico io.", "it") == \
        "Errare è umano, perché lo dico io."
    assert _clean("Un po' di piu' caffe'.", "it") == "Un po' di più caffè."


@pytest.mark.parametrize("text", [
    "I have 3 apples and two pears.",  # digits
    "See http://example.com for more news.",  # URL
    "The NASA rocket flew to the moon.",  # acronym
    "Richard III was a king of England.",  # Roman numeral
    "Too short.",  # < 3 words
    " ".join(["word"] * 21) + ".",  # > 20 words
    "Q: Why did the chicken cross the road?",  # dialogue / colon
    "Call foo(x) with a list of [values].",  # code
    "lower case start is not a sentence.",
    "No final punctuation in this one",
    "Ein Satz mit Ä in Englisch.",  # letters the English voice cannot read
    "Over-Exposed But Not Under-Developed!",  # title case
])
def test_cleaner_rejects_what_a_voice_or_transcript_cannot_state(text):
    assert _clean(text) is None


def test_fortune_entries_drop_attributions(tmp_path):
    path = tmp_path / "quotes"
    path.write_text("A classic is something that everyone wants to have read\nand nobody wants"
                    " to read.\n\t\t-- Mark Twain\n%\nShort one here.\n%\n", encoding="utf-8")
    assert texts.read_fortunes(path) == [
        "A classic is something that everyone wants to have read and nobody wants to read.",
        "Short one here."]


# ---------------------------------------------------------------- disjoint test material


def _fixture_sources(tmp_path: Path) -> tuple[TextSource, ...]:
    (tmp_path / "train_a").write_text(
        "The cat sat on the warm mat.\n%\nRain falls softly on the old roof.\n%\n"
        "The cat sat on the warm mat!\n%\nBirds sing early in the morning.\n%\n", "utf-8")
    (tmp_path / "held").write_text(
        "Rain falls softly on the old roof.\n%\nA quiet harbour hides many boats.\n%\n"
        "Lanterns glow above the sleepy village.\n%\n", "utf-8")
    return (TextSource("a", "en", "pkg-a", ("train_a",), "train"),
            TextSource("b", "en", "pkg-b", ("held",), "test"))


def test_test_sentences_never_occur_in_training(tmp_path):
    sset = texts.build_sentence_set("en", _fixture_sources(tmp_path), tmp_path)
    train = [s for s, _ in sset.train]
    assert train == ["The cat sat on the warm mat.", "Rain falls softly on the old roof.",
                     "Birds sing early in the morning."]  # the "!" copy is a duplicate
    assert [s for s, _ in sset.test] == ["A quiet harbour hides many boats.",
                                         "Lanterns glow above the sleepy village."]
    assert {src for _, src in sset.test} == {"b"}
    tokens, types = sset.new_word_rate()
    # test words: a quiet harbour hides many boats lanterns glow above the sleepy village
    assert tokens == pytest.approx(11 / 12) and types == pytest.approx(11 / 12)


def test_every_language_holds_one_source_out_of_training():
    for language in {s.language for s in texts.SOURCES}:
        test_sources = [s for s in texts.SOURCES if s.language == language and s.split == "test"]
        train_files = {f for s in texts.SOURCES if s.language == language and s.split == "train"
                       for f in s.files}
        assert len(test_sources) == 1
        assert not train_files & set(test_sources[0].files)
    english = {s.split: s.package for s in texts.SOURCES if s.language == "en"}
    assert english["train"] != english["test"]


def test_test_voices_never_read_training_sentences():
    for gender in ("female", "male"):
        assert not (set(voices.espeak_variants("train")[gender])
                    & set(voices.espeak_variants("test")[gender]))
    assert not set(voices.flite_voices("train")) & set(voices.flite_voices("test"))
    assert voices.flite_voices("test")
    for lang in ("en", "it"):
        assert not set(voices.festival_voices("train", lang)) & set(voices.festival_voices("test", lang))
        assert voices.festival_voices("test", lang) and voices.festival_voices("train", lang)


def test_plan_draws_distinct_sentences_and_split_owned_voices(tmp_path):
    train = tuple((f"Train sentence number {w} here.", "a") for w in ("one", "two", "three",
                                                                      "four", "five"))
    test = (("Test sentence stays apart.", "b"), ("Another test line here.", "b"))
    sets = {lang: texts.SentenceSet(lang, train, test) for lang in ("en", "it")}
    config = BuildConfig(tmp_path, seed=3, tts={("en", "train"): TtsCounts(3, 2),
                                                ("en", "test"): TtsCounts(1, 1),
                                                ("it", "train"): TtsCounts(2, festival=2),
                                                ("it", "test"): TtsCounts(1, festival=1)})
    jobs = plan_tts(config, sets)
    assert plan_tts(config, sets) == jobs  # deterministic from the seed
    assert {j.engine for j in jobs} == {"espeak-ng", "flite", "festival"}
    assert len({j.id for j in jobs}) == len(jobs)
    for lang in ("en", "it"):
        train_jobs = [j for j in jobs if j.language == lang and j.split == "train"]
        test_jobs = [j for j in jobs if j.language == lang and j.split == "test"]
        assert len({j.text for j in train_jobs}) == len(train_jobs)  # no sentence twice
        assert not {j.text for j in train_jobs} & {j.text for j in test_jobs}
    for job in jobs:
        if job.engine == "flite":
            assert job.voice.name in voices.flite_voices(job.split)
        elif job.engine == "festival":
            assert job.voice.name in voices.festival_voices(job.split, job.language)
        else:
            assert job.voice.variant in voices.espeak_variants(job.split)[job.voice.gender]


def test_raising_a_later_engines_count_keeps_earlier_jobs(tmp_path):
    train = tuple((f"Sentence {w} is here.", "a") for w in ("one", "two", "three", "four"))
    sets = {"it": texts.SentenceSet("it", train, ())}
    fewer = plan_tts(BuildConfig(tmp_path, tts={("it", "train"): TtsCounts(2, festival=1)}), sets)
    more = plan_tts(BuildConfig(tmp_path, tts={("it", "train"): TtsCounts(2, festival=2)}), sets)
    assert more[:3] == fewer


# ---------------------------------------------------------------- rendering


def test_spoken_form_strips_outer_punctuation():
    assert [spoken_form(t) for t in ("¿Para", "qué?", "don't", "well-known,", "mat.")] == \
        ["Para", "qué", "don't", "well-known", "mat"]


@needs_espeak
def test_espeak_job_renders_asr_and_srwt_records_that_validate(tmp_path):
    voice = voices.draw_espeak_voice("en", "test", random.Random(0))
    job = TtsJob("test", "t-en-0", "en", "Birds sing early.", "b", voice, 7)
    records = render_job(job, tmp_path)
    assert [r.task for r in records] == ["asr", "srwt"]
    srwt = records[1]
    assert [w.word for w in srwt.words] == ["Birds", "sing", "early."]
    assert all(0 <= w.start < w.end <= srwt.duration for w in srwt.words)
    assert srwt.meta["variant"] in voices.espeak_variants("test")[voice.gender]
    manifest = tmp_path / "test.jsonl"
    write_manifest(records, manifest)
    assert validate_manifest(manifest) == []


@needs_espeak
def test_tts_stage_in_worker_processes_writes_what_one_process_writes_and_resumes(tmp_path):
    train = tuple((f"Birds sing {w} in the morning.", "a") for w in ("early", "late", "softly"))
    sets = {"en": texts.SentenceSet("en", train, ())}
    counts = {("en", "train"): TtsCounts(3)}
    manifests = {}
    for workers in (1, 2):
        config = BuildConfig(tmp_path / f"w{workers}", seed=5, tts=counts, workers=workers)
        build_tts_stage(config, sets, log=lambda _: None)
        manifests[workers] = (config.out / "tts" / "train.jsonl").read_text(encoding="utf-8")
    assert manifests[2] == manifests[1].replace("/w1/", "/w2/")
    assert manifests[1].count('"task": "asr"') == 3

    folder = tmp_path / "w2" / "tts"  # one job lost its progress line: only it is rendered again
    progress = folder / "progress-seed5.jsonl"
    lines = progress.read_text(encoding="utf-8").splitlines()
    progress.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    kept = {line: Path(json.loads(line)["records"][0]["audio"]).stat().st_mtime_ns for line in lines[:2]}
    logged: list[str] = []
    build_tts_stage(BuildConfig(tmp_path / "w2", seed=5, tts=counts, workers=2), sets, log=logged.append)
    assert any("1 rendered now" in message for message in logged)
    assert all(Path(json.loads(line)["records"][0]["audio"]).stat().st_mtime_ns == mtime for line, mtime in kept.items())
    assert (folder / "train.jsonl").read_text(encoding="utf-8") == manifests[2]


@needs_flite
def test_flite_job_renders_an_asr_record(tmp_path):
    voice = voices.draw_flite_voice("train", random.Random(1))
    records = render_job(TtsJob("train", "t-fl-0", "en", "Birds sing early.", "a", voice, 9),
                         tmp_path)
    assert [r.task for r in records] == ["asr"]
    assert records[0].meta["engine"] == "flite" and records[0].duration > 0.5
    manifest = tmp_path / "train.jsonl"
    write_manifest(records, manifest)
    assert validate_manifest(manifest) == []


@needs_festival
def test_festival_job_reads_italian_accents(tmp_path):
    voice = voices.draw_festival_voice("it", "test", random.Random(2))
    records = render_job(TtsJob("test", "t-it-0", "it", "Perché è così?", "b", voice, 4),
                         tmp_path)
    assert records[0].meta["engine"] == "festival" and records[0].duration > 0.5
    assert records[0].meta["voice"] in voices.festival_voices("test", "it")


@needs_festival_en
def test_festival_job_reads_english_with_the_held_out_voice(tmp_path):
    voice = voices.draw_festival_voice("en", "test", random.Random(2))
    assert voice.name == "ked_diphone"
    records = render_job(TtsJob("test", "t-en-0", "en", "The weather turns cold tonight.", "b", voice, 4),
                         tmp_path)
    assert records[0].meta["engine"] == "festival" and records[0].duration > 1.0
    assert records[0].meta["voice"] == "ked_diphone"


def test_language_id_records_keep_the_audio_and_target_its_language(tmp_path: Path) -> None:
    from qwen_audio.data.manifest import validate_manifest
    from qwen_audio.data.world.lid import write_language_id_manifest

    source = tmp_path / "asr.jsonl"
    rows = [
        {"id": "a", "audio": "/x/a.flac", "task": "asr", "duration": 1.0, "audio_language": "es", "text_language": "es", "text": "hola"},
        {"id": "b", "audio": "/x/b.flac", "task": "srwt", "duration": 1.0, "audio_language": "en", "text_language": "en",
         "text": "hi", "words": [{"text": "hi", "start": 0.1, "end": 0.5}]},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "lid.jsonl"
    assert write_language_id_manifest(out, [source]) == 1  # only the asr record
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record == {"id": "a-lid", "audio": "/x/a.flac", "task": "language_id", "duration": 1.0,
                      "audio_language": "es", "text_language": None}
    assert validate_manifest(out) == []


# ---------------------------------------------------------------- real instrument and sound recordings

def test_drum_names_map_to_one_label_and_unknown_names_are_skipped():
    from qwen_audio.data.world.sounds import drum_label

    cases = {"Kick Long": "kick drum", "Snare Rimshot": "rimshot", "Closed HH": "hi-hat", "Pedal Hat": "hi-hat",
             "Ride Bell": "cymbal", "Tom Low": "tom-tom drum", "Hand Clap": "hand clap", "Snare Jazz": "snare drum",
             "Conga Hi": "hand drum", "Laser Zap": None}
    assert {name: drum_label(name) for name in cases} == cases


def test_a_note_teaches_its_family_pitch_and_name_and_its_caption_names_the_instrument():
    from qwen_audio.data.examples import target_text
    from qwen_audio.data.world.sounds import note_records

    records = note_records("n0", Path("/x/n0.flac"), 2.0, 0, 60, 100, {"split": "train"}, random.Random(0))
    targets = {r.task: target_text(r) for r in records}
    assert targets["note_analysis"] == "<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|><|instrument|>keyboard"
    assert targets["instrument"] == "keyboard" and targets["pitch"] == "<|midi_pitch_60|>"
    assert targets["sound_event"] == "keyboard"
    assert targets["caption"] == "a single loud note played on a keyboard instrument"


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file(),
                    reason="fluidsynth with fluid-soundfont-gm and timgm6mb-soundfont is not installed")
@pytest.mark.slow
def test_sound_effects_are_named_and_each_split_hears_its_own_library(tmp_path):
    from qwen_audio.data.world.sounds import SOUND_EFFECTS, TEST_SOUNDFONT, TRAIN_SOUNDFONT, build_sound_effects
    from qwen_audio.eval.suite import names_source

    train = build_sound_effects(tmp_path, TRAIN_SOUNDFONT, "train", 1, 0, log=lambda _: None)
    test = build_sound_effects(tmp_path, TEST_SOUNDFONT, "test", 1, 0, log=lambda _: None)
    assert {r.meta["source"] for r in train} == {"fluid-soundfont-gm"}
    assert {r.meta["source"] for r in test} == {"timgm6mb-soundfont"}
    events = [r for r in train if r.task == "sound_event"]
    assert {r.labels for r in events} >= {SOUND_EFFECTS[126][0], SOUND_EFFECTS[123][0]}  # applause, a bird
    for record in train + test:
        assert names_source(record.text, record.labels)  # the event is its label; the caption says it
        audio, rate = sf.read(record.audio, dtype="float32")
        assert rate == 16_000 and abs(audio).max() >= 0.02  # no silent take is kept
    captions = {r.meta["program"]: r.text for r in train if r.task == "caption"}
    assert captions[126] in SOUND_EFFECTS[126][1]


@pytest.mark.skipif(not Path("/usr/share/hydrogen/data/drumkits").is_dir(), reason="hydrogen-drumkits is not installed")
def test_held_out_drum_kits_are_chosen_by_the_md5_of_their_name():
    from qwen_audio.data.world.sounds import drum_hits, is_test_kit

    hits = drum_hits()
    kits = {kit for kit, *_ in hits}
    held_out = {kit for kit in kits if is_test_kit(kit)}
    assert held_out == {kit for kit in kits if hashlib.md5(kit.encode()).hexdigest()[0] in "cdef"}
    assert held_out and held_out != kits  # both splits have kits
    assert all(path.is_file() for *_, path in hits)


@needs_ffmpeg
def test_other_voices_keep_only_reserved_prompts_with_text(tmp_path):
    """Another speaker's set (8 kHz GSM) is read for evaluation only: reserved names, core texts."""
    docs, out = tmp_path / "doc", tmp_path / "asterisk"
    voice = out / "packages" / "asterisk-prompt-es-xx" / "usr" / "share" / "asterisk" / "sounds" / "es"
    voice.mkdir(parents=True)
    for name in ("siete", "uno", "hoy", "abril"):  # reserved, trained-on name, reserved, reserved without text
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=0.5",
                        "-ar", "8000", "-ac", "1", "-c:a", "gsm", "-f", "gsm", "-y", str(voice / f"{name}.gsm")], check=True)
    text_file = docs / "asterisk-core-sounds-es" / "core-sounds-es.txt.gz"
    text_file.parent.mkdir(parents=True)
    with gzip.open(text_file, "wt", encoding="utf-8") as f:
        f.write("siete: siete\nuno: uno\nhoy: [un tono] hoy\n")
    assert [asterisk.prompt_split(n) for n in ("siete", "uno", "hoy", "abril")] == ["validation", "train", "validation", "validation"]
    records = asterisk.build_other_voices(out, {"es": "asterisk-prompt-es-xx"}, log=lambda m: None, doc_root=docs)
    assert [(r.meta["prompt"], r.text, r.meta["split"]) for r in records] == [("siete", "siete", "independent")]
    info = sf.info(records[0].audio)
    assert info.samplerate == 16_000 and records[0].duration == pytest.approx(0.5, abs=0.05)


@needs_ffmpeg
def test_tuxpaint_voices_pair_each_read_description_with_its_text_once(tmp_path):
    """Tux Paint's read stamp descriptions (evaluation only): each Spanish/French recording with its stamp's
    text in that language; no English (its voice says another text), no text with digits, no recording twice."""
    stamps = tmp_path / "package" / tuxpaint.STAMPS / "animals"
    stamps.mkdir(parents=True)
    (stamps / "frog.txt").write_text("A frog.\nes.utf8=Una rana.\nfr.utf8=Une grenouille.\n", encoding="utf-8")
    (stamps / "frog-1.txt").write_text("A frog.\nes.utf8=Una rana.\n", encoding="utf-8")
    (stamps / "coin.txt").write_text("A coin.\nes.utf8=Una moneda de 1 dólar.\n", encoding="utf-8")
    recordings = {"frog_desc_es.ogg": 300, "frog-1_desc_es.ogg": 300, "frog_desc_fr.ogg": 400, "frog_desc.ogg": 500,
                  "coin_desc_es.ogg": 600, "toad_desc_es.ogg": 700}  # a copy, French, English, digits, no text file
    for name, pitch in recordings.items():
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", f"sine=frequency={pitch}:duration=0.5",
                        "-ar", "22050", "-ac", "2", "-c:a", "libvorbis", "-fflags", "+bitexact", "-flags:a", "+bitexact",
                        "-y", str(stamps / name)], check=True)
    (stamps / "frog-1_desc_es.ogg").write_bytes((stamps / "frog_desc_es.ogg").read_bytes())

    records = tuxpaint.build_tuxpaint_voices(tmp_path / "tuxpaint", log=lambda m: None, package_root=tmp_path / "package")

    assert [(r.audio_language, r.text, r.meta["stamp"], r.meta["split"]) for r in records] == [
        ("es", "Una rana.", "animals/frog-1_desc_es", "independent"), ("fr", "Une grenouille.", "animals/frog_desc_fr", "independent")]
    info = sf.info(records[0].audio)
    assert (info.samplerate, info.channels) == (16_000, 1) and records[0].duration == pytest.approx(0.5, abs=0.05)
    again = tuxpaint.build_tuxpaint_voices(tmp_path / "tuxpaint", log=lambda m: None, package_root=tmp_path / "package")
    assert again == records  # decoded once, read back the same


def _sounds_manifest(folder: Path, split: str, pitch: float) -> Path:
    """A split's sounds manifest: one tone of ``pitch`` Hz, and a speech record that must not be read."""
    import numpy as np

    from qwen_audio.data.manifest import ManifestRecord

    tone = folder / f"{split}-tone.flac"
    t = np.arange(8000) / 16000
    sf.write(str(tone), (0.5 * np.sin(2 * np.pi * pitch * t)).astype("float32"), 16000)
    speech = folder / f"{split}-speech.flac"
    sf.write(str(speech), np.zeros(8000, dtype="float32"), 16000)
    path = folder / f"{split}.jsonl"
    write_manifest([
        ManifestRecord(id=f"{split}-tone-event", audio=str(tone), task="sound_event", text="bell", labels=("bell",),
                       audio_language="unknown", text_language="en", duration=0.5),
        ManifestRecord(id=f"{split}-speech-event", audio=str(speech), task="sound_event", text="speech",
                       labels=("speech",), audio_language="unknown", text_language="en", duration=0.5),
    ], path)
    return path


def test_no_speech_clips_teach_the_unknown_language_and_an_empty_transcript(tmp_path):
    import numpy as np

    from qwen_audio.data.examples import record_example
    from qwen_audio.data.world import nospeech

    sounds_dir = tmp_path / "sounds"
    sounds_dir.mkdir()
    _sounds_manifest(sounds_dir, "train", 440.0)
    _sounds_manifest(sounds_dir, "test", 1250.0)
    assert nospeech.sound_files(sounds_dir / "train.jsonl") == [str(sounds_dir / "train-tone.flac")]  # no speech

    built = nospeech.build_nospeech(tmp_path / "out", sounds_dir, seed=3, counts={"train": 30, "test": 8}, log=lambda m: None)
    assert {r.meta["kind"] for r in built["train"]} == set(nospeech.KINDS)
    for split, records in built.items():
        assert len(records) == 2 * {"train": 30, "test": 8}[split]
        for record in records:
            example = record_example(record, tmp_path)
            target = example.pieces[-1][0]
            if record.task == "language_id":
                assert target == "<|unknown|><|endoftext|>"
            else:
                assert record.task == "asr" and target == "<|endoftext|>"
                assert record.audio_language in nospeech.SPOKEN_LANGUAGES
            audio, rate = sf.read(record.audio, dtype="float32")
            assert rate == 16000 and audio.size / rate == pytest.approx(record.duration, abs=1e-3)
            assert np.abs(audio).max() <= 1.0 and (record.meta["kind"] == "quiet" or np.abs(audio).max() > 1e-3)
            assert f"/{split}/" in record.audio
    # A split's sounds are its own: the test clips made of sounds carry the test tone, never the training one.
    spectrum = lambda path: np.abs(np.fft.rfft(sf.read(path, dtype="float32")[0]))  # noqa: E731
    made_of_sounds = [r for r in built["test"] if r.meta["kind"] in ("single", "sequence") and r.task == "asr"]
    assert made_of_sounds
    for record in made_of_sounds:
        power = spectrum(record.audio)
        hz = np.fft.rfftfreq(2 * (power.size - 1), 1 / 16000)
        assert power[np.abs(hz - 1250) < 5].max() > 10 * power[np.abs(hz - 440) < 5].max()
    # Seeded: a rebuild writes the same records and keeps the files.
    again = nospeech.build_nospeech(tmp_path / "out", sounds_dir, seed=3, counts={"train": 30, "test": 8}, log=lambda m: None)
    assert again == built
