"""Inference helpers: result types and exports (long-audio windowing and batching live beside them)."""

from qwen_audio.infer.exports import Segment, format_timestamp, segments_from_words, to_json, to_srt, to_vtt, write_result

__all__ = ["Segment", "format_timestamp", "segments_from_words", "to_json", "to_srt", "to_vtt", "write_result"]
