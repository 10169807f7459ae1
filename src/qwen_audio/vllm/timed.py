"""Word times on vLLM: :class:`~qwen_audio.generation.TimedText` as a vLLM per-request logits processor.

A request whose ``SamplingParams.extra_args`` hold :data:`EXTRA_KEY` (the constraint's fields) is held
to its transcript, the model choosing only the time tokens, exactly as this package's decoding loop
holds it (both call :meth:`TimedText.restrict` on the row's new tokens); other requests are untouched.
:func:`~qwen_audio.vllm.engine.engine_kwargs` names the class to vLLM (``logits_processors``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from qwen_audio.generation import TimedText

EXTRA_KEY = "qwen_audio_timed_text"
FQCN = "qwen_audio.vllm.timed:TimedTextLogits"


def timed_extra_args(constraint: TimedText) -> dict[str, Any]:
    """What a request carries in ``extra_args`` to be held to ``constraint`` (plain ints: vLLM sends them on)."""
    return {EXTRA_KEY: {"template": list(constraint.template), "first_time": constraint.first_time,
                        "last_time": constraint.last_time, "stop": constraint.stop}}


class TimedTextLogits(AdapterLogitsProcessor):
    """vLLM's hook for rows held to a transcript (see the module docstring)."""

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the greedy token

    def new_req_logits_processor(self, params: SamplingParams) -> Callable[[list[int], torch.Tensor], torch.Tensor] | None:
        fields = (params.extra_args or {}).get(EXTRA_KEY)
        if fields is None:
            return None
        constraint = TimedText(tuple(fields["template"]), fields["first_time"], fields["last_time"], fields["stop"])
        return constraint.restrict


__all__ = ["EXTRA_KEY", "FQCN", "TimedTextLogits", "timed_extra_args"]
