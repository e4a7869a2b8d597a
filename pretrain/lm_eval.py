r"""Our GPT checkpoints as an lm-evaluation-harness model, registered as "pretrain".

  python -m pretrain.lm_eval --model_args workdir=runs/gpt --tasks capitals --include_path tasks/
  python -m pretrain.lm_eval --model_args workdir=runs/gpt,step=1000,batch_size=64 \
      --tasks capitals --include_path tasks/ --output_path results/

The command is lm-eval's own (`lm_eval.__main__.cli_evaluate`, every option of `lm-eval run`)
with this module imported, so that the model is registered, and `--model pretrain` added when no
--model is given. From Python: `import pretrain.lm_eval` and then
`lm_eval.simple_evaluate(model="pretrain", model_args="workdir=runs/gpt", ...)`.

model_args: workdir (a GPT run), step (default: the latest checkpoint), batch_size (sequences
per forward pass; default lm-eval's --batch_size, 'auto' meaning 32), max_gen_toks (default for
generate_until: min(256, max_len // 2)), seed (of sampled generations). The model runs on JAX's
default device; lm-eval's --device is ignored.

* loglikelihood: `pretrain.score.loglikelihoods` (lm-eval's tokenization of the pair, left
  truncation to max_len, is_greedy).
* loglikelihood_rolling: the whole text's log-likelihood from the EOS token on, in max_len
  windows, each predicting new tokens with the most context that fits (lm-eval's
  `get_rolling_token_windows` with context_len=1, as its HF model).
* generate_until: KV-cache decoding (models/decode.py), greedy unless the task asks for
  do_sample/temperature; stops at EOS or once a stop string (`until`) appears, and the text is
  cut before the first stop string. As lm-eval's HF model, the context is left-truncated to
  max_len - max_gen_toks (max_gen_toks is capped at max_len - 1).
"""

import json
import sys

from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from models import decode
from pretrain import score
from pretrain.devices import process
from pretrain.ground import errors

DEFAULT_BATCH = 32


def _batch_size(value):
  """An int from model_args/--batch_size (an int, '16', 'auto' or 'auto:N' -> the default)."""
  if value is None or (isinstance(value, str) and value.startswith("auto")):
    return DEFAULT_BATCH
  size = int(value)
  if size < 1:
    raise score.ScoreError(f"model_args: batch_size={value!r}; give a positive integer")
  return size


class PretrainLM(LM):
  """A GPT run's checkpoint (model_args: workdir, step, batch_size, max_gen_toks, seed)."""

  def __init__(
    self,
    workdir,
    step=None,
    batch_size=None,
    max_gen_toks=None,
    seed=0,
    max_batch_size=None,
    device=None,
  ):
    super().__init__()
    del max_batch_size, device  # JAX places the model; the batch size is fixed
    self.batch_size = _batch_size(batch_size)
    self.model, self.cfg, self.tok, self.eos_id, self.step = score.load(
      workdir, None if step in (None, "") else int(step)
    )
    self.max_gen_toks = (
      min(256, self.cfg.max_len // 2) if max_gen_toks is None else int(max_gen_toks)
    )
    self.seed = int(seed)

  @classmethod
  def create_from_arg_obj(cls, arg_dict, additional_config=None):
    """model_args win over lm-eval's own options (its --batch_size has a default of 1)."""
    extra = {
      k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict
    }
    return cls(**arg_dict, **extra)

  @classmethod
  def create_from_arg_string(cls, arg_string, additional_config=None):
    return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string), additional_config)

  # ------------------------------------------------------------------------ log-likelihoods

  def loglikelihood(self, requests, disable_tqdm=False):
    del disable_tqdm
    args = [tuple(req.args) for req in requests]
    results = score.loglikelihoods(
      self.model, self.cfg, self.tok, args, self.eos_id, self.batch_size
    )
    for arg, result in zip(args, results):
      self.cache_hook.add_partial("loglikelihood", arg, result)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm=False):
    del disable_tqdm
    pairs, owners = [], []
    for i, req in enumerate(requests):
      (text,) = req.args
      windows = lm_utils.get_rolling_token_windows(
        token_list=score.encode(self.tok, text),
        prefix_token=self.eos_id,
        max_seq_len=self.cfg.max_len,
        context_len=1,
      )
      for window in map(lm_utils.make_disjoint_window, windows):
        pairs.append(window)
        owners.append(i)
    totals = [0.0] * len(requests)
    for i, (ll, _) in zip(
      owners, score.loglikelihood_tokens(self.model, self.cfg, pairs, self.batch_size)
    ):
      totals[i] += ll
    for req, total in zip(requests, totals):
      self.cache_hook.add_partial("loglikelihood_rolling", tuple(req.args), total)
    return totals

  # ----------------------------------------------------------------------------- generation

  def _settings(self, kwargs):
    """(stop strings, new tokens, decode.Sampling fields) of a request's generation kwargs."""
    until = kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    new = next(
      (
        kwargs[k]
        for k in ("max_gen_toks", "max_new_tokens", "max_tokens")
        if kwargs.get(k) is not None
      ),
      self.max_gen_toks,
    )
    new = int(new)
    if new >= self.cfg.max_len:
      errors.warn(
        f"max_gen_toks={new} cut to {self.cfg.max_len - 1}: the model's max_len is "
        f"{self.cfg.max_len}"
      )
      new = self.cfg.max_len - 1
    temperature = float(kwargs.get("temperature") or 0.0)
    do_sample = kwargs.get("do_sample")
    if do_sample is False:
      temperature = 0.0
    elif do_sample and temperature == 0.0:
      temperature = 1.0  # transformers' default for do_sample without a temperature
    sampling = dict(
      temperature=temperature,
      top_k=int(kwargs.get("top_k") or 0),
      top_p=float(kwargs.get("top_p") or 1.0),
    )
    return [s for s in until if s], max(new, 1), sampling

  def generate_until(self, requests, disable_tqdm=False):
    del disable_tqdm
    groups = {}  # requests with the same generation kwargs decode together
    for i, req in enumerate(requests):
      groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
    results = [None] * len(requests)
    for indices in groups.values():
      until, new, sampling = self._settings(requests[indices[0]].args[1])
      size = decode.bucket(len(indices), self.batch_size, smallest=1)
      for start in range(0, len(indices), size):
        chunk = indices[start : start + size]
        rows = []
        for i in chunk:
          context = requests[i].args[0]
          ids = score.encode(self.tok, context) if context else []
          rows.append(ids[-(self.cfg.max_len - new) :] or [self.eos_id])
        rows += [rows[0]] * (size - len(rows))  # one shape for every batch

        def stop(row, ids):
          return any(s in self.tok.decode(ids) for s in until)

        new_ids = decode.generate(
          self.model,
          self.cfg,
          rows,
          decode.Sampling(
            max_new_tokens=new, seed=self.seed + start, eos_id=self.eos_id, stop=stop, **sampling
          ),
        )
        for row, i in enumerate(chunk):
          ids = [t for t in new_ids[row] if t != self.eos_id]
          text = self.tok.decode(ids)
          for s in until:  # lm-eval's postprocess_generated_text
            text = text.split(s)[0]
          results[i] = text
          self.cache_hook.add_partial("generate_until", tuple(requests[i].args), text)
    return results


def main():
  """lm-eval's command line, with this model registered (and `--model pretrain` by default)."""
  from lm_eval import __main__ as lm_main  # lm-eval's CLI: heavy, only here

  args = sys.argv[1:]
  if (
    args
    and args[0] not in ("ls", "list", "validate")
    and not any(a in ("--model", "-M") or a.startswith("--model=") for a in args)
  ):
    sys.argv = [sys.argv[0]] + args + ["--model", "pretrain"]
  try:
    process.run_reporting_user_errors(lm_main.cli_evaluate)
  except ValueError as e:  # lm-eval's own usage errors (an unknown task, bad model_args)
    errors.fail(f"lm-eval: {e}")


if __name__ == "__main__":
  from pretrain import lm_eval as _registered

  _registered.main()  # the importable module's class is the one registered, once
else:
  register_model("pretrain")(PretrainLM)
