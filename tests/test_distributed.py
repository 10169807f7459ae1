"""Real 2-process torchrun (gloo, CPU) runs through the project's trainer: DDP and FSDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def torchrun(out: Path, strategy: str, *, resume: bool = False, steps: int = 6, die_after: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DIE_AFTER_BATCHES": str(die_after)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "distributed_worker.py"), str(out), strategy, "resume" if resume else "fresh", str(steps)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_two_process_torchrun_ddp(tmp_path: Path) -> None:
    run = torchrun(tmp_path, "ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    result = ranks(tmp_path)
    assert [r["world"] for r in result] == [2, 2] and [r["steps"] for r in result] == [6, 6]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    assert sorted(p.name for p in (tmp_path / "checkpoint-6").glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]


@pytest.mark.slow
def test_fsdp_kill_and_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    reference = torchrun(tmp_path / "ref", "fsdp")
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = torchrun(tmp_path / "run", "fsdp", die_after=4)  # dies after checkpoint-3
    assert killed.returncode != 0
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-3"]
    resumed = torchrun(tmp_path / "run", "fsdp", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Full weights gathered from the shards: the resumed run ends exactly where the reference did.
    assert ranks(tmp_path / "run")[0]["digest"] == ranks(tmp_path / "ref")[0]["digest"]
    assert ranks(tmp_path / "run")[0]["steps"] == 6
