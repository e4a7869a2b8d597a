"""pretrain.score: a GPT that memorised facts picks them among other endings and an untrained
one does not; the batched log-likelihoods equal a plain forward pass; bad item files are one
line naming the file and line."""

import json
import os
import re

import jax
import numpy as np
import pytest

from pretrain import score

pytestmark = pytest.mark.xdist_group("capitals")  # one worker builds the shared run


def test_memorised_facts_beat_chance_and_an_untrained_model_does_not(capitals_run, tmp_path):
  workdir, items_file = capitals_run
  row = score.score(workdir, items_file, output=str(tmp_path / "scores.jsonl"))
  assert row["step"] == 400 and row["items"] == 12
  assert row["acc"] >= 0.8 and row["acc_norm"] >= 0.8, row  # 4 endings: chance is 0.25
  with open(tmp_path / "scores.jsonl") as f:
    assert [json.loads(line) for line in f] == [row]
  # the same model with fresh parameters (placed as the loaded ones: no new compile)
  from pretrain.objectives import registry
  from pretrain.state import loading
  from pretrain.training import steps

  _, cfg, tok, eos_id, _ = score.load(workdir)
  params = steps.init_params(registry.get("causal_lm"), cfg, jax.random.PRNGKey(1))
  params = jax.device_put(params, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  untrained = loading.with_params("causal_lm", cfg, params)
  chance = score.score_items(untrained, cfg, tok, eos_id, score.read_items(items_file))
  assert chance["acc"] <= 0.5 and chance["acc_norm"] <= 0.5, chance


def _by_hand(model, cfg, tok, eos_id, requests):
  """(sum of log p, all argmax) of each request from one forward pass over all of them
  (right-padded to max_len: causal, so the padding changes nothing before it), tokenized as
  lm-eval does (written out for these requests)."""
  rows = []
  for context, continuation in requests:
    if not context:
      ctx, cont = [eos_id], score.encode(tok, continuation)
    else:  # trailing spaces move to the continuation; words are whole tokens here
      stripped = context.rstrip()
      ctx = score.encode(tok, stripped)
      cont = score.encode(tok, stripped + context[len(stripped) :] + continuation)[len(ctx) :]
    rows.append(((ctx + cont)[-(cfg.max_len + 1) :][:-1], cont))
  tokens = np.zeros((len(rows), cfg.max_len), np.int32)
  for i, (inp, _) in enumerate(rows):
    tokens[i, : len(inp)] = inp
  logits = np.asarray(model(tokens), np.float64)
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  out = []
  for i, (inp, cont) in enumerate(rows):
    at = np.arange(len(inp) - len(cont), len(inp))  # the positions that predict `cont`
    out.append((float(logp[i, at, cont].sum()), bool((logits[i, at].argmax(-1) == cont).all())))
  return out


def test_loglikelihoods_equal_a_full_forward_pass(capitals_run):
  model, cfg, tok, eos_id, _ = score.load(capitals_run[0])
  long_context = "the capital of spain is madrid. " * 5 + "the capital of peru is"
  requests = [
    ("the capital of france is", " paris"),
    ("the capital of france is", " rome"),
    ("", "the capital of chile is santiago."),
    ("the capital of peru is ", "lima"),
    (long_context, " lima"),
    ("the capital of peru is", " lima"),
  ]
  assert len(score.encode(tok, long_context)) > cfg.max_len  # left-truncated
  # batches of 2: several chunks of two lengths, reordered by length and back
  got = score.loglikelihoods(model, cfg, tok, requests, eos_id, batch_size=2)
  want = _by_hand(model, cfg, tok, eos_id, requests)
  np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=0, atol=1e-5)
  assert [g[1] for g in got] == [w[1] for w in want]
  assert got[0][1] and not got[1][1] and got[0][0] > got[1][0]  # the memorised city is greedy
  assert got[3] == got[5] and got[4][1]  # a trailing space moves to the continuation


@pytest.mark.parametrize(
  "line, message",
  [
    ("{not json", "not JSON"),
    ('["a"]', "not a JSON object"),
    ('{"endings": ["a", "b"], "label": 0}', "needs 'context'"),
    ('{"context": "x", "endings": ["a"], "label": 0}', "at least 2 non-empty strings"),
    ('{"context": "x", "endings": ["a", ""], "label": 0}', "at least 2 non-empty strings"),
    ('{"context": "x", "endings": ["a", "b"], "label": 2}', "0 to 1); got 2"),
    ('{"context": "x", "endings": ["a", "b"]}', "got None"),
  ],
)
def test_bad_item_lines_are_one_line_errors(tmp_path, line, message):
  path = tmp_path / "items.jsonl"
  good = json.dumps(dict(ctx="HellaSwag's own key", endings=["a", "b"], label="1"))
  path.write_text(good + "\n\n" + line + "\n")
  pattern = re.escape(f"--tasks_file: {path}:3: ") + ".*" + re.escape(message)
  with pytest.raises(score.ScoreError, match=pattern) as e:
    score.read_items(str(path))
  assert "\n" not in str(e.value)
  assert score.read_items(str(path), limit=1) == [("HellaSwag's own key", ["a", "b"], 1)]


@pytest.mark.slow
def test_cli_prints_a_line_and_appends_a_row(capitals_run, tmp_path, entry_point):
  workdir, items_file = capitals_run
  run = lambda *args: entry_point("pretrain.score", f"--workdir={workdir}", *args)
  out = run(f"--tasks_file={items_file}", "--step=200", "--limit=4")
  assert out.returncode == 0, out.stderr
  with open(os.path.join(workdir, "score.jsonl")) as f:
    row = json.loads(f.readlines()[-1])
  assert row["step"] == 200 and row["items"] == 4 and row["file"] == items_file
  assert out.stdout.startswith(f"step 200: acc {row['acc']:.4f} | acc_norm"), out.stdout
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"context": "x"}\n')
  out = run(f"--tasks_file={bad}")
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
    f"error: --tasks_file: {bad}:1: needs 'endings', a list of at least 2 non-empty strings"
  )
