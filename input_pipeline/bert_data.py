"""BERT / RoBERTa examples: sentences -> NSP pairs or full-sentence packs -> dynamic masking.

NSP pairs follow BERT's create_pretraining_data: per document, a target length (shorter with
probability short_seq_prob), segment A from the first sentences of a chunk, and segment B
either the actual continuation or (50%, or when the chunk has one sentence) sentences from
a random other document, with the unused sentences put back (the actual continuation where
there is no other document); then [CLS] A [SEP] B [SEP], truncating tokens from a randomly
chosen end of the longer segment. RoBERTa's FULL-SENTENCES
packs whole sentences contiguously, across documents (with an extra [SEP] at a document
boundary), into [CLS] ... [SEP] of at most seq_len tokens.

Both work on token offsets into a piece of a tokenized split ('sentences' mode,
input_pipeline/corpora/tokenized.py), never on lists of tokens: an example is one or two spans of the
piece's tokens, and the padded rows are gathered from the spans in a few array operations.

Examples are built once from a tokenized split for given settings and seed (`dupe_factor`
passes), piece by piece, and cached beside it; the masking is dynamic and keyed by (seed, step,
row of the global batch), so a resumed run is exact and the batches do not depend on the
number of processes.
"""

import bisect
import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

from input_pipeline import batches, masking, tokenizer
from input_pipeline.corpora import sources, tokenized
from pretrain.ground import errors


class Sentences(NamedTuple):
  """Documents of sentences as spans of one token array (a piece of a 'sentences' split)."""

  tokens: np.ndarray  # the sentences' tokens, back to back
  offsets: list  # token offset of each sentence's start, and the end (S + 1 ints)
  starts: list  # first sentence of each document (D ints) ...
  ends: list  # ... and one past its last

  @classmethod
  def from_lists(cls, docs):
    """Documents as lists of sentence token sequences."""
    lengths = [len(s) for d in docs for s in d]
    counts = np.cumsum([0] + [len(d) for d in docs]).tolist()
    tokens = (
      np.concatenate([np.asarray(s, np.int64) for d in docs for s in d])
      if lengths
      else np.zeros(0, np.int64)
    )
    return cls(tokens, np.cumsum([0] + lengths).tolist(), counts[:-1], counts[1:])

  @classmethod
  def from_lengths(cls, tokens, sentence_lengths, counts):
    """tokenized.encode_sentences' output: tokens, tokens per sentence, sentences per document
    (documents of none left out)."""
    counts = np.asarray(counts)
    bounds = np.cumsum(np.concatenate([[0], counts[counts > 0]])).tolist()
    return cls(
      tokens,
      np.cumsum(np.concatenate([[0], sentence_lengths])).astype(np.int64).tolist(),
      bounds[:-1],
      bounds[1:],
    )

  def with_sentences(self, minimum):
    """The documents of at least `minimum` sentences."""
    keep = [(a, b) for a, b in zip(self.starts, self.ends) if b - a >= minimum]
    return self._replace(starts=[a for a, _ in keep], ends=[b for _, b in keep])


def nsp_spans(sents, seq_len, short_seq_prob, rng):
  """BERT's sentence pairs over `sents` (a Sentences): (A start, A end, B start, B end) token
  offsets and is_random, as five lists. The pairs, and every draw from `rng`, are those of the
  algorithm described at the top, computed on offsets instead of token lists."""
  max_tokens = seq_len - 3
  offsets, starts, ends = sents.offsets, sents.starts, sents.ends
  out = ([], [], [], [], [])
  n = len(starts)
  for index in range(n):
    last = ends[index] - 1
    target = max_tokens
    if rng.random() < short_seq_prob:
      target = int(rng.integers(2, max_tokens + 1))
    c = starts[index]  # the chunk's first sentence
    # Unlike the original, a chunk closes only once it holds two sentences, and a lone last
    # sentence forms no pair: single-sentence chunks force a random B, which would push the
    # NSP labels to ~58% random.
    while c < last:
      # the chunk ends at its first sentence (after c) that brings it to the target length
      i = min(last, max(c + 1, bisect.bisect_left(offsets, offsets[c] + target) - 1))
      a_end = c + int(rng.integers(1, i - c + 1))
      a0, a1 = offsets[c], offsets[a_end]
      other = index
      if rng.random() < 0.5 and n > 1:
        for _ in range(10):
          other = int(rng.integers(n))
          if other != index:
            break
      if other != index:
        is_random = True
        j0 = starts[other] + int(rng.integers(ends[other] - starts[other]))
        # sentences of the other document from j0 on, until B reaches target - len(A)
        j = bisect.bisect_left(offsets, offsets[j0] + target - (a1 - a0)) - 1
        b0, b1 = offsets[j0], offsets[min(ends[other] - 1, max(j0, j)) + 1]
        c = a_end  # the unused sentences go back
      else:  # the actual next sentences, also when no other document was drawn
        is_random = False
        b0, b1 = offsets[a_end], offsets[i + 1]
        c = i + 1
      la, lb = a1 - a0, b1 - b0
      if la + lb > max_tokens:  # a token at a time off a random end of the longer segment
        for r in rng.random(la + lb - max_tokens).tolist():
          if la > lb:
            la -= 1
            a0, a1 = (a0 + 1, a1) if r < 0.5 else (a0, a1 - 1)
          else:
            lb -= 1
            b0, b1 = (b0 + 1, b1) if r < 0.5 else (b0, b1 - 1)
      if la and lb:
        for column, value in zip(out, (a0, a1, b0, b1, is_random)):
          column.append(value)
  return out


def full_sentence_spans(sents, seq_len):
  """RoBERTa's FULL-SENTENCES packs over `sents`: [start, end) offsets of each pack's tokens in
  the token stream with a separator after every document but the last (with_separators)."""
  max_tokens = seq_len - 2
  offsets, n = sents.offsets, len(sents.starts)
  out_start, out_end = [], []
  pos = start = size = 0  # position in that stream; the current pack's start and size
  for d, (first, end) in enumerate(zip(sents.starts, sents.ends)):
    for s in range(first, end):
      length = offsets[s + 1] - offsets[s]
      for cut in range(0, length, max_tokens):  # an overlong sentence is cut
        piece = min(max_tokens, length - cut)
        if size + piece > max_tokens:
          if size:
            out_start.append(start)
            out_end.append(pos)
          size = 0
        if not size:
          start = pos
        size += piece
        pos += piece
    if d < n - 1:
      if size:
        if size + 1 > max_tokens:  # no room for the document boundary: it is left out
          out_start.append(start)
          out_end.append(pos)
          size = 0
        else:
          size += 1
      pos += 1
  if size:
    out_start.append(start)
    out_end.append(pos)
  return out_start, out_end


def with_separators(sents, sep_id):
  """The token stream of `sents` with sep_id after every document but the last."""
  at = [sents.offsets[e] for e in sents.ends[:-1]]
  return np.insert(np.asarray(sents.tokens), at, sep_id) if at else np.asarray(sents.tokens)


def _ragged(starts, lengths):
  """starts[i] + [0, lengths[i]) for every i, back to back (int64)."""
  shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
  return shift + np.arange(len(shift), dtype=np.int64)


def span_arrays(
  stream, a0, a1, b0, b1, nsp_labels, seq_len, cls_id, sep_id, pad_id, dtype=np.int32
):
  """Examples [CLS] A [SEP] B [SEP] ([CLS] A [SEP] where B is empty), A = stream[a0:a1] and
  B = stream[b0:b1], as example_arrays returns them (tokens padded with pad_id)."""
  a0, a1, b0, b1 = (np.asarray(x, np.int64).reshape(-1) for x in (a0, a1, b0, b1))
  n, stream = len(a0), np.asarray(stream)
  la, lb = a1 - a0, b1 - b0
  lengths = la + 2 + np.where(lb > 0, lb + 1, 0)
  tokens = np.full((n, seq_len), pad_id, dtype)
  flat = tokens.reshape(-1)
  row = np.arange(n, dtype=np.int64) * seq_len
  flat[_ragged(row + 1, la)] = stream[_ragged(a0, la)]
  flat[_ragged(row + la + 2, lb)] = stream[_ragged(b0, lb)]
  flat[row] = cls_id
  flat[row + la + 1] = sep_id
  flat[(row + la + lb + 2)[lb > 0]] = sep_id
  return dict(
    tokens=tokens,
    lengths=lengths.astype(np.int32),
    a_lengths=np.where(lb > 0, la + 2, lengths).astype(np.int32),
    nsp_labels=np.asarray(nsp_labels, np.int32).reshape(-1),
  )


def _as_lists(arrays):
  """example_arrays' arrays -> lists of (tokens, type_ids, is_random)."""
  out = []
  for row, n, a, label in zip(
    arrays["tokens"], arrays["lengths"], arrays["a_lengths"], arrays["nsp_labels"]
  ):
    out.append((row[:n].tolist(), [0] * int(a) + [1] * int(n - a), bool(label)))
  return out


def nsp_examples(docs, seq_len, short_seq_prob, rng, cls_id, sep_id):
  """BERT's sentence pairs of documents given as lists of sentence token sequences: lists of
  (tokens, type_ids, is_random)."""
  sents = Sentences.from_lists(docs)
  *spans, labels = nsp_spans(sents, seq_len, short_seq_prob, rng)
  return _as_lists(span_arrays(sents.tokens, *spans, labels, seq_len, cls_id, sep_id, 0, np.int64))


def full_sentence_examples(docs, seq_len, cls_id, sep_id):
  """RoBERTa's FULL-SENTENCES packing: lists of (tokens, type_ids, False)."""
  sents = Sentences.from_lists(docs)
  start, end = full_sentence_spans(sents, seq_len)
  return _as_lists(
    span_arrays(
      with_separators(sents, sep_id),
      start,
      end,
      end,
      end,
      np.zeros(len(start)),
      seq_len,
      cls_id,
      sep_id,
      0,
      np.int64,
    )
  )


def example_arrays(examples, seq_len, pad_id, dtype=np.int32):
  """(tokens, type_ids, is_random) lists -> padded tokens [n, seq_len] and per-example
  lengths, segment-A lengths (type id 0, including [CLS] and the first [SEP]) and NSP labels."""
  n = len(examples)
  arrays = dict(
    tokens=np.full((n, seq_len), pad_id, dtype),
    lengths=np.zeros(n, np.int32),
    a_lengths=np.zeros(n, np.int32),
    nsp_labels=np.zeros(n, np.int32),
  )
  for i, (tokens, types, is_random) in enumerate(examples):
    arrays["tokens"][i, : len(tokens)] = tokens
    arrays["lengths"][i] = len(tokens)
    arrays["a_lengths"][i] = len(types) - int(np.sum(types))
    arrays["nsp_labels"][i] = int(is_random)
  return arrays


class MaskedExamples(batches.StepIndexed):
  """Step-indexed batches of masked examples (example_arrays' arrays, tokens as PieceRows)."""

  def __init__(self, arrays, *, batch_size, seed, shuffle, spec, nsp, separator=None):
    """`separator`: the id that ends each document of a packed row ([SEP]); given, the rows
    carry segments (batches.segments) that start after each, so that attention stays within
    a document and positions restart (data.document_mask)."""
    self.separator = separator
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
    out = {
      "inputs": np.empty((b, seq_len), np.int32),
      "type_ids": ((idx >= a_lengths[:, None]) & (idx < lengths[:, None])).astype(np.int32),
      "input_mask": (idx < lengths[:, None]).astype(np.int32),
      "masked_positions": np.empty((b, p), np.int32),
      "masked_ids": np.empty((b, p), np.int32),
      "masked_weights": np.empty((b, p), np.float32),
      "example_weights": np.ones(b, np.float32),
    }
    for j, row in enumerate(rows):
      rng = np.random.default_rng([*self.seed, stream, counter, int(row)])
      (
        out["inputs"][j],
        out["masked_positions"][j],
        out["masked_ids"][j],
        out["masked_weights"][j],
      ) = masking.mask_row(tokens[j], int(lengths[j]), self.spec, rng)
    if self.nsp:
      out["nsp_labels"] = self.nsp_labels[order]
    if self.separator is not None:
      out.update(_segments(np.asarray(tokens), lengths, self.separator))
    return out


def _segments(tokens, lengths, separator):
  """A row's segments start at 0 and after each separator inside its length."""
  starts = np.zeros(tokens.shape, bool)
  starts[:, 0] = True
  starts[:, 1:] = (tokens[:, :-1] == separator) & (np.arange(1, tokens.shape[1]) < lengths[:, None])
  return batches.segments(starts)


def _build_examples(sents, data, seq_len, rng, ids, dtype=np.int32):
  """NSP pairs (data.mlm.nsp) or full-sentence packs of `sents` (a Sentences) as
  example_arrays' arrays; returns (arrays, number of documents skipped for having fewer than
  2 sentences)."""
  mlm = data.mlm
  specials = dict(
    seq_len=seq_len, cls_id=ids["[CLS]"], sep_id=ids["[SEP]"], pad_id=ids["[PAD]"], dtype=dtype
  )
  if not mlm.nsp:
    start, end = full_sentence_spans(sents, seq_len)
    return span_arrays(
      with_separators(sents, ids["[SEP]"]), start, end, end, end, np.zeros(len(start)), **specials
    ), 0
  usable = sents.with_sentences(2)
  spans = [[], [], [], [], []]
  if usable.starts:
    for _ in range(mlm.dupe_factor):
      for column, more in zip(spans, nsp_spans(usable, seq_len, mlm.short_seq_prob, rng)):
        column.extend(more)
  return (span_arrays(sents.tokens, *spans, **specials), len(sents.starts) - len(usable.starts))


def examples_dir(split, data, seq_len, seed):
  """Where the examples built from a prepared split for these settings are cached."""
  mlm = data.mlm
  key = json.dumps(
    [
      split.manifest["tokenizer"],
      split.manifest["tokens"],
      seq_len,
      mlm.nsp,
      mlm.short_seq_prob,
      mlm.dupe_factor,
      [int(x) for x in np.atleast_1d(seed)],
      3,
    ]
  )
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
    sents = Sentences(*split.piece_sentences(k))
    rng = np.random.default_rng([*np.atleast_1d(seed), 7, k])
    arrays, skipped = _build_examples(sents, data, seq_len, rng, ids, dtype)
    for name, value in arrays.items():
      tokenized.write_atomic(
        os.path.join(path, f"piece-{k:05d}.{name}.npy"), lambda t, v=value: np.save(t, v)
      )
    tokenized.write_json(
      done, {"examples": len(arrays["lengths"]), "documents": len(sents.starts), "skipped": skipped}
    )


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
      raise sources.DataError(
        f"config.data: the examples of {split.summary()} are not built in "
        f"{path} (piece {k} of {n} missing)"
      )
    with open(done, encoding="utf-8") as f:
      records.append(json.load(f))
  name = split.manifest["source"]["split"]
  skipped, docs = sum(r["skipped"] for r in records), sum(r["documents"] for r in records)
  if skipped:
    errors.warn(
      f"{name}: skipped {skipped} of {docs} documents with fewer than 2 sentences (no "
      "next-sentence pairs)"
    )
  if not sum(r["examples"] for r in records):
    if data.mlm.nsp:
      raise sources.DataError(
        f"config.data: no document of split {name!r} has 2 or more sentences, so no "
        f"next-sentence pairs can be formed ({skipped} skipped); use longer documents "
        "(e.g. doc_split='file') or recipe=roberta"
      )
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
  separator = ids["[SEP]"] if data.get("document_mask", False) else None
  return MaskedExamples(
    arrays,
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    spec=spec,
    nsp=data.mlm.nsp,
    separator=separator,
  )
