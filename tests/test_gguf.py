"""checkpoints.gguf: a GGUF Llama written by gguf.GGUFWriter (as llama.cpp converts) read into Qwen2 names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from qwen_audio.checkpoints import TensorSource, load_qwen_llm
from qwen_audio.checkpoints.gguf import GgufModel, unpermute_rotary_rows
from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.errors import CheckpointError
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.tokenizer import QwenAudioTokenizer, write_tiktoken_ranks
from tests.base_fixtures import BPE_TEXTS, CONTROL_TOKENS, llama_cpp_permute, tiny_llama, train_tiny_bpe, write_llama_gguf

pytest.importorskip("gguf")

# Texts the vocabulary was not trained on, with what differs between pre-tokenisers: runs of
# spaces before digits, digit runs, contractions, tabs/newlines, accents and CJK.
UNSEEN_TEXTS = [
    "The capital of France is Paris.",
    "x    1 and  2\n  3",
    "total:   42, 2024  items\t\t7",
    "It's we'll they've I'm you're she'd",
    "def f():\n    return 12345\n\n",
    "naïve café 你好 world  ",
    "   leading and trailing   ",
]


@pytest.fixture(scope="module")
def bpe():  # noqa: ANN201
    return train_tiny_bpe()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def llama_and_gguf(request: pytest.FixtureRequest, bpe, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    llama = tiny_llama(bpe.get_vocab_size(), tied=request.param)
    path = write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", llama, bpe)
    return llama, path


def qwen_config_for(sizes, extra_rows: int = 8) -> QwenAudioConfig:  # noqa: ANN001
    """Our model sized as the GGUF says, with a few rows past its vocabulary (as bases.py appends)."""
    n = sizes.vocab_size
    return QwenAudioConfig(
        vocab_size=n + extra_rows, hidden_size=sizes.hidden_size, intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers, num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads, rms_norm_eps=sizes.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": sizes.rope_theta},
        max_position_embeddings=sizes.context_length, tie_word_embeddings=sizes.tied_embeddings,
        audio_config={"n_state": 16, "n_head": 2, "n_layer": 1, "n_ctx": 8, "output_dim": sizes.hidden_size},
        endoftext_id=n, im_start_id=n + 1, im_end_id=n + 2, audio_pad_id=n + 3, audio_start_id=n + 4,
        use_dynamic_ntk=False, use_logn_attn=False,
    )


# --------------------------------------------------------------------------- tensors


def test_unpermute_inverts_llama_cpp_permutation() -> None:
    weight = np.random.RandomState(0).randn(4 * 8, 6).astype(np.float32)  # 4 heads of 8 rows
    permuted = llama_cpp_permute(weight, 4)
    assert not np.array_equal(permuted, weight)
    assert torch.equal(unpermute_rotary_rows(torch.from_numpy(permuted), 4), torch.from_numpy(weight))


def test_sizes_names_and_zero_biases(llama_and_gguf) -> None:  # noqa: ANN001
    llama, path = llama_and_gguf
    config = llama.config
    model = GgufModel(path)
    sizes = model.sizes
    assert (sizes.vocab_size, sizes.hidden_size, sizes.intermediate_size) == (config.vocab_size, 64, 128)
    assert (sizes.num_hidden_layers, sizes.num_attention_heads, sizes.num_key_value_heads) == (2, 4, 2)
    assert sizes.rope_theta == 50000.0 and sizes.rms_norm_eps == pytest.approx(1e-5)
    assert sizes.tied_embeddings == config.tie_word_embeddings
    with TensorSource(path) as source:
        reference = llama.state_dict()
        expected = {n for n in reference if not (config.tie_word_embeddings and n == "lm_head.weight")}
        biases = {f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in "qkv"}
        assert source.keys() == expected | biases
        for name in expected:  # q/k un-permuted back to transformers' rows, everything exact
            assert source.shape(name) == tuple(reference[name].shape), name
            assert torch.equal(source.get(name), reference[name]), name
        assert torch.equal(source.get("model.layers.1.self_attn.k_proj.bias"), torch.zeros(2 * 16))
        assert source.shape("model.layers.0.self_attn.q_proj.bias") == (64,)


def test_decoder_logits_equal_transformers_llama(llama_and_gguf) -> None:  # noqa: ANN001
    llama, path = llama_and_gguf
    config = qwen_config_for(GgufModel(path).sizes)
    torch.manual_seed(0)
    model = QwenAudioForCausalLM(config).eval()
    new_rows = model.get_input_embeddings().weight[config.endoftext_id:].detach().clone()
    report = load_qwen_llm(model, path, resize_vocab=True)
    assert report is not None
    ids = torch.randint(0, llama.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        expected = llama(input_ids=ids).logits
    n = llama.config.vocab_size
    torch.testing.assert_close(ours[..., :n], expected, atol=1e-5, rtol=1e-5)
    # the rows past the GGUF vocabulary keep their initial values
    assert torch.equal(model.get_input_embeddings().weight[config.endoftext_id:], new_rows)


# --------------------------------------------------------------------------- vocabulary


def test_tiktoken_ranks_encode_like_the_bpe_they_came_from(bpe, llama_and_gguf) -> None:  # noqa: ANN001
    model = GgufModel(llama_and_gguf[1])
    encoding = tiktoken.Encoding("gguf", pat_str=model.pre_tokenizer_pattern(), mergeable_ranks=model.tiktoken_ranks(), special_tokens={})
    for text in BPE_TEXTS + UNSEEN_TEXTS:
        assert encoding.encode(text) == bpe.encode(text).ids, repr(text)


def test_missing_bytes_are_appended_after_the_vocabulary(bpe, llama_and_gguf) -> None:  # noqa: ANN001
    model = GgufModel(llama_and_gguf[1])
    tokens = model.token_bytes()
    ranks = model.tiktoken_ranks()
    assert [ranks[t] for t in tokens] == list(range(len(tokens)))  # every GGUF id kept
    assert all(bytes([b]) in ranks for b in range(256))
    appended = sorted(r for r in ranks.values() if r >= len(tokens))
    assert appended == list(range(len(tokens), len(ranks))) and len(appended) > 0
    assert b"\x01" not in tokens and ranks[b"\x01"] >= len(tokens)
    assert model.control_tokens() == {t: bpe.token_to_id(t) for t in CONTROL_TOKENS}
    assert tokens[bpe.token_to_id("<|im_start|>")] == b"<|im_start|>"


def test_tokenizer_keeps_the_gguf_pattern_across_save_and_load(bpe, llama_and_gguf, tmp_path: Path) -> None:  # noqa: ANN001
    model = GgufModel(llama_and_gguf[1])
    vocab_file = write_tiktoken_ranks(model.tiktoken_ranks(), tmp_path / "qwen.tiktoken")
    tokenizer = QwenAudioTokenizer(vocab_file, pat_str=model.pre_tokenizer_pattern())
    text = "total:   42 items"
    assert tokenizer.encode_plain(text) == bpe.encode(text).ids
    odd = "bell\x07 ☃ 12"  # bytes the vocabulary lacks still round-trip
    assert tokenizer.decode(tokenizer.encode_plain(odd)) == odd
    assert tokenizer.eod_id == len(model.tiktoken_ranks())  # special tokens after all ranks
    tokenizer.save_pretrained(tmp_path / "saved")
    loaded = QwenAudioTokenizer.from_pretrained(tmp_path / "saved")
    assert loaded.pat_str == model.pre_tokenizer_pattern()
    assert loaded.encode_plain(text) == tokenizer.encode_plain(text)
    plain = QwenAudioTokenizer(vocab_file)  # without pat_str: Qwen's regex, not saved
    assert plain.pat_str != model.pre_tokenizer_pattern()


# --------------------------------------------------------------------------- refusals


def _write_minimal(path: Path, arch: str = "llama", tokenizer_model: str = "gpt2", pre: str = "smollm",
                   tensor: str = "token_embd.weight") -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (("block_count", 1), ("context_length", 16), ("embedding_length", 4), ("feed_forward_length", 8),
                       ("attention.head_count", 1), ("attention.head_count_kv", 1)):
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(["a", "b"])
    writer.add_token_types([1, 1])
    writer.add_tensor(tensor, np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    assert GgufModel(_write_minimal(tmp_path / "ok.gguf")).sizes.vocab_size == 2
    with pytest.raises(CheckpointError, match="'gpt2' model; only 'llama'"):
        GgufModel(_write_minimal(tmp_path / "gpt2.gguf", arch="gpt2"))
    with pytest.raises(CheckpointError, match="unexpected GGUF tensor 'blk.0.attn_qkv.weight'"):
        GgufModel(_write_minimal(tmp_path / "fused.gguf", tensor="blk.0.attn_qkv.weight"))
    with pytest.raises(CheckpointError, match=r"pre-tokeniser 'llama-bpe' is not known here; known: \['smollm'\]"):
        GgufModel(_write_minimal(tmp_path / "pre.gguf", pre="llama-bpe")).pre_tokenizer_pattern()
    with pytest.raises(CheckpointError, match="only byte-level BPE"):
        GgufModel(_write_minimal(tmp_path / "spm.gguf", tokenizer_model="llama")).token_bytes()
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        GgufModel(garbage)
