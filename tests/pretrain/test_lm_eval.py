"""pretrain.lm_eval: lm-evaluation-harness runs a local YAML task on our checkpoint with the
same numbers as pretrain.score; our tokenization of requests is lm-eval's; rolling
log-likelihoods and generate_until work on the memorised facts."""

import types

import numpy as np
import pytest

from tests.helpers import REPO

lm_eval = pytest.importorskip("lm_eval")


from lm_eval.api import model as lm_model

from pretrain import lm_eval as ours
from pretrain import score

pytestmark = pytest.mark.xdist_group("capitals")  # one worker builds the shared run

TASKS = REPO / "tests" / "fixtures" / "lm_eval"


def _requests(*args):
  return [types.SimpleNamespace(args=a) for a in args]


@pytest.mark.slow
def test_simple_evaluate_equals_score(capitals_run, monkeypatch, tmp_path):
  import datasets
  from lm_eval import tasks

  workdir, items_file = capitals_run
  monkeypatch.chdir(REPO)  # the YAML's data_files path is relative to the working directory
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
  # step 100: barely trained, where acc and acc_norm differ
  results = lm_eval.simple_evaluate(
    model="pretrain",
    model_args=f"workdir={workdir},step=100,batch_size=16",
    tasks=["capitals"],
    batch_size=1,  # lm-eval's own default, overridden by model_args
    task_manager=tasks.TaskManager(include_path=str(TASKS), include_defaults=False),
  )
  got = results["results"]["capitals"]
  model, cfg, tok, eos_id, _ = score.load(workdir, 100)
  want = score.score_items(model, cfg, tok, eos_id, score.read_items(items_file))
  for metric in ("acc", "acc_norm", "acc_bytes"):
    assert got[f"{metric},none"] == pytest.approx(want[metric], abs=1e-9), (metric, got, want)
  assert got["sample_len"] == want["items"] == 12


class _Tokenized(lm_model.TemplateLM):
  """lm-eval's own request tokenization (TemplateLM) over our tokenizer."""

  def __init__(self, tok, eos_id):
    super().__init__()
    self.tok, self.eos_id, self.seen = tok, eos_id, []

  @property
  def eot_token_id(self):
    return self.eos_id

  def tok_encode(self, string, add_special_tokens=None, **kwargs):
    return score.encode(self.tok, string)

  def _loglikelihood_tokens(self, requests, **kwargs):
    self.seen = [(ctx, cont) for _, ctx, cont in requests]
    return [(0.0, False)] * len(requests)

  def loglikelihood_rolling(self, requests, disable_tqdm=False):
    raise NotImplementedError

  def generate_until(self, requests, disable_tqdm=False):
    raise NotImplementedError


def test_requests_are_tokenized_as_lm_eval_does(capitals_run):
  from pretrain.state import run_files

  tok = run_files.run_tokenizer(capitals_run[0])
  eos_id = tok.token_to_id("<|endoftext|>")
  pairs = [
    ("the capital of france is", " paris"),
    ("the capital of france is  ", "paris."),
    ("", "the capital"),
    ("", "<|endoftext|>the capital"),
    ("a", "bc"),
    ("the capital of", " of"),
    ("x\n", "\ny"),
  ]
  reference = _Tokenized(tok, eos_id)
  reference.loglikelihood(_requests(*pairs), disable_tqdm=True)
  assert [score.encode_pair(tok, eos_id, *p) for p in pairs] == reference.seen


def test_rolling_and_generate_until(capitals_run):
  workdir, _ = capitals_run
  lm = ours.PretrainLM.create_from_arg_string(f"workdir={workdir}", {"batch_size": 4})
  assert (lm.step, lm.batch_size) == (400, 4)
  short = "the capital of france is paris."
  assert lm.loglikelihood_rolling(_requests((short,)))[0] == pytest.approx(
    lm.loglikelihood(_requests(("", short)))[0][0], abs=1e-5
  )
  # longer than max_len: the first window predicts max_len tokens from EOS on, the second the
  # rest, each token from the max_len tokens before it
  text = " ".join(
    f"the capital of {c} is {x}."
    for c, x in [
      ("peru", "lima"),
      ("cuba", "havana"),
      ("italy", "rome"),
      ("chile", "santiago"),
      ("egypt", "cairo"),
    ]
  )
  ids = score.encode(lm.tok, text)
  n, m = len(ids), lm.cfg.max_len
  assert m < n < 2 * m
  first = np.asarray(lm.model(np.array([[lm.eos_id] + ids[: m - 1]], np.int32)), np.float64)[0]
  second = np.asarray(lm.model(np.array([ids[n - m - 1 : n - 1]], np.int32)), np.float64)[0]

  def logp(logits, at, targets):
    top = logits.max(-1, keepdims=True)
    norm = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return norm[at, targets].sum()

  want = logp(first, np.arange(m), ids[:m]) + logp(second, np.arange(2 * m - n, m), ids[m:])
  assert lm.loglikelihood_rolling(_requests((text,)))[0] == pytest.approx(want, abs=1e-4)
  # greedy generation of the memorised facts, cut before the stop string
  gen = {"until": ["."], "max_gen_toks": 6, "do_sample": False}
  assert lm.generate_until(
    _requests(("the capital of france is", gen), ("the capital of kenya is", gen))
  ) == [" paris", " nairobi"]
