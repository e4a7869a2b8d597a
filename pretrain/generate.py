r"""Generates text from a GPT run's checkpoint, with a KV cache (models/decode.py).

  python -m pretrain.generate --workdir=runs/gpt --prompt="def fib(n):" --max_new_tokens=64 \
      --temperature=0.8 --top_p=0.95
  python -m pretrain.generate --workdir=runs/gpt --prompts_file=prompts.txt --num_samples=4 \
      --seed=0 --output=samples.jsonl

One prompt with one sample streams its tokens to stdout as they come. Otherwise each
completion is printed under a header (and written to --output as jsonl: prompt, sample,
text). The checkpoint is the latest (or --step), loaded on one device in the layout it was
saved in; the tokenizer is the run's own. An empty prompt starts a new document (the EOS
token). A prompt must be shorter than the model's max_len (a longer one is refused, not
truncated); --max_new_tokens is cut to what the longest prompt of a batch leaves, with a line
saying so. Generation stops at --max_new_tokens, at EOS, or after any --stop string (cut off);
stderr says which, after how many tokens (an empty sample is end of text sampled first).
"""

import json
import sys
from typing import NamedTuple

from absl import app, flags, logging

from models import decode
from pretrain.devices import process
from pretrain.ground import errors, storage
from pretrain.state import loading


def define_flags():
  """The command line's flags (defined only when run as a program, so that importing this
  module beside other entry points defines no flags twice)."""
  flags.DEFINE_string("workdir", None, "A GPT run's directory.")
  flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
  flags.DEFINE_string("prompt", None, "The prompt ('' starts a new document).")
  flags.DEFINE_string("prompts_file", None, "One prompt per line.")
  flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate at most.")
  flags.DEFINE_float("temperature", 0.8, "0: greedy; higher: more random.")
  flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0: all).")
  flags.DEFINE_float("top_p", 1.0, "Sample from the smallest set of this probability.")
  flags.DEFINE_integer("num_samples", 1, "Completions per prompt.")
  flags.DEFINE_integer("seed", 0, "Seed of the sampling (same seed, same samples).")
  flags.DEFINE_multi_string("stop", [], "Stop a completion after this string.")
  flags.DEFINE_integer("batch_size", 16, "Completions decoded together.")
  flags.DEFINE_string("output", "", "Also write the completions here (jsonl).")
  flags.mark_flags_as_required(["workdir"])


class GenerateError(errors.UserError):
  pass


def load(workdir, step=None):
  """(model, resolved model config, tokenizer, EOS id) of a GPT run; encoders are refused."""
  return loading.load_decoder(workdir, step, "generation")[:4]


def encode_prompts(tok, prompts, eos_id, max_len):
  """Token ids of each prompt ('' -> [EOS]); a one-line error for one that does not fit."""
  out = []
  for i, prompt in enumerate(prompts):
    ids = tok.encode(prompt, add_special_tokens=False).ids if prompt else [eos_id]
    if len(ids) >= max_len:
      raise GenerateError(
        f"--prompt: prompt {i} has {len(ids)} tokens; the model's max_len is "
        f"{max_len}: shorten it to at most {max_len - 1} tokens"
      )
    out.append(ids or [eos_id])
  return out


class Completion(NamedTuple):
  prompt: int  # the prompt's index
  sample: int
  text: str  # the new text, cut after a stop string
  stopped: str  # why it ended: 'end of text', 'stop string', or 'max_new_tokens'
  tokens: int  # new tokens generated (EOS included)


def _stop_at(text, stops):
  """`text` cut after the first stop string, and whether one was found."""
  cuts = [text.index(s) + len(s) for s in stops if s in text]
  return (text[: min(cuts)], True) if cuts else (text, False)


def generate(
  workdir, prompts, *, step=None, max_new_tokens=64, temperature=0.8, top_k=0, top_p=1.0,
  num_samples=1, seed=0, stop=(), batch_size=16, stream=None,
):  # fmt: skip
  """Completions of `prompts` (num_samples each): a list of Completion, in prompt order.
  `stream(text)` receives the text as it is generated (one prompt, one sample)."""
  model, m, tok, eos_id = load(workdir, step)
  ids = encode_prompts(tok, prompts, eos_id, m.max_len)
  jobs = [(i, s) for i in range(len(prompts)) for s in range(num_samples)]
  results = []
  for start in range(0, len(jobs), batch_size):
    batch = jobs[start : start + batch_size]
    rows = [ids[i] for i, _ in batch]
    rows += [rows[0]] * (min(batch_size, len(jobs)) - len(rows))  # one shape for every batch
    room = m.max_len - max(map(len, rows))
    if room < max_new_tokens:
      print(
        f"--max_new_tokens: {max_new_tokens} cut to {room}, what max_len={m.max_len} leaves "
        "after the longest prompt",
        flush=True,
      )
    texts, shown = {}, [""]
    sampling = decode.Sampling(
      max_new_tokens=min(room, max_new_tokens), temperature=temperature, top_k=top_k,
      top_p=top_p, seed=seed + start, eos_id=eos_id, stop=_stop_fn(tok, stop, texts),
    )  # fmt: skip
    on_token = None if stream is None else _streamer(stream, texts, shown)
    new = decode.generate(model, m, rows, sampling, on_token)
    results += [_completion(i, s, texts.get(row), new[row], tok, stop, eos_id)
                for row, (i, s) in enumerate(batch)]  # fmt: skip
    if stream is not None:
      stream(results[0].text[len(shown[0]) :])
  return results


def _stop_fn(tok, stop, texts):
  """decode's stop test: keeps each row's text so far in `texts`, True after a stop string."""

  def stop_fn(row, new):
    texts[row], found = _stop_at(tok.decode(new), stop)
    return found

  return stop_fn


def _streamer(stream, texts, shown):
  """decode's on_token for one prompt and sample: the new text to `stream` as it comes."""

  def on_token(step, new_ids):
    del step, new_ids
    text = texts.get(0, "").rstrip("\ufffd")  # hold back a character still incomplete
    stream(text[len(shown[0]) :])
    shown[0] = text

  return on_token


def _completion(prompt, sample, text, new, tok, stop, eos_id):
  """A row's Completion: its text cut after a stop string, and why it ended."""
  text, found = _stop_at(text if text is not None else tok.decode(new), stop)
  ended = "stop string" if found else "end of text" if new[-1:] == [eos_id] else "max_new_tokens"
  return Completion(prompt, sample, text, ended, len(new))


def describe_stop(completion):
  """'stopped: end of text after 3 tokens' (or a stop string, or max_new_tokens)."""
  return f"stopped: {completion.stopped} after {completion.tokens} tokens"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  process.start()
  process.run_reporting_user_errors(_run)


def _run():
  f = flags.FLAGS
  if (f.prompt is None) == (f.prompts_file is None):
    raise GenerateError("--prompt, --prompts_file: give exactly one of them")
  for name, ok, valid in (
    ("max_new_tokens", f.max_new_tokens > 0, "> 0"),
    ("num_samples", f.num_samples > 0, "> 0"),
    ("batch_size", f.batch_size > 0, "> 0"),
    ("temperature", f.temperature >= 0, ">= 0 (0: greedy)"),
    ("top_k", f.top_k >= 0, ">= 0 (0: all tokens)"),
    ("top_p", 0 < f.top_p <= 1, "in (0, 1]"),
  ):
    if not ok:
      raise GenerateError(f"--{name}: {f[name].value} is out of range; use a value {valid}")
  if f.prompt is not None:
    prompts = [f.prompt]
  else:
    with storage.path(f.prompts_file).open(encoding="utf-8") as file:
      prompts = [line.rstrip("\n") for line in file if line.strip()]
  single = len(prompts) == 1 and f.num_samples == 1
  started = []

  def stream(text):
    if not started:  # the prompt, once the model is loaded
      started.append(print(prompts[0], end="", flush=True))
    print(text, end="", flush=True)

  results = generate(
    f.workdir,
    prompts,
    step=f.step,
    max_new_tokens=f.max_new_tokens,
    temperature=f.temperature,
    top_k=f.top_k,
    top_p=f.top_p,
    num_samples=f.num_samples,
    seed=f.seed,
    stop=f.stop,
    batch_size=f.batch_size,
    stream=stream if single else None,
  )
  if single:
    print(flush=True)
    print(describe_stop(results[0]), file=sys.stderr, flush=True)
  else:
    for c in results:
      print(f"=== prompt {c.prompt} sample {c.sample} ===\n{prompts[c.prompt]}{c.text}", flush=True)
      print(f"prompt {c.prompt} sample {c.sample} {describe_stop(c)}", file=sys.stderr, flush=True)
  if f.output:
    with storage.path(f.output).open("w", encoding="utf-8") as file:
      for c in results:
        file.write(
          json.dumps(
            dict(prompt=prompts[c.prompt], sample=c.sample, text=c.text, stopped=c.stopped)
          )
          + "\n"
        )


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: errors.parse_flags(argv, define_flags))
