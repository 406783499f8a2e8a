"""Background runs (alignment/runs.py): reaping, the queue, the memory check."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from alignment import machine_defaults, memory, runs
from alignment.errors import RunWontFit


@pytest.fixture(autouse=True)
def room_to_run(monkeypatch):
    """These tests are about the queue and reaping, not this host's free memory: a machine
    busy elsewhere (another job's training) must not refuse their runs. The memory check
    itself is tested below with the values it is given."""
    monkeypatch.setattr(memory, "available", lambda: 64 * 2**30)
    monkeypatch.setattr(memory, "total", lambda: 64 * 2**30)


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def zombie_or_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").exists()
    except OSError:
        return False


def test_a_failed_run_is_reaped_without_anyone_looking(settings):
    # The CLI refuses an unknown command at once (exit status 2): the run ends without a result.
    run = runs.start(settings, ["no-such-command"], "dpo")
    # Nothing polls the run (no page lists it): the process must still not stay a zombie.
    wait_for("the child to be reaped", lambda: not zombie_or_alive(run.pid))
    assert runs.load(run.path).status == "died"


@pytest.fixture
def sleepers(monkeypatch):
    """Runs whose process sleeps for the seconds named in their command (the queue is the
    subject here, not what a run does)."""
    def argv(command: list[str], path: Path) -> list[str]:
        return [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))",
                command[0], str(path)]

    monkeypatch.setattr(runs, "_argv", argv)


def status(run: runs.Run) -> str:
    return runs.load(run.path).status


def test_heavy_runs_queue_one_at_a_time(settings, sleepers):
    first = runs.start(settings, ["1.5"], "dpo")
    second = runs.start(settings, ["0"], "kto")
    assert (first.status, second.status) == ("running", "queued")
    assert [r.status for r in runs.list_runs(settings)] == ["queued", "running"]  # newest first
    # Nobody lists the runs: the end of the first starts the second.
    pid = wait_for("the queued run to start", lambda: runs._read(second.path / runs.RUN)["pid"])
    assert runs.load(second.path).started >= runs.load(first.path).started + 1  # after the first
    wait_for("the second run to be reaped", lambda: not zombie_or_alive(pid))
    assert wait_for("both to end", lambda: {status(first), status(second)} == {"died"})


def test_a_setting_lets_more_runs_run_at_once(settings, sleepers):
    settings = settings.model_copy(update={"max_concurrent_runs": 2})
    a, b = runs.start(settings, ["2"], "dpo"), runs.start(settings, ["2"], "kto")
    c = runs.start(settings, ["0"], "sft")
    assert (a.status, b.status, c.status) == ("running", "running", "queued")
    runs.cancel(c)
    assert status(c) == "cancelled"
    runs.cancel(a)
    runs.cancel(b)
    assert runs.load(c.path).pid == 0  # a cancelled queued run never starts


def fake_checkpoint(folder: Path, parameters: int, vocabulary: int = 49_152, layers: int = 30,
                    hidden: int = 576) -> Path:
    """A safetensors file with only its header and a config.json: the estimate reads nothing
    else (the defaults: the embedded model's shape)."""
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [parameters], "data_offsets": [0, 4 * parameters]}})
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header.encode())
    (folder / "config.json").write_text(json.dumps({"vocab_size": vocabulary, "num_hidden_layers": layers,
                                                    "hidden_size": hidden}))
    return folder


def test_a_run_that_would_not_fit_says_so_before_it_starts(settings, sleepers, monkeypatch, tmp_path):
    model = fake_checkpoint(tmp_path / "model", 135_000_000)
    settings = settings.model_copy(update={"model": str(model)})
    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: False)
    grounded = {"per_device_train_batch_size": 4, "max_length": 1024}
    need = memory.run_estimate(settings, "sft", grounded).need
    assert 9.8 * 2**30 < need < 11 * 2**30  # measured: 9.8 GiB peak
    monkeypatch.setattr(memory, "available", lambda: 5 * 2**30)
    with pytest.raises(RunWontFit, match=r"needs about 10\.5 GB .*4,096 tokens.* 5\.0 GB is free now.*"
                                         r"A batch size of 1 fits \(`--batch-size 1 --grad-accum 8`"):
        runs.start(settings, ["0"], "sft", sizes=grounded)
    assert not settings.runs_dir.exists() or not list(settings.runs_dir.iterdir())  # nothing written

    # The same kind with this machine's default length (256) fits.
    run = runs.start(settings, ["1"], "sft", sizes={"per_device_train_batch_size": 4})
    assert run.status == "running" and runs._read(run.path / runs.RUN)["memory"]["tokens"] == 1024
    # A queued run is checked when it starts; when it is queued, against the machine's memory.
    monkeypatch.setattr(memory, "available", lambda: 2 * 2**30)
    monkeypatch.setattr(memory, "total", lambda: 4 * 2**30)
    with pytest.raises(RunWontFit, match="4.0 GB is free on this machine in all"):
        runs.start(settings, ["0"], "dpo")
    monkeypatch.setattr(memory, "total", lambda: 24 * 2**30)
    queued = runs.start(settings, ["0"], "dpo")
    assert queued.status == "queued"
    # The running run ends with 2 GB free: the queued one is refused instead of started, by
    # the estimate it was queued with (DPO: chosen and rejected, 2,048 tokens).
    wait_for("the queued run to be refused", lambda: status(queued) == "failed", timeout=30)
    error = runs.load(queued.path).error
    assert "needs about 6.0 GB" in error and "2,048 tokens" in error and runs.load(queued.path).pid == 0
    wait_for("the first run to end", lambda: status(run) == "died")
    # A run that ends without a result (the kernel's out-of-memory killer, say) shows its estimate.
    assert "estimated to need about 3.7 GB of memory: a smaller batch size" in runs.load(run.path).error
