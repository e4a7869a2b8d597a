"""BERT / RoBERTa examples: sentences -> NSP pairs or full-sentence packs -> dynamic masking.

NSP pairs follow BERT's create_pretraining_data: per document, a target length (shorter with
probability short_seq_prob), segment A from the first sentences of a chunk, and segment B
either the actual continuation or (50%, or when the chunk has one sentence) sentences from
a random other document, with the unused sentences put back (the actual continuation where
there is no other document); then [CLS] A [SEP] B [SEP], truncating tokens from a randomly
chosen end of the longer segment. RoBERTa's FULL-SENTENCES
packs whole sentences contiguously, across documents (with an extra [SEP] at a document
boundary), into [CLS] ... [SEP] of at most seq_len tokens.

Examples are built once from a tokenized split ('sentences' mode, input_pipeline/tokenized.py)
for given settings and seed (`dupe_factor` passes), piece by piece, and cached beside it; the
masking is dynamic and keyed by (seed, step, row of the global batch), so a resumed run is
exact and the batches do not depend on the number of processes.
"""
import hashlib
import json
import os

import numpy as np
from absl import logging

from input_pipeline import batches, masking, sources, tokenized, tokenizer

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
        other = index
        if rng.random() < 0.5 and len(docs) > 1:
          for _ in range(10):
            other = int(rng.integers(len(docs)))
            if other != index:
              break
        if other != index:
          is_random = True
          rdoc = docs[other]
          for j in range(int(rng.integers(len(rdoc))), len(rdoc)):
            b.extend(rdoc[j])
            if len(b) >= target - len(a):
              break
          i -= len(chunk) - a_end  # the unused sentences go back
        else:  # the actual next sentences, also when no other document was drawn
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


def example_arrays(examples, seq_len, pad_id, dtype=np.int32):
  """(tokens, type_ids, is_random) lists -> padded tokens [n, seq_len] and per-example
  lengths, segment-A lengths (type id 0, including [CLS] and the first [SEP]) and NSP labels."""
  n = len(examples)
  arrays = dict(tokens=np.full((n, seq_len), pad_id, dtype), lengths=np.zeros(n, np.int32),
                a_lengths=np.zeros(n, np.int32), nsp_labels=np.zeros(n, np.int32))
  for i, (tokens, types, is_random) in enumerate(examples):
    arrays["tokens"][i, :len(tokens)] = tokens
    arrays["lengths"][i] = len(tokens)
    arrays["a_lengths"][i] = len(types) - int(np.sum(types))
    arrays["nsp_labels"][i] = int(is_random)
  return arrays


class MaskedExamples(batches.StepIndexed):
  """Step-indexed batches of masked examples (example_arrays' arrays, tokens as PieceRows)."""

  def __init__(self, arrays, *, batch_size, seed, shuffle, spec, nsp):
    self.tokens, self.lengths = arrays["tokens"], arrays["lengths"]
    self.a_lengths, self.nsp_labels = arrays["a_lengths"], arrays["nsp_labels"]
    self.num_examples, self.batch_size = len(self.lengths), batch_size
    self.seed = list(np.atleast_1d(seed))
    self.shuffle, self.spec, self.nsp = shuffle, spec, nsp
    self._epoch, self._perm = None, None

  @classmethod
  def from_examples(cls, examples, *, seq_len, pad_id, **kw):
    arrays = example_arrays(examples, seq_len, pad_id)
    return cls(dict(arrays, tokens=PieceRows([arrays["tokens"]])), **kw)

  def _order(self, epoch):
    if not self.shuffle:
      return np.arange(self.num_examples)
    if self._epoch != epoch:
      self._perm = np.random.default_rng([*self.seed, epoch]).permutation(self.num_examples)
      self._epoch = epoch
    return self._perm

  def examples(self, indices, stream, counter, rows):
    """Masked rows for example indices; the masks are keyed by (seed, stream, counter, row),
    so every step (and every evaluation batch) is masked afresh and reproducibly."""
    order = batches.per_epoch(indices, self.num_examples, self._order)
    seq_len, p = self.tokens.shape[1], self.spec.max_predictions
    tokens = self.tokens.take(order)
    lengths, a_lengths = self.lengths[order], self.a_lengths[order]
    idx = np.arange(seq_len)
    b = len(order)
    out = {"inputs": np.empty((b, seq_len), np.int32),
           "type_ids": ((idx >= a_lengths[:, None]) & (idx < lengths[:, None])).astype(np.int32),
           "input_mask": (idx < lengths[:, None]).astype(np.int32),
           "masked_positions": np.empty((b, p), np.int32), "masked_ids": np.empty((b, p), np.int32),
           "masked_weights": np.empty((b, p), np.float32),
           "example_weights": np.ones(b, np.float32)}
    for j, row in enumerate(rows):
      rng = np.random.default_rng([*self.seed, stream, counter, int(row)])
      (out["inputs"][j], out["masked_positions"][j], out["masked_ids"][j],
       out["masked_weights"][j]) = masking.mask_row(tokens[j], int(lengths[j]), self.spec, rng)
    if self.nsp:
      out["nsp_labels"] = self.nsp_labels[order]
    return out


def _build_examples(docs, data, seq_len, rng, ids):
  """NSP pairs (data.mlm.nsp) or full-sentence packs of `docs`; returns (examples, number of
  documents skipped for having fewer than 2 sentences)."""
  mlm = data.mlm
  if not mlm.nsp:
    return full_sentence_examples(docs, seq_len, ids["[CLS]"], ids["[SEP]"]), 0
  usable = [d for d in docs if len(d) >= 2]
  if not usable:
    return [], len(docs)
  return [e for _ in range(mlm.dupe_factor)
          for e in nsp_examples(usable, seq_len, mlm.short_seq_prob, rng, ids["[CLS]"],
                                ids["[SEP]"])], len(docs) - len(usable)


def examples_dir(split, data, seq_len, seed):
  """Where the examples built from a prepared split for these settings are cached."""
  mlm = data.mlm
  key = json.dumps([split.manifest["tokenizer"], split.manifest["tokens"], seq_len, mlm.nsp,
                    mlm.short_seq_prob, mlm.dupe_factor, [int(x) for x in np.atleast_1d(seed)], 3])
  return os.path.join(split.path, "examples-" + hashlib.sha256(key.encode()).hexdigest()[:12])


_ARRAYS = ("tokens", "lengths", "a_lengths", "nsp_labels")


def build_examples(split, data, tok, *, seq_len, seed, process_index=0, process_count=1):
  """Builds this worker's pieces of the examples of a prepared 'sentences' split (piece k of
  the split -> examples piece k, for k % process_count == process_index), cached beside it:
  pairs are built once per data and settings, as BERT's create_pretraining_data does. A
  random next sentence comes from another document of the same piece (a piece holds
  thousands). Pieces already built are skipped."""
  ids = tokenizer.check_bert_specials(tok)
  path = examples_dir(split, data, seq_len, seed)
  os.makedirs(path, exist_ok=True)
  dtype = split.stream.arrays[0].dtype
  for k in range(process_index, len(split.manifest["pieces"]), process_count):
    done = os.path.join(path, f"piece-{k:05d}.json")
    if os.path.exists(done):
      continue
    docs = split.piece_documents(k)
    rng = np.random.default_rng([*np.atleast_1d(seed), 7, k])
    examples, skipped = _build_examples(docs, data, seq_len, rng, ids)
    arrays = example_arrays(examples, seq_len, ids["[PAD]"], dtype)
    for name, value in arrays.items():
      tokenized.write_atomic(os.path.join(path, f"piece-{k:05d}.{name}.npy"),
                             lambda t, v=value: np.save(t, v))
    tokenized.write_json(done, {"examples": len(examples), "documents": len(docs),
                                "skipped": skipped})


class PieceRows:
  """Rows of several [n_k, seq_len] arrays (memory-mapped pieces) as one array of rows."""

  def __init__(self, arrays):
    self.arrays = arrays
    self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    self.shape = (int(self.offsets[-1]), arrays[0].shape[1])

  def take(self, rows):
    """int32 rows, in the order given (read piece by piece, in increasing order)."""
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), self.shape[1]), np.int32)
    piece = np.searchsorted(self.offsets, rows, side="right") - 1
    for k in np.unique(piece):
      sel = np.flatnonzero(piece == k)
      local = rows[sel] - self.offsets[k]
      order = np.argsort(local, kind="stable")
      out[sel[order]] = self.arrays[k][local[order]]
    return out


def open_examples(split, data, *, seq_len, seed):
  """The built examples of a split: tokens as PieceRows, the per-example arrays in memory."""
  path = examples_dir(split, data, seq_len, seed)
  n = len(split.manifest["pieces"])
  records = []
  for k in range(n):
    done = os.path.join(path, f"piece-{k:05d}.json")
    if not os.path.exists(done):
      raise sources.DataError(f"config.data: the examples of {split.summary()} are not built in "
                              f"{path} (piece {k} of {n} missing)")
    with open(done, encoding="utf-8") as f:
      records.append(json.load(f))
  name = split.manifest["source"]["split"]
  skipped, docs = sum(r["skipped"] for r in records), sum(r["documents"] for r in records)
  if skipped:
    logging.warning("%s: skipped %d of %d documents with fewer than 2 sentences (no "
                    "next-sentence pairs)", name, skipped, docs)
  if not sum(r["examples"] for r in records):
    if data.mlm.nsp:
      raise sources.DataError(
          f"config.data: no document of split {name!r} has 2 or more sentences, so no "
          f"next-sentence pairs can be formed ({skipped} skipped); use longer documents "
          "(e.g. doc_split='file') or recipe=roberta")
    raise sources.DataError(f"config.data: {split.summary()} yields no examples; add text")
  load = lambda k, a: np.load(os.path.join(path, f"piece-{k:05d}.{a}.npy"), mmap_mode="r")
  out = {a: np.concatenate([load(k, a) for k in range(n)]) for a in _ARRAYS if a != "tokens"}
  out["tokens"] = PieceRows([load(k, "tokens") for k in range(n) if records[k]["examples"]])
  return out


def load(split, data, tok, *, batch_size, seq_len, seed, shuffle):
  """MaskedExamples over a prepared split whose examples are built (build_examples)."""
  arrays = open_examples(split, data, seq_len=seq_len, seed=seed)
  ids = tokenizer.check_bert_specials(tok)
  spec = masking.make_spec(tok, [ids[t] for t in tokenizer.BERT_SPECIALS], ids["[MASK]"], data.mlm)
  return MaskedExamples(arrays, batch_size=batch_size, seed=seed, shuffle=shuffle, spec=spec,
                        nsp=data.mlm.nsp)
