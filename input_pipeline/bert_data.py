"""BERT / RoBERTa examples: sentences -> NSP pairs or full-sentence packs -> dynamic masking.

NSP pairs follow BERT's create_pretraining_data: per document, a target length (shorter with
probability short_seq_prob), segment A from the first sentences of a chunk, and segment B
either the actual continuation or (50%, or when the chunk has one sentence) sentences from
a random other document, with the unused sentences put back; then [CLS] A [SEP] B [SEP],
truncating tokens from a randomly chosen end of the longer segment. RoBERTa's FULL-SENTENCES
packs whole sentences contiguously, across documents (with an extra [SEP] at a document
boundary), into [CLS] ... [SEP] of at most seq_len tokens.

Examples are built once per run from the seed (`dupe_factor` passes over the corpus); the
masking is dynamic and keyed by (seed, step, example), so a resumed run is exact.
"""
import re

import numpy as np
from absl import logging

from input_pipeline import lm_data, masking, sources, tokenizer

_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[\"'(\[]*[A-Z0-9])")


def split_sentences(text):
  """Lines, further split after '.', '!' or '?' followed by a capitalised word."""
  out = []
  for line in text.split("\n"):
    out.extend(s.strip() for s in _SENTENCE_END.sub("\\1\n", line).split("\n") if s.strip())
  return out


def tokenize_documents(tok, texts):
  """Documents -> lists of sentences as int32 token arrays (empty sentences dropped)."""
  docs = [split_sentences(t) for t in texts]
  flat = [s for d in docs for s in d]
  encoded = [np.asarray(e.ids, np.int32)
             for e in tok.encode_batch(flat, add_special_tokens=False)] if flat else []
  out, i = [], 0
  for d in docs:
    sents = [s for s in encoded[i:i + len(d)] if len(s)]
    i += len(d)
    out.append(sents)
  return out


def _truncate_pair(a, b, max_tokens, rng):
  while len(a) + len(b) > max_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def nsp_examples(docs, seq_len, short_seq_prob, rng, cls_id, sep_id):
  """BERT's sentence pairs: lists of (tokens, type_ids, is_random_next)."""
  max_tokens = seq_len - 3
  examples = []
  for index, doc in enumerate(docs):
    target = max_tokens
    if rng.random() < short_seq_prob:
      target = int(rng.integers(2, max_tokens + 1))
    chunk, length, i = [], 0, 0
    while i < len(doc):
      chunk.append(doc[i])
      length += len(doc[i])
      # Unlike the original, a chunk closes only once it holds two sentences, and a lone last
      # sentence forms no pair: single-sentence chunks force a random B, which would push the
      # NSP labels to ~58% random.
      if i == len(doc) - 1 or (length >= target and len(chunk) >= 2):
        if len(chunk) < 2:
          break  # only at the document's end
        a_end = int(rng.integers(1, len(chunk)))
        a = [t for s in chunk[:a_end] for t in s]
        b = []
        if rng.random() < 0.5:
          is_random = True
          other = index
          for _ in range(10):
            other = int(rng.integers(len(docs)))
            if other != index:
              break
          rdoc = docs[other]
          for j in range(int(rng.integers(len(rdoc))), len(rdoc)):
            b.extend(rdoc[j])
            if len(b) >= target - len(a):
              break
          i -= len(chunk) - a_end  # the unused sentences go back
        else:
          is_random = False
          b = [t for s in chunk[a_end:] for t in s]
        _truncate_pair(a, b, max_tokens, rng)
        if a and b:
          tokens = [cls_id] + a + [sep_id] + b + [sep_id]
          types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
          examples.append((tokens, types, is_random))
        chunk, length = [], 0
      i += 1
  return examples


def full_sentence_examples(docs, seq_len, cls_id, sep_id):
  """RoBERTa's FULL-SENTENCES packing: lists of (tokens, type_ids, False)."""
  max_tokens = seq_len - 2
  examples, cur = [], []

  def emit():
    if cur:
      examples.append(([cls_id] + cur + [sep_id], [0] * (len(cur) + 2), False))

  for d, doc in enumerate(docs):
    for sent in doc:
      for start in range(0, len(sent), max_tokens):  # an overlong sentence is cut
        piece = list(sent[start:start + max_tokens])
        if len(cur) + len(piece) > max_tokens:
          emit()
          cur = []
        cur.extend(piece)
    if d < len(docs) - 1 and cur:
      if len(cur) + 1 > max_tokens:
        emit()
        cur = []
      else:
        cur.append(sep_id)  # document boundary
  emit()
  return examples


class MaskedExamples:
  """Step-indexed batches of masked examples for this process."""

  def __init__(self, examples, *, seq_len, batch_size, seed, shuffle, spec, pad_id, nsp):
    n = len(examples)
    self.tokens = np.full((n, seq_len), pad_id, np.int32)
    self.type_ids = np.zeros((n, seq_len), np.int32)
    self.lengths = np.zeros(n, np.int32)
    self.nsp_labels = np.zeros(n, np.int32)
    for i, (tokens, types, is_random) in enumerate(examples):
      self.tokens[i, :len(tokens)] = tokens
      self.type_ids[i, :len(types)] = types
      self.lengths[i] = len(tokens)
      self.nsp_labels[i] = int(is_random)
    self.num_examples, self.batch_size = n, batch_size
    self.seed = list(np.atleast_1d(seed))
    self.shuffle, self.spec, self.nsp = shuffle, spec, nsp
    self._epoch, self._perm = None, None

  def _order(self, epoch):
    if not self.shuffle:
      return np.arange(self.num_examples)
    if self._epoch != epoch:
      self._perm = np.random.default_rng([*self.seed, epoch]).permutation(self.num_examples)
      self._epoch = epoch
    return self._perm

  def _rows(self, indices):
    return lm_data.per_epoch(indices, self.num_examples, self._order)

  def _assemble(self, rows, stream, counter):
    b, p = len(rows), self.spec.max_predictions
    out = {"inputs": np.empty((b, self.tokens.shape[1]), np.int32),
           "type_ids": self.type_ids[rows], "input_mask": np.zeros((b, self.tokens.shape[1]), np.int32),
           "masked_positions": np.empty((b, p), np.int32), "masked_ids": np.empty((b, p), np.int32),
           "masked_weights": np.empty((b, p), np.float32),
           "example_weights": np.ones(b, np.float32)}
    for j, row in enumerate(rows):
      rng = np.random.default_rng([*self.seed, stream, counter, j])
      length = int(self.lengths[row])
      (out["inputs"][j], out["masked_positions"][j], out["masked_ids"][j],
       out["masked_weights"][j]) = masking.mask_row(self.tokens[row], length, self.spec, rng)
      out["input_mask"][j, :length] = 1
    if self.nsp:
      out["nsp_labels"] = self.nsp_labels[rows]
    return out

  def batch(self, step):
    """This process's rows of the training batch of `step`, masked afresh for this step."""
    idx = step * self.batch_size + np.arange(self.batch_size)
    return self._assemble(self._rows(idx), 0, step)

  def eval_batch(self, i):
    """The i-th evaluation batch: examples in order, with a fixed masking per batch."""
    idx = i * self.batch_size + np.arange(self.batch_size)
    return self._assemble(self._rows(idx), 1, i)

  def epoch_of(self, step):
    return step * self.batch_size / max(1, self.num_examples)


def load_split(data, tok, split, *, batch_size, seq_len, seed, shuffle, shard, builder):
  """Sentences of this process's shard -> NSP pairs (data.mlm.nsp) or full-sentence packs."""
  ids = tokenizer.check_bert_specials(tok)
  mlm = data.mlm
  docs = tokenize_documents(tok, sources.texts(builder, split, data.text_key, shard))
  docs = [d for d in docs if d]
  rng = np.random.default_rng([*np.atleast_1d(seed), 7])
  if mlm.nsp:
    usable = [d for d in docs if len(d) >= 2]
    skipped = len(docs) - len(usable)
    if skipped:
      logging.warning("%s: skipped %d of %d documents with fewer than 2 sentences (no "
                      "next-sentence pairs)", split, skipped, len(docs))
    if not usable:
      raise sources.DataError(
          f"config.data: no document of split {split!r} (process shard {shard[0]}/{shard[1]}) has "
          f"2 or more sentences, so no next-sentence pairs can be formed ({skipped} skipped); "
          "use longer documents (e.g. doc_split='file') or recipe=roberta")
    examples = [e for _ in range(mlm.dupe_factor)
                for e in nsp_examples(usable, seq_len, mlm.short_seq_prob, rng,
                                      ids["[CLS]"], ids["[SEP]"])]
  else:
    examples = full_sentence_examples(docs, seq_len, ids["[CLS]"], ids["[SEP]"])
  if not examples:
    raise sources.DataError(f"config.data: split {split!r} yields no examples; add text")
  spec = masking.make_spec(tok, [ids[t] for t in tokenizer.BERT_SPECIALS], ids["[MASK]"], mlm)
  return MaskedExamples(examples, seq_len=seq_len, batch_size=batch_size, seed=seed,
                        shuffle=shuffle, spec=spec, pad_id=ids["[PAD]"], nsp=mlm.nsp)
