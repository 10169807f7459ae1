"""Tiny pretrained bases in the registry's formats, written in the test by the formats' own tools.

* a CTranslate2 Whisper ``model.bin``: a random transformers ``WhisperForConditionalGeneration``
  put into ``ctranslate2.specs.WhisperSpec`` by CTranslate2's own converter (``WhisperLoader``), so
  the q/k/v stacking and the zero key bias are CTranslate2's, not ours;
* a GGUF Llama: ``gguf.GGUFWriter`` with F32 tensors, q/k rows permuted as llama.cpp's
  ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) does, and a byte-level BPE vocabulary trained
  by ``tokenizers`` (tokens, token types, merges, pre-tokeniser "smollm").

Each writer returns the reference the reader is checked against (the transformers model, the
``tokenizers`` tokenizer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

WHISPER_MELS, WHISPER_CTX = 80, 8  # CTranslate2 wants exactly 2 × positions mel frames: 16
CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _perturb(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Non-trivial norms and biases, so a mix-up cannot hide behind ones and zeros."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(s in name for s in skip):
                continue
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)


# --------------------------------------------------------------------------- CTranslate2 Whisper


def tiny_hf_whisper(seed: int = 0):  # noqa: ANN201
    """A random 2-layer Whisper (d_model 64, 4 heads, 80 mels, 8 encoder positions)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=60, num_mel_bins=WHISPER_MELS, d_model=64, encoder_layers=2, encoder_attention_heads=4,
        decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256,
        max_source_positions=WHISPER_CTX, max_target_positions=16, init_std=0.1,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    _perturb(model)
    return model


def write_ct2_whisper(directory: Path, hf_model, quantization: str = "float32") -> Path:  # noqa: ANN001
    """``hf_model`` as a CTranslate2 model directory (``model.bin`` + vocabulary + config); returns model.bin."""
    from ctranslate2.converters.transformers import WhisperLoader

    spec = WhisperLoader().get_model_spec(hf_model)
    spec.register_vocabulary([f"<t{i}>" for i in range(hf_model.config.vocab_size)])
    spec.config.suppress_ids, spec.config.suppress_ids_begin, spec.config.lang_ids = [], [], []
    spec.config.alignment_heads = [(0, 0)]
    spec.validate()
    spec.optimize(quantization=quantization)
    directory.mkdir(parents=True, exist_ok=True)
    spec.save(str(directory))
    return directory / "model.bin"


def ct2_encode(directory: Path, mel: np.ndarray) -> np.ndarray:
    """CTranslate2's own Whisper encoder output (after its final layer norm) for [batch, 80, 16] mels."""
    import ctranslate2

    model = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="float32", intra_threads=1)
    return np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))))


# --------------------------------------------------------------------------- GGUF Llama

BPE_TEXTS = [
    "The capital of France is Paris. It's 2024, and we'll see: 3 cats, 12 dogs!",
    "def total(x):\n    return x  +  42\n\nprint(total(7))  # 49\n",
    "Hello   world,  again:   123 and 4567.  Numbers  99 cafés, naïve, 你好世界.",
    "I'm sure they've said you're right; she'd go, he'll stay.\tTabs\tand\nnewlines\n\n",
]


def train_tiny_bpe(texts: list[str] = BPE_TEXTS, vocab_size: int = 400):  # noqa: ANN201
    """A byte-level BPE like SmolLM2's (digits split one by one, GPT-2's regex, no prefix space).

    The initial alphabet is only the bytes the texts contain, as a real vocabulary trained on text
    lacks some bytes; the control tokens come first, as in SmolLM2's vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=list(CONTROL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(texts * 3, trainer)
    return tokenizer


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp ``convert_hf_to_gguf.py`` ``LlamaModel.permute``: rotate-halves rows → interleaved pairs."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def tiny_llama(vocab_size: int, *, tied: bool, seed: int = 0):  # noqa: ANN201
    """A random transformers Llama (64 wide, 4 query heads over 2 key/value heads, 2 layers)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, initializer_range=0.2,
        attention_bias=False, mlp_bias=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    _perturb(model)
    return model


def write_llama_gguf(path: Path, llama, bpe_tokenizer, pre: str = "smollm") -> Path:  # noqa: ANN001
    """``llama`` (a transformers LlamaForCausalLM) and ``bpe_tokenizer``'s vocabulary as llama.cpp writes a GGUF."""
    import json

    import gguf

    config = llama.config
    vocab = bpe_tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    assert len(tokens) == config.vocab_size
    merges = json.loads(bpe_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = [gguf.TokenType.CONTROL if t in CONTROL_TOKENS else gguf.TokenType.NORMAL for t in tokens]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)

    state = {k: v.detach().float().numpy() for k, v in llama.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not config.tie_word_embeddings:
        writer.add_tensor("output.weight", state["lm_head.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_q.weight", llama_cpp_permute(state[p + "self_attn.q_proj.weight"], config.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", llama_cpp_permute(state[p + "self_attn.k_proj.weight"], config.num_key_value_heads))
        writer.add_tensor(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
