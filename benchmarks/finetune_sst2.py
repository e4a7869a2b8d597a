r"""SST-2 fine-tuning from a pretrained encoder against the same model from random weights; and
two pretraining recipes against each other for the same time.

  JAX_PLATFORMS=cpu python -m benchmarks.finetune_sst2 --workdir=/tmp/finetune_sst2
  # the modern recipe against classic BERT for the same time, each against random init,
  # fine-tuned 2 epochs on mean-pooled states, 3 seeds:
  JAX_PLATFORMS=cpu python -m benchmarks.finetune_sst2 --recipe=modern --compare=bert \
    --pretrain_steps=3000 --pretrain_lr=2e-3 --pretrain_warmup=200 --compare_lr=1e-3 \
    --labelled=0:2 --seeds=3 --pack --finetune_batch=8 --finetune_lr=3e-4 --pooling=mean
  # the same fine-tuning again, other flags, on the pretraining runs already in --workdir:
  ... --reuse_pretraining --labelled=0:1,2000:10 --pooling=cls

Data: GLUE SST-2's own TSV files (train.tsv 67,349 rows, dev.tsv 872 rows,
`sentence<TAB>label` with a header), by default in ../shared/data/sst2 beside the checkout
(--sst2_dir). benchmarks/RESULTS.md has the measured tables.

1. Pretraining (configs/bert.py:<--size>,recipe=<--recipe>,seq=64; --pretrain_steps x 64
   sequences at --pretrain_lr after --pretrain_warmup steps): task-adaptive pretraining
   (Gururangan et al. 2020) on the SST-2 *training* sentences only, without their labels:
   the 67,349 train.tsv sentences, in file order, written one per line to
   <workdir>/sst2_train_text.txt, with a blank line after every --doc_lines lines (documents
   for the BERT recipe's sentence pairs; the RoBERTa and modern recipes pack them). No other
   text; the dev set is never seen in pretraining. A WordPiece tokenizer (uncased,
   --vocab_size) is trained on the same text. 5% of the documents are held out for the MLM
   evaluation. --compare=R pretrains recipe R too, at --compare_lr, for as many steps as take
   the time the first recipe's steps took (its step time measured by a 60-step run first).
2. Fine-tuning from each pretrained model: configs/finetune/glue.py:sst2 with
   --config.init_from=<pretrain run>, the recipe's defaults (AdamW, warmup over 10% of the
   steps and linear decay to 0, weight decay 0.01, dropout 0.1) except the lr (--finetune_lr,
   or --pretrained_lr for this start; the recipe's 3e-5 is for BERT-base), seq 64, batch
   --finetune_batch rows (--pack: several sentences a row), the classifier on --pooling
   ([CLS] or the mean of the states), on each --labelled setting (all 67,349 rows, or a seeded
   sample of N, for its epochs), --seeds seeds.
3. Fine-tuning from a random initialisation: the same config with the pretraining run's model
   section and tokenizer (data.tokenizer.kind=file), so the only difference is the initial
   weights of the backbone.

Prints a table per recipe (pretraining steps, time, tokens/s, held-out MLM; for each labelled
setting and start the final dev accuracy of each seed, their mean and spread, and the gain)
and writes <workdir>/summary.json. Wall times include data preparation, tokenization and
compilation; everything runs in this process.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import pathlib
import random
import shutil
import statistics
import time

from absl import app, flags

from configs import bert
from configs.finetune import glue as glue_config
from input_pipeline import masking
from pretrain.devices import host_memory
from pretrain.state import run_files
from pretrain.training import trainer

_REPO = pathlib.Path(__file__).resolve().parents[1]

_SST2_DIR = flags.DEFINE_string(
  "sst2_dir",
  str(_REPO.parent / "shared/data/sst2"),
  "Directory with GLUE SST-2's train.tsv and dev.tsv.",
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/finetune_sst2", "Scratch directory (wiped).")
_SIZE = flags.DEFINE_string(
  "size", "tiny", "Encoder size (models/encoder.py SIZES, or MODERN_SIZES for recipe=modern)."
)
_RECIPE = flags.DEFINE_enum(
  "recipe", "roberta", bert.RECIPES, "Pretraining recipe: bert, roberta or modern."
)
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 1000, "Pretraining steps.")
_PRETRAIN_BATCH = flags.DEFINE_integer("pretrain_batch", 64, "Pretraining batch (sequences).")
_PRETRAIN_LR = flags.DEFINE_float("pretrain_lr", 1e-3, "Pretraining peak learning rate.")
_PRETRAIN_WARMUP = flags.DEFINE_integer("pretrain_warmup", 100, "Pretraining warmup steps.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8192, "WordPiece vocabulary to train.")
_DOC_LINES = flags.DEFINE_integer("doc_lines", 8, "SST-2 sentences per pretraining document.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 64, "Sequence length, pretraining and fine-tuning.")
_FINETUNE_EPOCHS = flags.DEFINE_float("finetune_epochs", 1.0, "Fine-tuning epochs.")
_FINETUNE_LR = flags.DEFINE_float("finetune_lr", 1e-4, "Fine-tuning peak learning rate.")
_PRETRAINED_LR = flags.DEFINE_float(
  "pretrained_lr", 0.0, "Fine-tuning lr from the pretrained model (0: --finetune_lr)."
)
_FINETUNE_BATCH = flags.DEFINE_integer("finetune_batch", 32, "Fine-tuning batch (rows).")
_PACK = flags.DEFINE_bool(
  "pack", False, "Fine-tune on packed rows (data.pack_examples): several sentences a row."
)
_EVALS_PER_EPOCH = flags.DEFINE_integer(
  "evals_per_epoch", 2, "Dev evaluations per fine-tuning epoch."
)
_POOLING = flags.DEFINE_enum(
  "pooling",
  "cls",
  ["cls", "mean"],
  "What the classifier reads (model.classifier_pooling): [CLS], or the mean of the states.",
)
_REUSE = flags.DEFINE_bool(
  "reuse_pretraining",
  False,
  "Keep --workdir's pretraining runs of an earlier run of this benchmark (its summary.json) "
  "and only fine-tune again, with this run's fine-tuning flags.",
)
_SKIP_RANDOM = flags.DEFINE_bool("skip_random", False, "Only the pretrained fine-tuning run.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Fine-tuning seeds of each initialisation.")
_COMPARE_LR = flags.DEFINE_float(
  "compare_lr", 0.0, "The --compare recipe's pretraining lr (0: --pretrain_lr)."
)
_LABELLED = flags.DEFINE_list(
  "labelled",
  ["0"],
  "The fine-tuning data, each 'N' or 'N:EPOCHS': N labelled train.tsv rows (a seeded sample; "
  "0: all 67,349) for EPOCHS epochs (default --finetune_epochs), while pretraining reads every "
  "training sentence without its label (semi-supervised), e.g. --labelled=0:1,2000:10.",
)
_COMPARE = flags.DEFINE_enum(
  "compare",
  "",
  ["", *bert.RECIPES],
  "Also pretrain this recipe for the same time as --recipe's steps took (calibrated by a "
  "60-step run), and fine-tune it the same way: e.g. --recipe=modern --compare=bert.",
)


def write_corpus(train_tsv, out, doc_lines):
  """SST-2's training sentences without labels, `doc_lines` a document; returns the count."""
  with open(train_tsv, encoding="utf-8") as f:
    rows = f.read().split("\n")
  header = rows[0].split("\t")
  column = header.index("sentence")
  sentences = [r.split("\t")[column].strip() for r in rows[1:] if r.strip()]
  with open(out, "w", encoding="utf-8") as f:
    for i in range(0, len(sentences), doc_lines):
      f.write("\n".join(sentences[i : i + doc_lines]) + "\n\n")
  return len(sentences)


def labelled_subset(train_tsv, out, n):
  """`n` rows of train.tsv (a seeded sample, header kept) written to `out`; returns `out`."""
  with open(train_tsv, encoding="utf-8") as f:
    header, *rows = [r for r in f.read().split("\n") if r.strip()]
  picked = sorted(random.Random(0).sample(range(len(rows)), n))
  with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join([header] + [rows[i] for i in picked]) + "\n")
  return out


def pretrain_config(corpus, data_dir, recipe=None, steps=None, lr=None):
  recipe = recipe or _RECIPE.value
  config = bert.get_config(f"{_SIZE.value},recipe={recipe},seq={_SEQ_LEN.value}")
  config.data.update(
    files=corpus, data_dir=data_dir, doc_split="blank_line", validation_fraction=0.05
  )
  config.data.tokenizer.vocab_size = _VOCAB_SIZE.value
  config.data.mlm.max_predictions = masking.required_predictions(
    _SEQ_LEN.value, config.data.mlm.mask_prob
  )
  config.batch.update(size=_PRETRAIN_BATCH.value, seq_len=_SEQ_LEN.value)
  config.batch.update(grad_accum=1, warmup_steps=0)  # (the modern recipe's ramp is for pods)
  config.model.max_len = max(config.model.max_len, _SEQ_LEN.value)
  config.optimizer.update(lr=lr or _PRETRAIN_LR.value, warmup_steps=_PRETRAIN_WARMUP.value)
  steps = steps or _PRETRAIN_STEPS.value
  config.train.update(
    total_steps=steps, log_every=max(1, steps // 10), eval_every=max(1, steps // 2), eval_batches=20
  )
  config.checkpoint.update(every=0, keep=1)
  return config


def finetune_config(
  files, data_dir, n_train, seed, init_from=None, tokenizer=None, model=None, epochs=None
):
  """glue.py:sst2 from `init_from`'s model, or the same model (`model`, the pretraining run's
  section) from scratch with `tokenizer`."""
  config = glue_config.get_config(f"sst2,size=from_init,seq={_SEQ_LEN.value}")
  config.data.update(files=files, data_dir=data_dir)
  config.seed = seed
  if init_from:
    config.init_from = init_from
  else:
    config.model.update(model, nsp_head=False, num_labels=config.model.num_labels)
    config.model.dropout = 0.1
    config.data.tokenizer.update(kind="file", path=tokenizer)
  config.model.classifier_pooling = _POOLING.value
  config.batch.size = _FINETUNE_BATCH.value
  config.data.pack_examples = _PACK.value
  config.optimizer.lr = (init_from and _PRETRAINED_LR.value) or _FINETUNE_LR.value
  per_epoch = -(-n_train // _FINETUNE_BATCH.value)
  config.train.update(
    epochs=epochs or _FINETUNE_EPOCHS.value,
    log_every=200,
    # (packed rows: their count is known once packed, so once an epoch, the recipe's)
    eval_every=-1 if _PACK.value else max(1, -(-per_epoch // _EVALS_PER_EPOCH.value)),
  )
  return config


def timed_run(config, workdir):
  start = time.perf_counter()
  result = trainer.train_and_evaluate(config, workdir)
  return result, time.perf_counter() - start


def finetune_summary(result, wall, workdir):
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    record = json.load(f)
  history = record["history"]
  return {
    "best_dev_accuracy": record["best"]["accuracy"],
    "best_step": record["best"]["step"],
    "final_dev_accuracy": history[-1]["accuracy"],
    "steps": result.step,
    "wall_s": round(wall, 1),
    "per_epoch": [(h["epoch"], round(h["accuracy"], 4)) for h in history],
  }


def median_step_time(workdir):
  """The run's median seconds a training step (its metrics.jsonl, the first log left out)."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  times = [r["train/step_time_s"] for r in rows if "train/step_time_s" in r]
  return statistics.median(times[1:] or times)


def equal_time_steps(corpus, data_dir, recipe, seconds):
  """Steps of `recipe` that take `seconds` of training, from a 60-step run's step time."""
  probe = os.path.join(_WORKDIR.value, f"probe-{recipe}")
  config = pretrain_config(corpus, data_dir, recipe, steps=60, lr=_COMPARE_LR.value)
  config.train.update(log_every=10, eval_every=0)
  trainer.train_and_evaluate(config, probe)
  return max(1, round(seconds / median_step_time(probe)))


def earlier_pretraining():
  """{recipe: pretraining summary} of --workdir's earlier run (--reuse_pretraining), whose
  fine-tuning runs are removed; else {} after wiping --workdir."""
  path = os.path.join(_WORKDIR.value, "summary.json")
  if not _REUSE.value:
    shutil.rmtree(_WORKDIR.value, ignore_errors=True)
    return {}
  if not os.path.exists(path):
    raise app.UsageError(f"--reuse_pretraining: no {path} of an earlier run to reuse")
  with open(path, encoding="utf-8") as f:
    runs = json.load(f)["runs"]
  for old in pathlib.Path(_WORKDIR.value).glob("sst2-*"):
    shutil.rmtree(old)
  return {r["pretrain"]["recipe"]: r["pretrain"] for r in runs}


def pretrain(corpus, data_dir, recipe, steps, lr=None):
  """One pretraining run; its summary."""
  pre_dir = os.path.join(_WORKDIR.value, f"pretrain-{recipe}")
  pre, wall = timed_run(pretrain_config(corpus, data_dir, recipe, steps, lr), pre_dir)
  step_time = median_step_time(pre_dir)
  tokens = _PRETRAIN_BATCH.value * _SEQ_LEN.value
  return {
    "recipe": recipe,
    "lr": lr or _PRETRAIN_LR.value,
    "dir": pre_dir,
    "steps": pre.step,
    "batch": _PRETRAIN_BATCH.value,
    "wall_s": round(wall, 1),
    "train_s": round(step_time * pre.step, 1),
    "tokens_per_s": round(tokens / step_time),
    "eval_mlm_accuracy": pre.metrics.get("eval_mlm_accuracy"),
    "eval_mlm_loss": pre.metrics.get("eval_mlm_loss"),
    "eval_nsp_accuracy": pre.metrics.get("eval_nsp_accuracy"),
  }


def compare(corpus, data_dir, first):
  """--compare's recipe, pretrained for as long as the `first` recipe's steps took."""
  steps = equal_time_steps(corpus, data_dir, _COMPARE.value, first["train_s"])
  return pretrain(corpus, data_dir, _COMPARE.value, steps, _COMPARE_LR.value)


def labelled_settings(train_tsv, n_sentences):
  """(name, rows, epochs, file) of each --labelled setting."""
  out = []
  for item in _LABELLED.value:
    n, _, epochs = item.partition(":")
    n, epochs = int(n), float(epochs or _FINETUNE_EPOCHS.value)
    path = train_tsv
    if n:
      path = labelled_subset(train_tsv, os.path.join(_WORKDIR.value, f"labelled-{n}.tsv"), n)
    out.append(
      (f"{n or n_sentences:,} labelled, {epochs:g} epochs", n or n_sentences, epochs, path)
    )
  return out


def finetune_both(settings, dev_tsv, data_dir, pre):
  """Fine-tuning from the pretrained model and from random init, --seeds each, on each of the
  labelled `settings`: {setting: {start: [summaries]}}."""
  starts = [("pretrained", dict(init_from=pre["dir"]))]
  if not _SKIP_RANDOM.value:
    model = run_files.run_config(pre["dir"]).model.to_dict()
    model["size"] = _SIZE.value
    tok = os.path.join(pre["dir"], "tokenizer.json")
    starts.append(("random init", dict(tokenizer=tok, model=model)))
  out = {}
  for setting, n, epochs, train_file in settings:
    out[setting] = {}
    for name, kw in starts:
      out[setting][name] = []
      for seed in range(_SEEDS.value):
        tag = f"{pre['recipe']}-{n}-{name.replace(' ', '-')}-{seed}"
        workdir = os.path.join(_WORKDIR.value, f"sst2-{tag}")
        files = f"{train_file},{dev_tsv}"
        config = finetune_config(files, data_dir, n, seed, epochs=epochs, **kw)
        result, wall = timed_run(config, workdir)
        out[setting][name].append(finetune_summary(result, wall, workdir))
  return out


def print_recipe(pre, tuned):
  nsp = pre["eval_nsp_accuracy"]
  print(
    f"\n{pre['recipe']} ({_SIZE.value}, seq {_SEQ_LEN.value}): pretraining {pre['steps']} steps x "
    f"{pre['batch']} at lr {pre['lr']:g}, {pre['train_s']:.0f} s of steps ({pre['wall_s']:.0f} s in all), "
    f"{pre['tokens_per_s']:,} tokens/s, held-out MLM acc {pre['eval_mlm_accuracy']:.3f} "
    f"(loss {pre['eval_mlm_loss']:.3f})" + (f", NSP acc {nsp:.3f}" if nsp is not None else "")
  )
  print(
    "| fine-tuning data | start | final dev acc, each seed | mean | std | steps | wall (mean) |"
  )
  print("|---|---|---|---|---|---|---|")
  for setting, starts in tuned.items():
    means = {}
    for name, runs in starts.items():
      accs = [r["final_dev_accuracy"] for r in runs]
      means[name] = statistics.mean(accs)
      walls = statistics.mean(r["wall_s"] for r in runs)
      print(
        f"| {setting} | {name} | {', '.join(f'{a:.4f}' for a in accs)} | {means[name]:.4f} | "
        f"{statistics.pstdev(accs):.4f} | {runs[0]['steps']} | {walls:.0f} s |"
      )
    if len(means) == 2:
      gain = means["pretrained"] - means["random init"]
      print(f"| {setting} | gain (difference of the means) | | **{gain:+.4f}** | | | |")


def main(argv):
  del argv
  host_memory.configure()  # as the entry points do (pretrain.devices.process.start)
  train_tsv = os.path.join(_SST2_DIR.value, "train.tsv")
  dev_tsv = os.path.join(_SST2_DIR.value, "dev.tsv")
  for path in (train_tsv, dev_tsv):
    if not os.path.exists(path):
      raise app.UsageError(f"--sst2_dir: {path} not found (GLUE SST-2's TSV files)")
  earlier = earlier_pretraining()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  data_dir = os.path.join(_WORKDIR.value, "data")
  corpus = os.path.join(_WORKDIR.value, "sst2_train_text.txt")
  n_sentences = write_corpus(train_tsv, corpus, _DOC_LINES.value)
  settings = labelled_settings(train_tsv, n_sentences)
  first = earlier.get(_RECIPE.value) or pretrain(
    corpus, data_dir, _RECIPE.value, _PRETRAIN_STEPS.value
  )
  pretrained = [first]
  if _COMPARE.value:  # the other recipe for as long as the first one's steps took
    pretrained.append(earlier.get(_COMPARE.value) or compare(corpus, data_dir, first))
  summary = {
    "size": _SIZE.value,
    "seq_len": _SEQ_LEN.value,
    "corpus": f"{n_sentences} SST-2 train sentences (no labels), {_DOC_LINES.value} per document",
    "labelled": [setting for setting, *_ in settings],
    "finetune": dict(
      batch=_FINETUNE_BATCH.value,
      packed=_PACK.value,
      pooling=_POOLING.value,
      lr=_FINETUNE_LR.value,
      pretrained_lr=_PRETRAINED_LR.value or _FINETUNE_LR.value,
    ),
    "runs": [],
  }
  for pre in pretrained:
    tuned = finetune_both(settings, dev_tsv, data_dir, pre)
    summary["runs"].append({"pretrain": pre, "finetuned": tuned})
    with open(os.path.join(_WORKDIR.value, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
  print(f"\ncorpus: {summary['corpus']}; fine-tuning: {json.dumps(summary['finetune'])}")
  for run in summary["runs"]:
    print_recipe(run["pretrain"], run["finetuned"])


if __name__ == "__main__":
  app.run(main)
