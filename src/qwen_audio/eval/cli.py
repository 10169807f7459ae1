"""`qwen-audio eval`: one paper benchmark on a dataset or manifest, or the default synthetic suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from qwen_audio.errors import ConfigError
from qwen_audio.eval.benchmarks import BENCHMARKS, get_benchmark


def eval_command(
    task: Annotated[Optional[str], typer.Option("--task", help=f"A benchmark: {', '.join(BENCHMARKS)}.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="The dataset folder (its official layout) or a manifest; with --suite, the suite's data folder (built there when missing).")] = None,
    suite: Annotated[Optional[str], typer.Option(help="'default': the default model's held-out real and world-like suite; 'synthetic': the synthetic corpus' held-out split.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model directory or 'default'.")] = "default",
    output: Annotated[Path, typer.Option(help="Folder for predictions (resumable) and reports.")] = Path("eval-results"),
    batch_size: Annotated[int, typer.Option(help="Examples decoded together.")] = 8,
    limit: Annotated[Optional[int], typer.Option(help="Score N examples spread over the data (one from each of N equal strata, seeded), not the first N.")] = None,
) -> None:
    """Evaluate a model with the official prompts and metrics; reports the official figure beside the
    paper's number and the lenient one apart."""
    from qwen_audio.api import QwenAudio
    from qwen_audio.eval.runner import EvalSettings, figure_text, run_benchmark, write_report

    console = Console()
    if (task is None) == (suite is None):
        raise ConfigError("give exactly one of --task BENCHMARK (with --data) or --suite default|synthetic")
    settings = EvalSettings(batch_size=batch_size, limit=limit)
    if suite is not None:
        from qwen_audio.eval.suite import SUITES, ensure_test_split, ensure_world_split, gate_table, run_suite

        if suite not in SUITES:
            raise ConfigError(f"unknown suite {suite!r}: use one of {', '.join(SUITES)}")
        if suite == "default":
            split = ensure_world_split(data or output / "world-data")
        else:
            split = ensure_test_split(data or output / "synthetic-corpus")
        api = QwenAudio.from_pretrained(model)
        rows = gate_table(run_suite(api, split, output, settings, SUITES[suite]))
        (output / "suite.json").write_text(json.dumps(rows, indent=2) + "\n")
        table = Table("benchmark", "value", "gate", "passed", "examples", title=f"default suite: {model}")
        for row in rows:
            passed = "—" if row["passed"] is None else "yes" if row["passed"] else "NO"
            table.add_row(row["benchmark"], f"{row['value']:.4f}", row["gate"], passed, str(row["examples"]))
        console.print(table)
        return
    if data is None:
        raise ConfigError("--task needs --data (the dataset folder or a manifest file)")
    benchmark = get_benchmark(task)  # type: ignore[arg-type]
    records = list(benchmark.records(data))
    if not records:
        raise ConfigError(f"no {benchmark.task} examples found in {data}")
    api = QwenAudio.from_pretrained(model)
    root = data.parent if data.is_file() else data
    score = run_benchmark(api, benchmark, records, output, settings, root=root)
    report = write_report([score], output, title=f"qwen-audio on {benchmark.name}")
    paper = "—" if score.paper_value is None else score.paper_value
    official = score.official
    shown = figure_text(official) + (f" ({official.unavailable})" if official.unavailable else "")
    console.print(f"{benchmark.name}: {score.metric} official = {shown} (paper: {paper}) on {score.num_examples} examples")
    if score.lenient is not None:
        console.print(f"  lenient, not comparable with the paper: {figure_text(score.lenient)} ({score.lenient.method})")
    console.print(f"report: {report}")
