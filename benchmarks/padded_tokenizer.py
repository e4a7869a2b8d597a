r"""SST-2 fine-tuning from an imported checkpoint whose tokenizer.json pads and truncates on its own
(as sentence-transformers' MiniLM does: Fixed 128), with the tokenizer loaded plain (now)
against loaded as the file says (before 2026-12-06), at the same steps, side by side.

  python -m benchmarks.padded_tokenizer [--sst2=../shared/data/sst2] [--steps=300]

The imported checkpoint is made here: a small BertForSequenceClassification from
`transformers` (random weights) and a WordPiece vocabulary trained on SST-2's sentences, saved
with `"padding": Fixed 128` and `"truncation": 128`, then imported with `pretrain.convert`.
"""

import json
import os
import tempfile

import jax
import transformers
from absl import app, flags, logging

from configs.finetune import glue
from input_pipeline import tokenizer
from pretrain import convert
from pretrain.training import trainer

_SST2 = flags.DEFINE_string("sst2", "../shared/data/sst2", "GLUE SST-2 (train.tsv, dev.tsv).")
_STEPS = flags.DEFINE_integer("steps", 300, "Fine-tuning steps of each run.")
_SEQ = flags.DEFINE_integer("seq_len", 64, "The fine-tuning window.")
_LR = flags.DEFINE_float("lr", 1e-3, "Peak learning rate (a small model from random weights).")


def _hf_dir(root, sentences):
  """A BertForSequenceClassification directory whose tokenizer.json pads and truncates."""
  tok = tokenizer._train_wordpiece(sentences, 4000, True)  # (its trainer, as the tests use)
  tok.enable_truncation(max_length=128)
  tok.enable_padding(length=128, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
  cfg = transformers.BertConfig(
    vocab_size=tok.get_vocab_size(),
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=512,
    max_position_embeddings=512,
    num_labels=2,
  )
  path = os.path.join(root, "hf")
  transformers.BertForSequenceClassification(cfg).save_pretrained(path)
  tok.save(os.path.join(path, "tokenizer.json"))
  return path


def _finetune(init_from, workdir, files):
  config = glue.get_config(f"sst2,seq={_SEQ.value}")
  config.init_from = init_from
  config.data.update(files=files, data_dir=os.path.join(workdir, "data"))
  config.train.update(epochs=0.0, total_steps=_STEPS.value, log_every=_STEPS.value, eval_every=0)
  config.checkpoint.update(every=0)
  config.optimizer.lr = _LR.value
  out = trainer.train_and_evaluate(config, os.path.join(workdir, "run"), devices=jax.devices()[:1])
  return out.metrics


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  files = ",".join(os.path.join(_SST2.value, f) for f in ("train.tsv", "dev.tsv"))
  with open(os.path.join(_SST2.value, "train.tsv"), encoding="utf-8") as f:
    sentences = [line.split("\t")[0] for line in f.read().splitlines()[1:]]
  plain = tokenizer.plain
  with tempfile.TemporaryDirectory() as root:
    hf_dir = _hf_dir(root, sentences)
    with open(os.path.join(hf_dir, "tokenizer.json"), encoding="utf-8") as f:
      spec = json.load(f)
    print(
      f"tokenizer.json: padding {spec['padding']['strategy']}, truncation "
      f"{spec['truncation']['max_length']}"
    )
    results = {}
    for name, load_plain in (("before: as the file says", False), ("now: plain", True)):
      tokenizer.plain = plain if load_plain else (lambda tok: tok)
      try:
        run = os.path.join(root, name.split(":")[0])
        convert.from_hf(hf_dir, os.path.join(run, "imported"))
        tok = tokenizer.load(os.path.join(run, "imported", "tokenizer.json"))
        lengths = [len(e.ids) for e in tok.encode_batch(sentences[:2000])]
        cut = sum(n + 2 > _SEQ.value for n in lengths) / len(lengths)
        results[name] = (
          cut,
          sum(lengths) / len(lengths),
          _finetune(os.path.join(run, "imported"), run, files),
        )
      finally:
        tokenizer.plain = plain
  for name, (cut, length, m) in results.items():
    print(
      f"{name}: {length:.1f} ids a sentence, {cut:.0%} cut by the {_SEQ.value}-token window; after {_STEPS.value} steps: eval accuracy "
      f"{m['eval_accuracy']:.4f}, eval loss {m['eval_loss']:.4f}, "
      f"{m['tokens_per_s']:,.0f} tok/s"
    )


if __name__ == "__main__":
  app.run(main)
