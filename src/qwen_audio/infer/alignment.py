"""Word times by CTC forced alignment of a known transcript to the audio's 40 ms frames.

Why: a model trained with ``train.ctc.EmbeddingCtc`` scores each projected audio frame against the
LLM's token embeddings, plus a learned blank. Kept at export (``train.ctc.ALIGNER_FILE``: the blank
vector and its bias, 577 numbers), that scoring is a CTC acoustic model over the LLM's own tokens,
and Viterbi alignment of the transcript's tokens to it places each word at the frames that say it:
the recipe of CTC aligners (wav2vec2 in WhisperX, ``torchaudio.functional.forced_align``). On the
default model it is far closer to the truth than its word-timed decode (SRWT) and needs no
decoding. Models without the file (official Qwen-Audio) get times from their SRWT decode, held to
the transcript (``generation.TimedText``).

Why our own Viterbi: ``torchaudio`` has no build for this torch (2.13), and its ``forced_align`` is
deprecated; the algorithm is a dozen lines over a [frames, 2·tokens + 1] lattice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qwen_audio.audio import SAMPLE_RATE, batch_log_mel
from qwen_audio.encoder import EncodedAudio
from qwen_audio.formats.srwt import Word
from qwen_audio.train.ctc import ALIGNER_FILE, read_aligner, token_ctc_logits

FRAME_SECONDS = 0.04  # one pooled encoder frame
# Chosen on the training split's synthetic English speech with exact word times (40 utterances, never a
# test set): a CTC spike comes after the word starts, and a word's last spike
# well before it ends. Mean boundary error there: 80 ms.
START_SHIFT = -0.08
END_REACH = 0.4  # a word ends at most this long after its last spike …
GAP = 0.08  # … and this long before the next word starts


def forced_align(log_probs: np.ndarray, labels: Sequence[int]) -> list[int] | None:
    """The most likely CTC path of ``labels`` (class ids, 0 is the blank) through ``log_probs``
    [frames, classes]: per frame, the label index it says, or -1 for a blank. None: the frames
    are too few for the labels (each label needs a frame, and a repeat a blank between)."""
    frames, count = log_probs.shape[0], len(labels)
    states = 2 * count + 1  # blank, label 0, blank, label 1, …, blank
    if count == 0:
        return [-1] * frames
    ext = np.zeros(states, dtype=np.int64)
    ext[1::2] = labels
    scores = log_probs[:, ext].astype(np.float64)
    skip = np.zeros(states, dtype=bool)  # label → next label over no blank, unless it repeats
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    floor = -np.inf
    best = np.full(states, floor)
    best[:2] = scores[0, :2]
    moves = np.zeros((frames, states), dtype=np.int8)
    for t in range(1, frames):
        one = np.concatenate(([floor], best[:-1]))
        two = np.where(skip, np.concatenate(([floor, floor], best[:-2])), floor)
        options = np.stack([best, one, two])
        moves[t] = options.argmax(0)
        best = options.max(0) + scores[t]
    state = states - 1 if best[-1] >= best[-2] else states - 2
    if not np.isfinite(best[state]):
        return None
    path = [0] * frames
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(moves[t, state])
    return [(s - 1) // 2 if s % 2 else -1 for s in path]


def words_from_path(path: Sequence[int], owners: Sequence[int], words: Sequence[str], seconds: float) -> list[Word]:
    """Frame path (label index per frame, -1 blank) → each word's (start, end): from its first label's
    first frame (less ``START_SHIFT``) to its last label's last frame plus ``END_REACH``, never past the
    next word's start less ``GAP`` nor the audio's end."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for frame, label in enumerate(path):
        if label >= 0:
            first.setdefault(owners[label], frame)
            last[owners[label]] = frame
    starts = [min(max(first[i] * FRAME_SECONDS + START_SHIFT, 0.0), seconds) for i in range(len(words))]
    timed = []
    for i, word in enumerate(words):
        end = (last[i] + 1) * FRAME_SECONDS + END_REACH
        if i + 1 < len(words):
            end = min(end, starts[i + 1] - GAP)
        end = min(max(end, starts[i]), seconds)
        timed.append(Word(word, round(starts[i], 2), round(end, 2)))
    return timed


@dataclass(frozen=True)
class CtcAligner:
    """A model's token CTC: its frames · [blank, Eᵀ] + [bias, 0], from the model's own encoder and embeddings."""

    blank: Tensor  # [width]
    bias: Tensor  # []
    model: torch.nn.Module  # a QwenAudioForCausalLM: encode_audio and the input embeddings

    @classmethod
    def load(cls, directory: str | Path, model: torch.nn.Module) -> CtcAligner | None:
        """The aligner a model folder ships, over ``model`` (that folder's model), or None when it has none."""
        shipped = read_aligner(directory)
        return None if shipped is None else cls(*shipped, model)

    @torch.no_grad()
    def log_probs(self, pieces: Sequence[np.ndarray]) -> list[Tensor]:
        """Each piece's CTC log-probabilities [frames, 1 + vocab] (class 0 the blank), float32."""
        return self.frame_log_probs(self.model.encode_audio(batch_log_mel(list(pieces)), grouped=True))

    @torch.no_grad()
    def frame_log_probs(self, encoded: EncodedAudio) -> list[Tensor]:
        """``log_probs`` of audios the model has encoded already (one list item per audio)."""
        table = self.model.get_input_embeddings().weight.float()
        return [torch.log_softmax(token_ctc_logits(encoded.frames[row, : int(encoded.lengths[row])].float(),
                                                   self.blank, self.bias, table), dim=-1)
                for row in range(encoded.frames.shape[0])]

    @torch.no_grad()
    def text_log_likelihoods(self, tokenizer: object, log_probs: Sequence[Tensor],
                             candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        """log P_ctc(text | piece) of each of ``candidates[i]``, the texts proposed for the piece whose
        ``log_probs[i]`` these are (``log_probs``/``frame_log_probs``), each read as the tokens its plain
        encoding gives; -inf where the piece has too few frames to say it."""
        scored: list[list[float]] = []
        for frames, texts in zip(log_probs, candidates):
            row = []
            for text in texts:
                ids = tokenizer.encode_plain(text.strip())  # type: ignore[attr-defined]
                loss = torch.nn.functional.ctc_loss(
                    frames[:, None], torch.tensor([[t + 1 for t in ids]], dtype=torch.long),
                    torch.tensor([frames.shape[0]]), torch.tensor([len(ids)]), blank=0, reduction="sum")
                row.append(-float(loss))
            scored.append(row)
        return scored

    @torch.no_grad()
    def word_times(self, tokenizer: object, pieces: Sequence[np.ndarray], texts: Sequence[str],
                   separator: str) -> list[list[Word]]:
        """Each piece's transcript as timed words (piece-local seconds); the words are the text's own
        (split on spaces; characters where ``separator`` is empty)."""
        jobs = [i for i, text in enumerate(texts) if text.strip()]
        timed: list[list[Word]] = [[] for _ in texts]
        if not jobs:
            return timed
        for i, scores in zip(jobs, self.log_probs([pieces[i] for i in jobs])):
            log_probs = scores.numpy()
            log_probs[0, 1:] = -np.inf  # the first frame says the first token wherever it is spoken: a blank
            words = texts[i].split() if separator else [c for c in texts[i] if not c.isspace()]
            labels: list[int] = []
            owners: list[int] = []
            for number, word in enumerate(words):
                ids = tokenizer.encode_plain((separator if number else "") + word)  # type: ignore[attr-defined]
                labels += [t + 1 for t in ids]  # class 0 is the blank
                owners += [number] * len(ids)
            seconds = pieces[i].size / SAMPLE_RATE
            path = forced_align(log_probs, labels)
            if path is None:  # more tokens than frames: spread the words evenly
                step = seconds / len(words)
                timed[i] = [Word(w, round(n * step, 2), round((n + 1) * step, 2)) for n, w in enumerate(words)]
            else:
                timed[i] = words_from_path(path, owners, words, seconds)
        return timed


__all__ = ["ALIGNER_FILE", "CtcAligner", "forced_align", "words_from_path"]
