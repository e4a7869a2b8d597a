"""Tokenizers from HF `tokenizers`: trained byte-level BPE, WordPiece (BERT), character-level,
or a given file (a tokenizer.json, or a BERT vocab.txt).

Every tokenizer loaded here has its own padding and truncation turned off (`plain`): many
published tokenizer.json files pad every encoding to a fixed length (sentence-transformers'
MiniLM to 128), and rows are made by our packing and padding alone.

Trained tokenizers are cached in <data_dir>/tokenizers/<hash>.json, where the hash covers the
training text and every option, so the same corpus and options always give the same file and
a changed corpus never reuses a stale one.
"""

import hashlib
import json
import os
import tempfile

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from pretrain.ground import errors

UNK = "<unk>"
# BERT's special tokens, in the order of the original vocabularies' first ids we rely on.
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerError(errors.UserError):
  pass


def plain(tok):
  """`tok` without truncation or padding of its own (a copy when it has either), so that an
  encoding is exactly the text's tokens."""
  if tok.truncation is None and tok.padding is None:
    return tok
  tok = type(tok).from_str(tok.to_str())
  tok.no_truncation()
  tok.no_padding()
  return tok


def load(path):
  """A tokenizer.json file, as a plain tokenizer."""
  return plain(tokenizers.Tokenizer.from_file(path))


def from_str(text):
  """A tokenizer.json's text, as a plain tokenizer."""
  return plain(tokenizers.Tokenizer.from_str(text))


def _digest(texts, options):
  h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
  for text in texts:
    h.update(text.encode("utf-8", errors="replace"))
    h.update(b"\0")
  return h.hexdigest()[:16]


def _train_bpe(texts, vocab_size, eos):
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=[eos],
    show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(texts, trainer=trainer)
  return tok


def _bert_pipeline(tok, lowercase):
  tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  return tok


def _train_wordpiece(texts, vocab_size, lowercase):
  tok = _bert_pipeline(tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase)
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS), show_progress=False
  )
  tok.train_from_iterator(texts, trainer=trainer)
  return tok


def _load_vocab_txt(path, lowercase):
  """A BERT vocab.txt (one token per line) with BERT's normalisation and pre-tokenization."""
  with open(path, encoding="utf-8") as f:
    vocab = {line.rstrip("\n"): i for i, line in enumerate(f) if line.rstrip("\n")}
  if "[UNK]" not in vocab:
    raise TokenizerError(
      f"config.data.tokenizer.path: {path} has no [UNK] token; a BERT vocab.txt "
      "needs [PAD] [UNK] [CLS] [SEP] [MASK]"
    )
  tok = _bert_pipeline(tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")), lowercase)
  tok.add_special_tokens([t for t in BERT_SPECIALS if t in vocab])
  return tok


def _build_char(texts, eos):
  chars = sorted(set().union(*(set(t) for t in texts)) - {eos, UNK})
  vocab = {c: i for i, c in enumerate(chars)}
  vocab[eos] = len(vocab)
  vocab[UNK] = len(vocab)
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
  tok.decoder = decoders.Fuse()
  tok.add_special_tokens([eos])
  return tok


def limited(texts, max_chars):
  """The texts, cut off once max_chars characters have been yielded."""
  seen = 0
  for text in texts:
    if seen >= max_chars:
      return
    text = text[: max_chars - seen]
    seen += len(text)
    yield text


def spread_sample(parts, max_chars):
  """At most max_chars characters of text from `parts` (iterables of texts, e.g. evenly spaced
  stretches of a corpus), spread over them: the first characters of every part, an equal share
  each, a part shorter than its share leaving the rest to the others. Returns the texts part
  by part, in order, the last text taken from a part cut at its share: exactly max_chars
  characters, or all of the text when the parts hold no more. A part is read one text past its
  share at most."""
  iters = [iter(p) for p in parts]
  taken, chars = [[] for _ in iters], [0] * len(iters)
  exhausted = [False] * len(iters)
  quota = {}
  while True:
    active = [k for k, done in enumerate(exhausted) if not done]
    if not active:
      break
    left = max_chars - sum(c for c, done in zip(chars, exhausted) if done)
    quota = {k: left // len(active) + (i < left % len(active)) for i, k in enumerate(active)}
    freed = False
    for k in active:
      while chars[k] <= quota[k]:  # one text past the share: is there more?
        text = next(iters[k], None)
        if text is None:
          exhausted[k] = True
          freed |= chars[k] < quota[k]
          break
        taken[k].append(text)
        chars[k] += len(text)
    if not freed:  # the shares stand: cut the parts with more text there
      break
  return [
    t
    for k, texts in enumerate(taken)
    for t in (texts if exhausted[k] else limited(texts, quota[k]))
  ]


KINDS = ("bpe", "wordpiece", "char", "file")


def check_config(cfg):
  """config.data.tokenizer's kind, and its file when kind='file'."""
  if cfg.kind not in KINDS:
    raise TokenizerError(
      f"config.data.tokenizer.kind: unknown {cfg.kind!r}; use one of {', '.join(map(repr, KINDS))}"
    )
  if cfg.kind in ("bpe", "wordpiece") and not cfg.vocab_size > 0:
    raise TokenizerError(
      f"config.data.tokenizer.vocab_size: {cfg.vocab_size}; give the size "
      "to train the tokenizer to (> 0)"
    )
  if cfg.kind == "file" and (not cfg.path or not os.path.isfile(cfg.path)):
    raise TokenizerError(
      f"config.data.tokenizer.path: {cfg.path!r} is not a file; give a HF "
      "tokenizer.json or a BERT vocab.txt"
    )


def get_tokenizer(cfg, data_dir, train_texts):
  """Returns a `tokenizers.Tokenizer` for config.data.tokenizer (`cfg`).

  `train_texts` is a zero-argument callable returning an iterable over the texts to train on
  (cut at cfg.max_train_chars); it is only called for the trained kinds ('bpe', 'wordpiece',
  'char').
  """
  check_config(cfg)
  if cfg.kind == "file":
    if cfg.path.endswith(".txt"):
      tok = _load_vocab_txt(cfg.path, cfg.lowercase)
    else:
      tok = load(cfg.path)
  else:
    texts = list(limited(train_texts(), cfg.max_train_chars))
    if not any(texts):
      raise TokenizerError(
        "config.data: the training split is empty; nothing to train a tokenizer on"
      )
    options = dict(
      kind=cfg.kind,
      eos=cfg.eos_token,
      vocab_size=cfg.vocab_size if cfg.kind != "char" else 0,
      version=1,
    )
    if cfg.kind == "wordpiece":
      options["lowercase"] = cfg.lowercase
    path = os.path.join(data_dir, "tokenizers", f"{cfg.kind}_{_digest(texts, options)}.json")
    if os.path.exists(path):
      tok = load(path)
    else:
      if cfg.kind == "bpe":
        tok = _train_bpe(texts, cfg.vocab_size, cfg.eos_token)
      elif cfg.kind == "wordpiece":
        tok = _train_wordpiece(texts, cfg.vocab_size, cfg.lowercase)
      else:
        tok = _build_char(texts, cfg.eos_token)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
      os.close(fd)
      tok.save(tmp)
      os.replace(tmp, path)  # atomic: concurrent processes never see a half-written file
  if tok.token_to_id(cfg.eos_token) is None:
    raise TokenizerError(
      f"config.data.tokenizer.eos_token: {cfg.eos_token!r} is not in the tokenizer's vocabulary; "
      "set it to the tokenizer's end-of-text token"
    )
  return tok


def identity(tok):
  """A short hash of the tokenizer's full definition (vocab, merges, normalisation)."""
  return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


# RoBERTa's special tokens in the roles of BERT's: its vocabulary (a byte-level BPE) has these.
ROBERTA_SPECIALS = {
  "[PAD]": "<pad>",
  "[UNK]": "<unk>",
  "[CLS]": "<s>",
  "[SEP]": "</s>",
  "[MASK]": "<mask>",
}


def check_bert_specials(tok):
  """The ids of the encoder's special tokens, by BERT's names ([PAD] [UNK] [CLS] [SEP] [MASK]):
  BERT's own, or RoBERTa's (<pad> <unk> <s> </s> <mask>) in a vocabulary that has those; a
  clear error if the vocabulary has neither set."""
  ids = {t: tok.token_to_id(t) for t in BERT_SPECIALS}
  roberta = {t: tok.token_to_id(r) for t, r in ROBERTA_SPECIALS.items()}
  if None in ids.values() and None not in roberta.values():
    return roberta
  missing = [t for t, i in ids.items() if i is None]
  if missing:
    raise TokenizerError(
      f"config.data.tokenizer: the vocabulary has no {' '.join(missing)}; masked-LM training "
      f"needs {' '.join(BERT_SPECIALS)} or RoBERTa's {' '.join(ROBERTA_SPECIALS.values())} "
      "(train one with kind='wordpiece' or add them)"
    )
  return ids


def _byte_level_alphabet():
  """GPT-2's byte -> printable character table, inverted: character -> 1 byte."""
  return set(pre_tokenizers.ByteLevel.alphabet())


def token_bytes(tok):
  """UTF-8 bytes of text each token id stands for (int32, one per id), for bits per byte;
  0 for special tokens (end of text, [CLS], ...), which cover no text.

  Exact for byte-level BPE (each symbol of its alphabet is one byte) and for characters;
  for WordPiece and SentencePiece-style vocabularies the word's bytes, continuation marks
  ('##') dropped and '▁' counted as the space it stands for.
  """
  spec = json.loads(tok.to_str())
  decoder = (spec.get("decoder") or {}).get("type", "")
  specials = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
  alphabet = _byte_level_alphabet() if decoder == "ByteLevel" else set()
  vocab = tok.get_vocab(with_added_tokens=True)
  table = np.zeros(max(vocab.values()) + 1, np.int32)
  for token, i in vocab.items():
    if token in specials:
      continue
    if decoder == "ByteLevel":
      table[i] = sum(1 if c in alphabet else len(c.encode("utf-8")) for c in token)
    elif token.startswith("<0x") and token.endswith(">") and len(token) == 6:  # byte fallback
      table[i] = 1
    else:
      if decoder == "WordPiece" and token.startswith("##"):
        token = token[2:]
      table[i] = len(token.replace("\u2581", " ").encode("utf-8"))
  return table
