"""Auxiliary CTC loss on the audio encoder, for training an encoder from scratch.

The paper starts from Whisper's trained encoder. The bundled default model cannot (no hub), and
with only the decoder's next-token loss a from-scratch encoder learns slowly: the decoder first
fits the text priors and the gradient reaching the audio is weak (see
scripts/probe_audio_dependence.py). A CTC head over the encoder's 20 ms frames, predicting the
UTF-8 bytes of what is said, gives every speech frame a direct signal — the hybrid CTC/attention
recipe of end-to-end ASR. The head exists only in training: checkpoints of this wrapper hold it,
the exported model (``export_model``) does not.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from qwen_audio.encoder import conv_lengths

BYTE_CLASSES = 257  # blank + 256 byte values (data.dataset.transcript_targets)


class EncoderCtc(nn.Module):
    """``model`` plus a CTC head on its encoder's last block; loss = LM loss + weight × CTC."""

    def __init__(self, model: nn.Module, weight: float) -> None:
        super().__init__()
        if weight <= 0:
            raise ValueError(f"CTC weight must be positive, got {weight}")
        self.model, self.weight = model, weight
        self.ctc_head = nn.Linear(model.audio.config.n_state, BYTE_CLASSES)
        self._frames: Tensor | None = None
        model.audio.blocks[-1].register_forward_hook(self._keep_frames)
        self.last_metrics: dict[str, float] = {}

    def _keep_frames(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self._frames = output

    @property
    def config(self) -> Any:
        return self.model.config

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.activation_checkpointing_enable(**kwargs)

    def forward(self, ctc_targets: Tensor | None = None, ctc_lengths: Tensor | None = None, **batch: Any) -> Any:
        self._frames = None
        outputs = self.model(**batch)
        if ctc_targets is None or ctc_lengths is None or self._frames is None or not bool((ctc_lengths > 0).any()):
            self.last_metrics = {"lm_loss": float(outputs.loss.detach())}
            return outputs
        ctc = self.ctc_loss(self._frames, conv_lengths(batch["audio_lengths"].to(self._frames.device)), ctc_targets, ctc_lengths)
        self.last_metrics = {"lm_loss": float(outputs.loss.detach()), "ctc_loss": float(ctc.detach())}
        outputs.loss = outputs.loss + self.weight * ctc
        return outputs

    def ctc_loss(self, frames: Tensor, frame_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
        """Mean per-byte CTC over the audios that have a transcript."""
        keep = target_lengths.to(frames.device) > 0
        log_probs = F.log_softmax(self.ctc_head(frames[keep]).float(), dim=-1).transpose(0, 1)
        return F.ctc_loss(  # audios without a transcript add no bytes to ``targets``: it needs no filtering
            log_probs, targets.to(frames.device), frame_lengths[keep], target_lengths.to(frames.device)[keep],
            blank=0, reduction="mean", zero_infinity=True,
        )


def greedy_decode(wrapper: EncoderCtc, frames: Tensor, frame_lengths: Tensor) -> list[str]:
    """Best-path transcripts of the CTC head: a direct read-out of what the encoder has learnt."""
    best = wrapper.ctc_head(frames).argmax(-1)
    texts = []
    for row, length in zip(best.tolist(), frame_lengths.tolist()):
        collapsed = [b for i, b in enumerate(row[:length]) if b and (i == 0 or b != row[i - 1])]
        texts.append(bytes(b - 1 for b in collapsed).decode(errors="replace"))
    return texts
