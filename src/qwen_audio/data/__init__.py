"""Data: manifests (task and chat), converters from the paper's datasets, and their I/O."""

from qwen_audio.data.chat_manifest import (
    ChatRecord,
    read_chat_manifest,
    validate_chat_manifest,
    write_chat_manifest,
)
from qwen_audio.data.manifest import (
    KNOWN_LANGUAGES,
    KNOWN_TASKS,
    ManifestProblem,
    ManifestRecord,
    ManifestValidationError,
    Word,
    check_manifest,
    read_manifest,
    register_language,
    register_task,
    tag_task,
    validate_manifest,
    write_manifest,
)

__all__ = [
    "KNOWN_LANGUAGES", "KNOWN_TASKS", "ChatRecord",
    "ManifestProblem", "ManifestRecord", "ManifestValidationError", "Word",
    "check_manifest", "read_chat_manifest", "read_manifest", "register_language",
    "register_task", "tag_task", "validate_chat_manifest", "validate_manifest", "write_chat_manifest",
    "write_manifest",
]
