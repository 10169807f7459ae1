"""Generation: the one decoding loop (``loop.py``: prefill, steps, greedy/sampling, stop tokens,
streamer) over pluggable KV backends (``kv.py``: ``StaticKV`` on the decoder's modules; ``folded.py``:
``FoldedKV`` on fused copies of its weights, and ``KVBackends``, which picks one); ``beams.py``: beam
search on the same backends (an N-best list), steered by a CTC's prefix scores where one is given
(``ctc_prefix.py``); ``timed.py``: word times for a known text (``TimedText``)."""

from qwen_audio.generation.beams import Hypothesis, beam_search
from qwen_audio.generation.ctc_prefix import CtcPrefix, CtcPrefixScorer
from qwen_audio.generation.folded import FOLD_MAX_BYTES, FoldedKV, FoldedWeights, KVBackends, Matrix, can_fold, fold_weights
from qwen_audio.generation.kv import KVBackend, KVCache, RotaryTables, StaticKV
from qwen_audio.generation.loop import LoopGuard, Sampling, decode_steps, prefill, streamed
from qwen_audio.generation.timed import TimedText

__all__ = [
    "FOLD_MAX_BYTES", "CtcPrefix", "CtcPrefixScorer", "FoldedKV", "FoldedWeights", "Hypothesis", "KVBackend", "KVBackends", "KVCache", "LoopGuard", "Matrix", "RotaryTables", "Sampling",
    "StaticKV", "TimedText", "beam_search", "can_fold", "decode_steps", "fold_weights", "prefill", "streamed",
]
