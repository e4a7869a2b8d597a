"""GPT-3's configs: the published sizes and the recipe (schedule, batch ramp, run length)."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import gpt3
from models import decoder, layers, model_config
from pretrain.training import durations, metrics, optimizer, steps, trainer

# Table 2.1's parameter counts
PUBLISHED = {
  "small": 125e6,
  "medium": 350e6,
  "large": 760e6,
  "xl": 1.3e9,
  "2.7b": 2.7e9,
  "6.7b": 6.7e9,
  "13b": 13.0e9,
  "175b": 175.0e9,
}


@pytest.mark.parametrize("size", PUBLISHED)
def test_each_size_has_its_published_parameter_count(size):
  config = gpt3.get_config(size)
  cfg = model_config.resolve(config.model, config.data.tokenizer.vocab_size)
  assert (cfg.max_len, cfg.d_ff, cfg.vocab_size) == (2048, 4 * cfg.d_model, 50304)
  count = layers.count_params(lambda: decoder.Decoder(cfg, rngs=nnx.Rngs(0)), False)
  assert abs(count / PUBLISHED[size] - 1) < 0.02, count


def test_the_recipe():
  config = gpt3.get_config("175b")
  opt, batch = config.optimizer, config.batch
  assert (opt.b1, opt.b2, opt.eps, opt.grad_clip, opt.weight_decay) == (0.9, 0.95, 1e-8, 1.0, 0.1)
  assert (opt.lr, opt.min_lr, batch.size, batch.seq_len) == (0.6e-4, 0.6e-5, 1536, 2048)
  tokens_per_step = batch.size * batch.seq_len
  total = durations.total_steps(config, None)
  assert total == pytest.approx(300e9 / tokens_per_step, abs=1)
  lr = optimizer.schedule(opt, total)
  assert float(lr(opt.warmup_steps)) == pytest.approx(opt.lr, rel=1e-3)
  assert opt.warmup_steps * tokens_per_step == pytest.approx(375e6, rel=0.01)
  decayed = round(260 / 300 * total)  # the cosine ends at 260B tokens, then holds 10%
  assert float(lr(decayed // 2)) > 0.5 * opt.lr
  for step in (decayed, total - 1):
    assert float(lr(step)) == pytest.approx(opt.min_lr, rel=1e-3)
  # the batch grows from 32k tokens, in microbatches of 16 sequences, over the first 12B tokens
  rows = steps.batch_schedule(batch)
  assert int(rows(0)) * batch.seq_len == 32768 and int(rows(batch.warmup_steps)) == batch.size
  ramp = int(rows(np.arange(batch.warmup_steps)).sum()) * batch.seq_len
  assert ramp == pytest.approx(12e9, rel=0.02)  # (rounded up to whole microbatches)


@pytest.mark.slow
def test_the_smoke_recipe_trains(data_dir, tmp_path):
  config = gpt3.get_config("smoke")
  config.data.data_dir = data_dir
  config.train.update(total_tokens=0, total_steps=6, log_every=3, eval_every=0, peak_flops=1e12)
  config.batch.warmup_steps = 4
  config.checkpoint.update(every=0, async_save=False)
  result = trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  rows = [r for r in metrics.read_rows(tmp_path / "metrics.jsonl") if "train/loss" in r]
  assert result.step == 6 and np.isfinite(rows[-1]["train/loss"])
