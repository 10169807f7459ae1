"""Generation throughput: qwen-audio against plain transformers generate on the same weights, same run.

The peer is transformers' ``Qwen2ForCausalLM.generate`` holding our decoder's weights and fed the
same prompt embeddings (audio already spliced, so it does no encoder work); ours is
``QwenAudioForCausalLM.fast_generate`` from token ids + mels (the encoder runs inside the timing),
also with ``fold=False`` (its loop over the decoder's own modules, without ``generation.FoldedWeights``),
with its folded matrices input-major instead of packed for oneDNN (``generation.folded.PACK``: what
it did before packing), and, for reference, our ``generate`` (transformers' loop over our model). Greedy, a fixed number of
new tokens (no early stop), batches of 1, 8, … rows (left-padded, a fixed mix of 8 request shapes). Prints new tokens per
second, ratios against the peer, and whether every system produced the same tokens.

    python benchmarks/generate.py [--sizes tiny default small] [--new-tokens 64] [--repeats 3] [--threads 1]

``default`` is the bundled default model (its trained weights, fp32); ``tiny``/``small`` are presets
with random weights (``small`` has the released 155,947-token vocabulary).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_audio.audio import audio_span
from qwen_audio.configuration import preset_config
from qwen_audio.generation import KVBackends, folded
from qwen_audio.model import QwenAudioForCausalLM


def interleaved(systems: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, tuple[float, torch.Tensor]]:
    """Median seconds and last output of each system, run round-robin so machine load hits all alike."""
    outputs = {name: fn() for name, fn in systems.items()}  # warm-up: allocator, kernels
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, fn in systems.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), outputs[name]) for name in systems}


def peer_of(model: QwenAudioForCausalLM) -> Qwen2ForCausalLM:
    c = model.config
    peer = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
            rope_parameters=dict(c.rope_parameters),
        )
    ).eval()
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("model.", "lm_head."))}
    peer.load_state_dict(state, strict=False)
    return peer


_INPUT_MAJOR = KVBackends()


def input_major(model: QwenAudioForCausalLM, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``run`` with the folded matrices input-major (MKL's products), in a cache of their own."""
    packed, model.kv_backends, folded.PACK = model.kv_backends, _INPUT_MAJOR, False
    try:
        return run()
    finally:
        model.kv_backends, folded.PACK = packed, torch.backends.mkldnn.is_available()


def make_batch(model: QwenAudioForCausalLM, batch: int) -> dict[str, torch.Tensor]:
    c = model.config
    rows, mel_lengths = [], []
    for i in range(batch):
        # Every batch size serves the same mix of requests (8 shapes, cycled): 1 s … 2.75 s of audio,
        # 3 … 17 text tokens. Rows that grew with i made batch 32 carry 10× batch 8's prompt work for
        # 4× its new tokens, so tok/s fell with the batch for a reason no server sees.
        j = i % 8
        span = audio_span(16_000 + 4_000 * j)
        text = [100 + i] * (3 + 2 * j)
        rows.append(text + [c.audio_start_id] + [c.audio_pad_id] * (span.span_tokens - 2) + [c.audio_end_id] + [7, 8, 9])
        mel_lengths.append(span.mel_len)
    width = max(map(len, rows))
    ids = torch.full((batch, width), c.endoftext_id)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    torch.manual_seed(0)
    return dict(input_ids=ids, attention_mask=mask, audio_features=torch.randn(batch, 80, 3000),
                audio_lengths=torch.tensor(mel_lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "default", "small"], choices=["tiny", "default", "small"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.new_tokens
    greedy = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)
    for size in args.sizes:
        torch.manual_seed(0)
        if size == "default":
            from qwen_audio.api import QwenAudio

            model = QwenAudio.from_pretrained().model  # assembles the pinned bases + shipped delta
        else:
            model = QwenAudioForCausalLM(preset_config(size)).eval()
        peer = peer_of(model)
        print(f"size={size} params={sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
              f"vocab={model.config.vocab_size} threads={args.threads} new_tokens={n} repeats={args.repeats} (median)")
        for batch in args.batches:
            inputs = make_batch(model, batch)
            with torch.no_grad():
                embeds = model.embed_inputs(inputs["input_ids"], inputs["audio_features"], inputs["audio_lengths"])
            width = inputs["input_ids"].shape[1]
            results = interleaved({
                "input_major": lambda: input_major(model, lambda: model.fast_generate(**inputs, max_new_tokens=n, eos_token_id=[])),
                "peer": lambda: peer.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                              eos_token_id=None, pad_token_id=0, **greedy),
                "fast": lambda: model.fast_generate(**inputs, max_new_tokens=n, eos_token_id=[]),
                "unfolded": lambda: model.fast_generate(**inputs, max_new_tokens=n, eos_token_id=[], fold=False),
                "ours": lambda: model.generate(**inputs, eos_token_id=None, **greedy),
            }, args.repeats)
            t_peer, out_peer = results["peer"]
            new_peer = out_peer[:, -n:]  # generate with inputs_embeds returns only the new tokens
            same = all(torch.equal(new_peer, out[:, width:]) for name, (_, out) in results.items() if name != "peer")
            rate = lambda t: batch * n / t  # noqa: E731
            labels = {"fast": "fast_generate", "input_major": "fast_generate(input-major)",
                      "unfolded": "fast_generate(fold=False)", "ours": "generate"}
            figures = " | ".join(f"qwen-audio {label} {rate(results[name][0]):8.1f} tok/s ({t_peer / results[name][0]:.2f}x)"
                                 for name, label in labels.items())
            print(f"  batch {batch}: transformers Qwen2 generate {rate(t_peer):8.1f} tok/s | {figures} | same tokens: {same}")


if __name__ == "__main__":
    main()
