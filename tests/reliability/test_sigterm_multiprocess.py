"""SIGTERM to one of 2 jax.distributed processes: JAX's preemption service agrees on a step,
both processes checkpoint it and exit 0, and the run resumes from there."""

import signal
import sys
import time

import pytest

from tests import helpers


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step(tmp_path, data_dir):
  workdir = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.data.tokenizer.vocab_size=256",
    "--config.model.num_layers=1",
    "--config.model.d_model=32",
    "--config.model.num_heads=2",
    "--config.model.max_len=32",
    "--config.batch.seq_len=32",
    "--config.train.total_steps=100000",
    "--config.train.log_every=5",
    "--config.train.eval_every=0",
    "--config.checkpoint.every=0",
    "--config.train.peak_flops=1e12",
  ]
  running = helpers.processes(cmd, devices_per_process=2)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().strip()):
    assert all(r.proc.poll() is None for r in running), "".join(running[0].lines)[-3000:]
    assert time.time() < deadline, "no step logged"
    time.sleep(0.2)
  running[1].signal(signal.SIGTERM)  # process 1 only
  codes, (out0, out1) = helpers.finish_all(running)
  assert codes == [0, 0], out0[-3000:] + out1[-3000:]
  [line] = [l for l in out0.splitlines() if "preempted: saved a checkpoint at step" in l]
  assert "preempted" not in out1  # process 0 logs; both took part in the save
  step = int(line.split("at step ")[1].split(";")[0])
  saved = [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved == [str(step)]
  codes, (out0, out1) = helpers.finish_all(
    helpers.processes(cmd + [f"--config.train.stop_at_step={step + 5}"], devices_per_process=2)
  )
  assert codes == [0, 0], out0[-3000:] + out1[-3000:]
  assert f"resumed from step {step} of 100000" in out0
