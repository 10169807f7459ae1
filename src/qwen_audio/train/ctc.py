"""CTC losses on the audio side: a byte head on the encoder (``EncoderCtc``) and the projected
frames read against the LLM's own token embeddings (``EmbeddingCtc``).

``EncoderCtc``, for training an encoder from scratch:

The paper starts from Whisper's trained encoder. The bundled default model cannot (no hub), and
with only the decoder's next-token loss a from-scratch encoder learns slowly: the decoder first
fits the text priors and the gradient reaching the audio is weak (see
scripts/probe_audio_dependence.py). A CTC head over the encoder's 20 ms frames, predicting the
UTF-8 bytes of what is said, gives every speech frame a direct signal — the hybrid CTC/attention
recipe of end-to-end ASR. The head exists only in training: checkpoints of this wrapper hold it,
the exported model (``export_model``) does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from qwen_audio.encoder import conv_lengths

BYTE_CLASSES = 257  # blank + 256 byte values (data.dataset.transcript_targets)
# The token CTC's blank, kept beside an exported model: ``infer.alignment`` aligns words with it. In a
# folder of its own: vLLM loads every ``*.safetensors`` at a model folder's top as the model's weights.
ALIGNER_FILE = "aligner/ctc.safetensors"


def token_ctc_logits(frames: Tensor, blank: Tensor, bias: Tensor, table: Tensor) -> Tensor:
    """Projected frames [..., frames, width] scored against the token embeddings ``table`` [vocab, width]
    and a blank: [..., frames, 1 + vocab], class 0 the blank, class i + 1 token i."""
    return torch.cat([(frames @ blank + bias)[..., None], frames @ table.T.to(frames.dtype)], dim=-1)


def read_aligner(directory: str | Path) -> tuple[Tensor, Tensor] | None:
    """The token CTC's (blank, bias) a model folder ships (``ALIGNER_FILE``, float32), or None when it has none."""
    path = Path(directory) / ALIGNER_FILE
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    return tensors["blank"].float(), tensors["blank_bias"].float().reshape(())


class _CtcWrapper(nn.Module):
    """What both CTC wrappers share: the wrapped model, the weight, frames kept by a forward hook,
    one masked CTC over the audios that have a transcript, and best-path collapsing."""

    def __init__(self, model: nn.Module, weight: float, hooked: nn.Module) -> None:
        super().__init__()
        if weight <= 0:
            raise ValueError(f"CTC weight must be positive, got {weight}")
        self.model, self.weight = model, weight
        self._hooked: Any = None
        hooked.register_forward_hook(self._keep)
        self.last_metrics: dict[str, float] = {}

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        self._hooked = output

    @property
    def config(self) -> Any:
        return self.model.config

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.activation_checkpointing_enable(**kwargs)

    def logits(self, frames: Tensor) -> Tensor:
        raise NotImplementedError

    def ctc_loss(self, frames: Tensor, frame_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
        """Mean per-unit CTC over the audios that have a transcript (class 0 is the blank)."""
        keep = target_lengths.to(frames.device) > 0
        log_probs = F.log_softmax(self.logits(frames[keep]).float(), dim=-1).transpose(0, 1)
        return F.ctc_loss(  # audios without a transcript add no units to ``targets``: it needs no filtering
            log_probs, targets.to(frames.device), frame_lengths.to(frames.device)[keep],
            target_lengths.to(frames.device)[keep], blank=0, reduction="mean", zero_infinity=True,
        )

    def best_paths(self, frames: Tensor, frame_lengths: Tensor) -> list[list[int]]:
        """Each audio's best path, repeats merged and blanks dropped, as unit ids (class − 1)."""
        best = self.logits(frames).argmax(-1)
        return [[b - 1 for i, b in enumerate(row[:length]) if b and (i == 0 or b != row[i - 1])]
                for row, length in zip(best.tolist(), frame_lengths.tolist())]


class EncoderCtc(_CtcWrapper):
    """``model`` plus a CTC head on its encoder's last block; loss = LM loss + weight × CTC."""

    def __init__(self, model: nn.Module, weight: float) -> None:
        super().__init__(model, weight, model.audio.blocks[-1])
        self.ctc_head = nn.Linear(model.audio.config.n_state, BYTE_CLASSES)

    def logits(self, frames: Tensor) -> Tensor:
        return self.ctc_head(frames)

    def forward(self, ctc_targets: Tensor | None = None, ctc_lengths: Tensor | None = None, **batch: Any) -> Any:
        self._hooked = None
        outputs = self.model(**batch)
        frames = self._hooked
        if ctc_targets is None or ctc_lengths is None or frames is None or not bool((ctc_lengths > 0).any()):
            self.last_metrics = {"lm_loss": float(outputs.loss.detach())}
            return outputs
        ctc = self.ctc_loss(frames, conv_lengths(batch["audio_lengths"].to(frames.device)), ctc_targets, ctc_lengths)
        self.last_metrics = {"lm_loss": float(outputs.loss.detach()), "ctc_loss": float(ctc.detach())}
        outputs.loss = outputs.loss + self.weight * ctc
        return outputs


def greedy_decode(wrapper: EncoderCtc, frames: Tensor, frame_lengths: Tensor) -> list[str]:
    """Best-path transcripts of the CTC head: a direct read-out of what the encoder has learnt."""
    return [bytes(path).decode(errors="replace") for path in wrapper.best_paths(frames, frame_lengths)]


class EmbeddingCtc(_CtcWrapper):
    """``model`` plus CTC from its projected audio frames onto its LLM's token embeddings.

    Why: with a pretrained, frozen LLM the projection must learn to speak the LLM's input language
    before the next-token loss can use the audio at all; through the LLM that takes thousands of
    slow steps (measured: 600 steps of SmolLM2-135M left the transcripts on the LLM's prior). Scoring
    each 40 ms frame against the embedding rows (logits = frames · Eᵀ, plus a learned blank) and
    training with CTC on the transcript's token ids moves the frames toward the embeddings of the
    words said, in the LLM's own space, without running the LLM: with ``lm_loss=False`` a step costs
    the encoder and one vocabulary product. The blank vector and its bias are exported beside the
    model (``aligner/ctc.safetensors``): with them the same scores align a transcript's words to the audio
    (``infer.alignment``). The embedding rows get no gradient from this loss.
    """

    def __init__(self, model: nn.Module, weight: float, *, lm_loss: bool = True) -> None:
        super().__init__(model, weight, model.audio)
        self.lm_loss = lm_loss
        width = model.get_input_embeddings().weight.shape[1]
        self.blank = nn.Parameter(torch.zeros(width))
        self.blank_bias = nn.Parameter(torch.zeros(()))

    def logits(self, frames: Tensor) -> Tensor:
        """[..., frames, width] → [..., frames, 1 + vocab]: class 0 is the blank, class i + 1 token i."""
        return token_ctc_logits(frames, self.blank, self.blank_bias, self.model.get_input_embeddings().weight.detach())

    def save_aligner(self, directory: str | Path) -> Path:
        """Write the blank and its bias beside an exported model (``ALIGNER_FILE``)."""
        path = Path(directory) / ALIGNER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"blank": self.blank.detach().float().contiguous(),
                   "blank_bias": self.blank_bias.detach().float().reshape(())}, str(path))
        return path

    def load_aligner(self, directory: str | Path) -> bool:
        """Start from the blank a model folder ships (its previous stage's), if it has one: a later
        stage then refines the word-time aligner instead of learning it again from zeros."""
        shipped = read_aligner(directory)
        if shipped is None:
            return False
        with torch.no_grad():
            self.blank.copy_(shipped[0])
            self.blank_bias.copy_(shipped[1])
        return True

    def forward(self, ctc_targets: Tensor | None = None, ctc_lengths: Tensor | None = None, **batch: Any) -> Any:
        self._hooked = None
        outputs = None
        if self.lm_loss:
            outputs = self.model(**batch)
        elif batch.get("audio_features") is not None:
            self.model.audio(batch["audio_features"], batch["audio_lengths"])
        encoded = self._hooked
        metrics = {} if outputs is None else {"lm_loss": float(outputs.loss.detach())}
        if ctc_targets is None or ctc_lengths is None or encoded is None or not bool((ctc_lengths > 0).any()):
            if outputs is None:  # nothing said in this batch (sounds, text): a step that changes nothing
                self.last_metrics = {"ctc_loss": 0.0}
                return CausalLMOutputWithPast(loss=self.blank.sum() * 0.0)
            self.last_metrics = metrics
            return outputs
        ctc = self.ctc_loss(encoded.frames, encoded.lengths, ctc_targets, ctc_lengths)
        self.last_metrics = {**metrics, "ctc_loss": float(ctc.detach())}
        if outputs is None:
            return CausalLMOutputWithPast(loss=self.weight * ctc)
        outputs.loss = outputs.loss + self.weight * ctc
        return outputs

    def greedy_ids(self, frames: Tensor, frame_lengths: Tensor) -> list[list[int]]:
        """Best-path token ids per audio: what the LLM is shown, read back as text by the tokenizer."""
        return self.best_paths(frames, frame_lengths)
