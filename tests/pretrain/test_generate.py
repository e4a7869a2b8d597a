"""pretrain.generate over a run's checkpoint: the CLI streams, samples reproduce by seed, stop
strings cut, and an encoder run or an over-long prompt is refused in one line."""

import os
import re

import jax
import pytest

TEXT = "the cat sat on the mat. the dog ran in the park. a bird sang in the tree. " * 40


def _write_run(workdir, config):
  """A run's files and a real orbax checkpoint of a freshly initialised model (no training)."""
  from input_pipeline import tokenizer
  from models import model_config
  from pretrain.objectives import registry
  from pretrain.state import checkpointer, run_files
  from pretrain.training import steps

  if config.data.tokenizer.kind == "wordpiece":
    tok = tokenizer._train_wordpiece([TEXT], 120, True)
  else:
    tok = tokenizer._train_bpe([TEXT], 300, config.data.tokenizer.eos_token)
  m = model_config.resolve(config.model, tok.get_vocab_size())
  params = steps.init_params(registry.get(config.objective), m, jax.random.PRNGKey(0))
  run_files.write_run_files(str(workdir), config, m, tok)
  ckpt = checkpointer.Checkpointer(os.path.join(workdir, "checkpoints"))
  ckpt.save(5, {"params": params}, run_files.run_meta(m, tokenizer.identity(tok), 5, 0), force=True)
  ckpt.close()
  return str(workdir)


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
  from configs import gpt

  config = gpt.get_config("smoke")
  config.model.update(num_layers=2, num_heads=2, d_model=32, max_len=64)
  return _write_run(tmp_path_factory.mktemp("gpt") / "run", config)


@pytest.mark.slow
def test_samples_reproduce_by_seed_and_stop_strings_cut(gpt_dir):
  from pretrain import generate

  run = lambda prompts, **kw: generate.generate(gpt_dir, prompts, max_new_tokens=12, **kw)
  greedy = run(["the cat"], temperature=0.0)
  assert greedy == run(["the cat"], temperature=0.0) and len(greedy) == 1
  sampled = run(["the cat", "a bird"], temperature=1.0, num_samples=3, batch_size=4, seed=7)
  assert [(c.prompt, c.sample) for c in sampled] == [(i, s) for i in range(2) for s in range(3)]
  assert sampled == run(["the cat", "a bird"], temperature=1.0, num_samples=3, batch_size=4, seed=7)
  assert sampled != run(["the cat", "a bird"], temperature=1.0, num_samples=3, batch_size=4, seed=8)
  text = greedy[0][2]
  stop = text[3:5]
  cut = run(["the cat"], temperature=0.0, stop=[stop])[0]
  assert cut.text == text[: text.index(stop) + len(stop)] and cut.stopped == "stop string"
  assert greedy[0].stopped in ("end of text", "max_new_tokens")
  # each completion says why it ended, after how many tokens
  for c in sampled + greedy:
    assert 0 < c.tokens <= 12 and (c.stopped != "max_new_tokens" or c.tokens == 12)


def test_bad_input_is_one_line(gpt_dir, tmp_path):
  from configs import bert
  from pretrain import generate
  from pretrain.state import checkpointer

  with pytest.raises(generate.GenerateError, match="max_len is 64") as e:
    generate.generate(gpt_dir, ["the cat " * 40])
  assert "\n" not in str(e.value)
  config = bert.get_config("smoke")
  config.model.update(num_layers=1, d_model=32, max_len=64)
  encoder_dir = _write_run(tmp_path / "bert", config)
  with pytest.raises(checkpointer.CheckpointError, match="needs a decoder") as e:
    generate.generate(encoder_dir, ["the cat"])
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_streams_one_prompt(gpt_dir, entry_point):
  out = entry_point(
    "pretrain.generate",
    f"--workdir={gpt_dir}",
    "--prompt=the dog",
    "--max_new_tokens=40",
    "--temperature=0",
  )
  assert out.returncode == 0, out.stderr
  from pretrain import generate

  expected = generate.generate(gpt_dir, ["the dog"], max_new_tokens=40, temperature=0.0)[0][2]
  assert out.stdout.rstrip("\n").endswith("the dog" + expected.rstrip("\n")), out.stdout
  assert re.fullmatch(
    r"stopped: (end of text|max_new_tokens) after \d+ tokens", out.stderr.strip().splitlines()[-1]
  ), out.stderr
  bad = entry_point("pretrain.generate", f"--workdir={gpt_dir}", "--prompt=x", "--top_p=0")
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
    "error: --top_p: 0.0 is out of range; use a value in (0, 1]"
  )
