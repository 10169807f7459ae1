"""``qwen-audio serve --engine vllm``: this package's server and task code in front of a vLLM engine.

:class:`VllmQwenAudio` is :class:`~qwen_audio.api.QwenAudio` (the same prompts, language detection,
long-audio windows and SRWT stitching, ChatML encoding, streamed reply pieces: the ``Engine``
protocol the server calls) whose decoding runs on vLLM instead of this package's generation loop.
Only two steps are vLLM's: :meth:`~VllmQwenAudio.generate` (token ids with their audios in, new
tokens out) and the language tags' scores (one step, whose log-probabilities ``QwenAudio`` reads as it reads
its own: the likeliest spoken language, or no speech). Prompts go in
as token ids with their audio spans already expanded, which the plugin's processor keeps as they
are, so vLLM decodes from exactly the ids ``QwenAudio`` would; each is checked for one audio per span
here, since vLLM asks the plugin's processor only about prompts that come with audio.
Word times are placed as ``QwenAudio`` places them: by a model's CTC aligner (``infer.alignment``)
where its folder ships one (the bundled model: its small encoder and embeddings are then loaded in
this process too), else by the SRWT decode held to the transcript (``generation.TimedText``, applied
in vLLM by ``qwen_audio.vllm.timed``).

The engine is ``vllm.LLM``, held in this process (its engine core, with the model, is vLLM's own
child process); its arguments are ``vllm serve``'s engine flags (``--tensor-parallel-size``,
``--dtype``, ``--distributed-executor-backend ray``, …). This process keeps only the tokenizer and
the config. Requests of one server batch decode together in vLLM's continuous batching; a batch's
replies stream as vLLM steps. Beam search is not offered (vLLM's differs from ``generate``'s).

Runs in vLLM's environment (``scripts/setup-vllm-env.sh``); nothing outside this package imports it.
"""

from __future__ import annotations

import itertools
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer
from vllm import LLM, EngineArgs, SamplingParams
from vllm.utils.argparse_utils import FlexibleArgumentParser

from qwen_audio.api import DEFAULT_MODEL, LOOP_GUARD, Generated, QwenAudio, default_model_path
from qwen_audio.checkpoints.bases import assemble, is_delta_model
from qwen_audio.checkpoints.loading import load_model
from qwen_audio.checkpoints.official import official_config
from qwen_audio.configuration import QwenAudioConfig, is_official_checkpoint
from qwen_audio.errors import CheckpointError, ConfigError
from qwen_audio.formats.tags import Task, build_prompt
from qwen_audio.generation import TimedText
from qwen_audio.infer.alignment import ALIGNER_FILE, CtcAligner
from qwen_audio.infer.engine import GenerationOptions
from qwen_audio.tokenizer import EncodedPrompt, QwenAudioTokenizer
from qwen_audio.vllm.processing import check_span_count
from qwen_audio.vllm.timed import FQCN as TIMED_TEXT, timed_extra_args

NO_BEAMS = "beam search (num_beams > 1) is not offered with the vLLM engine; decode greedily or sample"


@dataclass
class ModelCard:
    """What ``QwenAudio``'s task code reads from its model (the config, the stop tokens), without the
    network itself: vLLM holds that."""

    config: QwenAudioConfig
    generation_config: GenerationConfig

    def eval(self) -> ModelCard:  # QwenAudio puts its model in eval mode; nothing runs here
        return self


def engine_kwargs(location: Path, config: QwenAudioConfig, engine_args: Sequence[str]) -> dict[str, Any]:
    """``vllm.LLM``'s arguments from ``vllm serve``-style engine flags; the context defaults to ``seq_length``
    (the plugin refuses more where the released model would switch to NTK/log-n attention)."""
    parser = FlexibleArgumentParser(prog="qwen-audio serve --engine vllm --vllm-args")
    EngineArgs.add_cli_args(parser)
    try:
        values = vars(parser.parse_args(["--model", str(location), *engine_args]))
    except SystemExit as error:  # argparse has printed what is wrong
        raise ConfigError(f"--vllm-args {shlex.join(engine_args)!r}: not vLLM engine arguments (see above)") from error
    if values.get("max_model_len") is None:
        values["max_model_len"] = config.seq_length
    values["logits_processors"] = [*(values.get("logits_processors") or []), TIMED_TEXT]  # word times
    return values


class VllmQwenAudio(QwenAudio):
    """``QwenAudio``'s tasks and ``Engine`` protocol, decoded by a ``vllm.LLM``."""

    def __init__(self, llm: LLM, tokenizer: QwenAudioTokenizer, config: QwenAudioConfig, *, model_id: str,
                 aligner: CtcAligner | None = None) -> None:
        super().__init__(ModelCard(config, GenerationConfig(eos_token_id=list(config.eos_token_ids))), tokenizer,
                         model_id=model_id, aligner=aligner)
        self.llm = llm
        self._lock = threading.Lock()  # one decoding loop at a time drives the engine
        self._request_ids = itertools.count()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = DEFAULT_MODEL, *, engine_args: Sequence[str] | str = (),
                        **_: Any) -> VllmQwenAudio:
        """A folder ``QwenAudio.from_pretrained`` opens (the bundled model, ours, official, a shipped delta)."""
        location = default_model_path() if path in (None, DEFAULT_MODEL) else Path(path)
        if not (location / "config.json").is_file():
            raise CheckpointError(f"no model at {location}: expected a directory with config.json")
        aligner = None
        if (location / ALIGNER_FILE).is_file():  # word times as QwenAudio places them: the encoder runs here too
            aligner = CtcAligner.load(location, load_model(location, dtype=torch.float32)[0].eval())
        if is_delta_model(location):  # vLLM reads the joined folder
            location = assemble(location)
        config = official_config(location) if is_official_checkpoint(location) else QwenAudioConfig.from_pretrained(location)
        tokenizer = QwenAudioTokenizer.from_pretrained(str(location))
        args = shlex.split(engine_args) if isinstance(engine_args, str) else list(engine_args)
        llm = LLM(**engine_kwargs(location, config, args))
        model_id = "qwen-audio-default" if path in (None, DEFAULT_MODEL) else location.name
        return cls(llm, tokenizer, config, model_id=model_id, aligner=aligner)

    # ------------------------------------------------------------------ the two steps vLLM runs

    @property
    def speech_beams(self) -> int:
        """1: beams are not offered on vLLM (``generate`` refuses them), so speech decodes greedily,
        word times still aligned by the CTC where the model ships one."""
        return 1

    def generate(
        self, prompts: Sequence[str | EncodedPrompt], audios: Sequence[Sequence[np.ndarray]],
        options: GenerationOptions = GenerationOptions(), streamer: BaseStreamer | None = None,
        *, collapse_loops: bool = True, constraints: Sequence[TimedText | None] | None = None,
    ) -> list[Generated]:
        """``QwenAudio.generate`` on vLLM: the same prompt ids, greedy or sampled (``seed`` is vLLM's own);
        a row that falls into a loop ends there (its request aborted), as ``LoopGuard`` ends it in ours.
        A constrained row is held to its text by ``qwen_audio.vllm.timed`` and left alone by the guard."""
        if options.num_beams > 1:
            raise ConfigError(NO_BEAMS)
        if constraints is not None and options.temperature > 0:
            raise ValueError("constrained rows decode greedily (num_beams=1, temperature=0)")
        encoded = [p if isinstance(p, EncodedPrompt) else self.tokenizer.encode_prompt(p, [w.size for w in waves])
                   for p, waves in zip(prompts, audios)]
        constraints = list(constraints) if constraints is not None else [None] * len(encoded)
        params = [SamplingParams(max_tokens=options.max_new_tokens, temperature=options.temperature, top_p=options.top_p,
                                 seed=options.seed, stop_token_ids=list(self.stop_ids), detokenize=False,
                                 extra_args=None if c is None else timed_extra_args(c)) for c in constraints]
        outputs = self._run([self._request(p.ids, w) for p, w in zip(encoded, audios)], params, streamer,
                            guarded=[c is None for c in constraints])
        return [self._generated(out, len(p.ids), collapse_loops, c is None)
                for p, out, c in zip(encoded, outputs, constraints)]

    def _tag_scores(self, waves: Sequence[np.ndarray]) -> list[tuple[dict[str, float], float]]:
        """``QwenAudio._tag_scores`` from one vLLM step over all the waves' language-ID prompts: the log-probabilities
        vLLM returns for exactly the nine tags (``logprob_token_ids``; its default "raw" log-probabilities, over the
        whole vocabulary), normalised as ours are, so ``QwenAudio._detect``'s verdicts, no speech included, hold here."""
        prompt = build_prompt(Task.LANGUAGE_ID, audio="audio")
        ids = [self.tokenizer.encode_prompt(prompt, [w.size]).ids for w in waves]
        params = SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=self.tag_ids, detokenize=False)
        outputs = self._run([self._request(i, [w]) for i, w in zip(ids, waves)], params)
        return [self._read_tags(torch.tensor([out.logprobs[0][t].logprob for t in self.tag_ids])) for out in outputs]

    def _ctc_rescored(self, prompts: Sequence[str], pieces: Sequence[np.ndarray],
                      options: GenerationOptions) -> list[tuple[str, float] | None]:
        """Beams asked of speech on a model with an aligner: refused as ``generate`` refuses them."""
        raise ConfigError(NO_BEAMS)

    # ------------------------------------------------------------------ the engine loop

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(self.model.generation_config.eos_token_id)

    def _request(self, ids: Sequence[int], waves: Sequence[np.ndarray]) -> dict[str, Any]:
        # Checked here, not only by the plugin's processor: vLLM calls that only for prompts with audio,
        # so spans without any audio would reach the decoder as plain token embeddings.
        check_span_count(ids, len(waves), self.model.config)
        request: dict[str, Any] = {"prompt_token_ids": list(ids)}
        if waves:
            request["multi_modal_data"] = {"audio": [np.asarray(w, dtype=np.float32) for w in waves]}
        return request

    def _run(self, requests: list[dict[str, Any]], params: SamplingParams | Sequence[SamplingParams],
             streamer: BaseStreamer | None = None, guarded: Sequence[bool] | None = None) -> list[Any]:
        """Each request's final completion; ``streamer`` sees the rows' tokens step by step, as ``generate``'s does.
        ``params`` are shared or one per request; ``guarded[i]`` False: the loop guard leaves row i alone.

        vLLM steps rows independently (a long prompt may still prefill while others decode), so the
        streamer's steps are emitted once every row still running has its next token.
        """
        engine = self.llm.llm_engine
        with self._lock:
            rows: dict[str, int] = {}
            try:
                each = [params] * len(requests) if isinstance(params, SamplingParams) else list(params)
                for row, request in enumerate(requests):  # outputs carry the id given here (vLLM adds a suffix inside)
                    request_id = f"qwen-audio-{next(self._request_ids)}"
                    engine.add_request(request_id, request, each[row])
                    rows[request_id] = row
            except BaseException:
                engine.abort_request(list(rows))
                raise
            final: list[Any] = [None] * len(requests)
            tokens: list[list[int]] = [[] for _ in requests]
            if streamer is not None:
                streamer.put(torch.zeros(len(requests), 1, dtype=torch.long))  # the prompts come first
            emitted = 0
            try:
                while any(out is None for out in final):
                    for output in engine.step():
                        if output.request_id not in rows:
                            continue
                        row = rows[output.request_id]
                        if final[row] is not None:  # ended by the loop guard
                            continue
                        ids = list(output.outputs[0].token_ids)
                        looped = (LOOP_GUARD.end(ids, self.stop_ids, checked=len(tokens[row]))
                                  if guarded is None or guarded[row] else None)
                        tokens[row] = ids if looped is None else ids[:looped]
                        if looped is not None:
                            final[row] = SimpleNamespace(token_ids=tokens[row], finish_reason="length")
                            if not output.finished:
                                engine.abort_request([output.request_id])
                        elif output.finished:
                            final[row] = output.outputs[0]
                    if streamer is not None:
                        emitted = self._stream_steps(streamer, tokens, [f is not None for f in final], emitted)
            except BaseException:  # the streamer's client left, or the engine failed: stop this batch's rows
                engine.abort_request([rid for rid, row in rows.items() if final[row] is None])
                raise
            if streamer is not None:
                streamer.end()
            return final

    def _stream_steps(self, streamer: BaseStreamer, tokens: list[list[int]], finished: list[bool], emitted: int) -> int:
        """Hand the streamer every step all rows have reached (a finished row gives a stop token)."""
        stop = self.stop_ids[0]
        while all(len(t) > emitted or done for t, done in zip(tokens, finished)) and any(len(t) > emitted for t in tokens):
            streamer.put(torch.tensor([t[emitted] if len(t) > emitted else stop for t in tokens]))
            emitted += 1
        return emitted

    def _generated(self, completion: Any, prompt_tokens: int, collapse_loops: bool = False,
                   guarded: bool = True) -> Generated:
        return Generated.read(self.tokenizer, completion.token_ids, prompt_tokens, stops=self.stop_ids,
                              stopped=completion.finish_reason == "stop", collapse_loops=collapse_loops, guarded=guarded)


__all__ = ["ModelCard", "VllmQwenAudio", "engine_kwargs"]
