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

Pauses: a CTC spike says *that* a token is spoken near a frame, not where the word begins or ends. Where
the audio pauses around a word (10 ms frames fall quiet relative to the piece's own floor and level),
the word starts at the quiet→loud edge before its first spike and ends at its last loud frame before the
next word; where speech runs on without a pause, the spike-based estimate stands, and a quiet stretch under
60 ms inside speech (a stop consonant's closure) is no pause. Chosen on the training split's synthetic
English (80 utterances, oracle transcripts: 75 → 56 ms mean boundary error), checked on 60 held-out ones
(78 → 61 ms): ``runs/s19/srwt_tune.py``, ``runs/s19/check_pause.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qwen_audio.audio import HOP_LENGTH, SAMPLE_RATE, batch_log_mel
from qwen_audio.encoder import EncodedAudio
from qwen_audio.formats.srwt import Word
from qwen_audio.infer.longform import frame_energy
from qwen_audio.train.ctc import ALIGNER_FILE, read_aligner, token_ctc_logits

FRAME_SECONDS = 0.04  # one pooled encoder frame
ALIGN_BATCH = 16  # pieces encoded together for word times (bounds their [frames, vocab] log-probabilities)
# Chosen on the training split's synthetic English speech with exact word times (40 utterances, never a
# test set): a CTC spike comes after the word starts, and a word's last spike
# well before it ends. Mean boundary error there: 80 ms.
START_SHIFT = -0.08
END_REACH = 0.4  # a word ends at most this long after its last spike …
GAP = 0.08  # … and this long before the next word starts
EDGE_SECONDS = HOP_LENGTH / SAMPLE_RATE  # one frame of the loudness mask
LOUD_FRACTION = 0.3  # loud: above floor + this share of (level − floor), in dB (10th/95th percentiles)
EDGE_SEARCH = 0.2  # a start moves back onto a pause edge at most this far before its first spike
MIN_PAUSE_FRAMES = 6  # a quieter stretch shorter than 60 ms is no pause (the closure of a "p" in "Après")


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


def loud_frames(samples: np.ndarray) -> np.ndarray:
    """Per 10 ms frame, whether it is loud for this audio: its power (dB) above the 10th percentile by
    ``LOUD_FRACTION`` of the distance to the 95th. Relative, so a noise floor or a quiet recording moves
    the threshold with it."""
    return loud_mask(10 * np.log10(frame_energy(samples, smooth_frames=1) + 1e-10), MIN_PAUSE_FRAMES)


def loud_mask(decibels: np.ndarray, min_pause: int = 1) -> np.ndarray:
    """:func:`loud_frames` from the frames' power in dB; a quiet run shorter than ``min_pause`` frames
    between loud ones counts as loud."""
    if decibels.size == 0:
        return np.zeros(0, dtype=bool)
    floor, level = np.percentile(decibels, 10), np.percentile(decibels, 95)
    loud = decibels > floor + LOUD_FRACTION * (level - floor)
    if min_pause > 1:
        edges = np.flatnonzero(np.diff(loud.astype(np.int8)))  # the last frame before each change
        for fall, rise in zip(edges[:-1], edges[1:]):
            if loud[fall] and not loud[fall + 1] and rise - fall < min_pause:
                loud[fall + 1:rise + 1] = True
    return loud


def words_from_path(path: Sequence[int], owners: Sequence[int], words: Sequence[str], seconds: float,
                    loud: np.ndarray | None = None) -> list[Word]:
    """Frame path (label index per frame, -1 blank) → each word's (start, end): from its first label's
    first frame (less ``START_SHIFT``) to its last label's last frame plus ``END_REACH``, never past the
    next word's start less ``GAP`` nor the audio's end. With ``loud`` (:func:`loud_frames` of the same
    audio) a start moves back onto a pause's quiet→loud edge within ``EDGE_SEARCH`` of its first spike,
    and an end onto the last loud frame before the next word when a quiet frame lies between them."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for frame, label in enumerate(path):
        if label >= 0:
            first.setdefault(owners[label], frame)
            last[owners[label]] = frame
    count = len(words)
    starts = [min(max(_start(first[i], last.get(i - 1), loud), 0.0), seconds) for i in range(count)]
    timed = []
    for i, word in enumerate(words):
        following = starts[i + 1] if i + 1 < count else None
        end = min(_end(last[i], following, loud), seconds)
        timed.append(Word(word, round(starts[i], 2), round(max(end, starts[i]), 2)))
    return timed


def _start(spike: int, previous_spike: int | None, loud: np.ndarray | None) -> float:
    """A word's start from its first spike's frame (and the previous word's last): the pause edge before
    the spike where one is near, else the spike less ``START_SHIFT``."""
    if loud is not None and loud.size:
        at = min(int(spike * FRAME_SECONDS / EDGE_SECONDS), loud.size - 1)
        limit = max(int((spike * FRAME_SECONDS - EDGE_SEARCH) / EDGE_SECONDS), 0)
        if previous_spike is not None:
            limit = max(limit, int((previous_spike + 1) * FRAME_SECONDS / EDGE_SECONDS))
        if loud[at]:
            edge = at
            while edge > limit and loud[edge - 1]:
                edge -= 1
            if edge == 0 or not loud[edge - 1]:
                return edge * EDGE_SECONDS
    return spike * FRAME_SECONDS + START_SHIFT


def _end(spike: int, following: float | None, loud: np.ndarray | None) -> float:
    """A word's end from its last spike's frame and the next word's start (None: the last word)."""
    reach = (spike + 1) * FRAME_SECONDS + END_REACH
    cap = reach if following is None else min(reach, following - GAP)
    if loud is not None and loud.size:
        begin = int((spike + 1) * FRAME_SECONDS / EDGE_SECONDS)
        stop = min(int(reach / EDGE_SECONDS), loud.size)
        if following is not None:
            stop = min(stop, int(following / EDGE_SECONDS))
        window = loud[begin:stop]
        if window.size and not window.all():  # a pause after the word: it ends with its last loud frame
            said = np.flatnonzero(window)
            end = (begin + int(said[-1]) + 1) * EDGE_SECONDS if said.size else begin * EDGE_SECONDS
            return end if following is None else min(end, following)
    return cap


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
                   separator: str, log_probs: Sequence[Tensor | None] | None = None) -> list[list[Word]]:
        """Each piece's transcript as timed words (piece-local seconds); the words are the text's own
        (split on spaces; characters where ``separator`` is empty). ``log_probs``: the pieces' CTC
        log-probabilities where the caller has them (``frame_log_probs``; None: computed here).

        Pieces are encoded ``ALIGN_BATCH`` at a time: a piece's log-probabilities are [frames, vocab]
        (an hour of speech is ~18 GB of them at SmolLM2's 49k tokens), so all at once ran out of memory."""
        jobs = [i for i, text in enumerate(texts) if text.strip()]
        timed: list[list[Word]] = [[] for _ in texts]
        known = [None] * len(pieces) if log_probs is None else list(log_probs)
        for first in range(0, len(jobs), ALIGN_BATCH):
            chunk = jobs[first:first + ALIGN_BATCH]
            missing = [i for i in chunk if known[i] is None]
            computed = dict(zip(missing, self.log_probs([pieces[i] for i in missing]) if missing else []))
            for i in chunk:
                timed[i] = self._timed_words(tokenizer, pieces[i], texts[i], separator,
                                             computed[i] if i in computed else known[i])
        return timed

    def _timed_words(self, tokenizer: object, piece: np.ndarray, text: str, separator: str, scores: Tensor) -> list[Word]:
        """One piece's words placed by forced alignment of its text on its log-probabilities ``scores``."""
        words = text.split() if separator else [c for c in text if not c.isspace()]
        labels: list[int] = []
        owners: list[int] = []
        for number, word in enumerate(words):
            ids = tokenizer.encode_plain((separator if number else "") + word)  # type: ignore[attr-defined]
            labels += [t + 1 for t in ids]  # class 0 is the blank
            owners += [number] * len(ids)
        seconds = piece.size / SAMPLE_RATE
        columns = sorted({0, *labels})  # the blank and the text's own tokens: a copy, the caller's frames stay
        log_probs = scores[:, columns].numpy()
        log_probs[0, 1:] = -np.inf  # the first frame says the first token wherever it is spoken: a blank
        column = {label: n for n, label in enumerate(columns)}
        path = forced_align(log_probs, [column[label] for label in labels])
        if path is None:  # more tokens than frames: spread the words evenly
            step = seconds / len(words)
            return [Word(w, round(n * step, 2), round((n + 1) * step, 2)) for n, w in enumerate(words)]
        return words_from_path(path, owners, words, seconds, loud_frames(piece))


__all__ = ["ALIGNER_FILE", "CtcAligner", "forced_align", "loud_frames", "loud_mask", "words_from_path"]
