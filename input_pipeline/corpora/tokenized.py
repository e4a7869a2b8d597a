"""Tokenized datasets on disk: a tfds text split tokenized once, then read by random access.

`prepare` turns one split of a tfds text dataset (ours or any prepared tfds name) into flat
token files; every run after that reads them by offset (np.memmap) instead of tokenizing.

Layout of one prepared split (`directory()`):

  manifest.json                         written last: the split is complete iff it exists
  piece-00000-of-00004.tokens.bin       tokens, uint16 (vocab <= 65536) or int32, flat
  piece-00000-of-00004.docs.npy         int64 start offset of each document, plus the end
  piece-00000-of-00004.sents.npy        mode 'sentences' only: sentence start offsets
  piece-00000-of-00004.json             the piece's counts and tokenizer; marks it done

Two modes. 'documents' (causal LM): each document's tokens followed by EOS; `docs` holds
token offsets. 'sentences' (BERT): the tokens of each sentence, back to back; `sents` holds
token offsets of sentences and `docs` sentence offsets of documents.

The split is cut into pieces: runs of shards for a corpus of files read shard by shard
(local_text.streams_shards: no tfds copy of the text is made), else with tfds.even_splits.
Pieces are the unit of parallel work (piece k belongs to process k mod P, which reads only its
own shards) and of resumption: a piece's files are renamed into place
before its .json, so a killed preparation leaves whole pieces and temporary files only, and a
rerun redoes just the missing pieces. The number of pieces does not depend on the number of
processes, and the concatenated pieces are the split in order, so the dataset is the same
however it was prepared. What reading skips (SKIPPED: empty or invalid UTF-8 documents, bad
JSON lines, damaged shards with data.skip_bad_shards) is counted in the pieces and the
manifest. The manifest records the tokenizer's identity, and opening the split
with another tokenizer is refused.

Everything goes in batches: records are read thousands at a time (sources.text_batches), and
documents (or their sentences) encoded thousands per call of the tokenizer, which spreads them
over every core (HF `tokenizers` runs serially if TOKENIZERS_PARALLELISM=false, or in a
process forked after it was used). The tokens are exactly those of encoding each document (or
sentence) alone.
"""

import contextlib
import gc
import glob
import itertools
import json
import math
import os
import re
import urllib.parse

import numpy as np
from absl import logging

from input_pipeline import tokenizer
from input_pipeline.corpora import sources
from pretrain.ground.storage import write_atomic, write_json  # (also used as tokenized.write_*)

FORMAT = 1
MODES = ("documents", "sentences")
# What reading skips, counted in each piece and the manifest: documents that are empty or not
# UTF-8, and (files read shard by shard) JSON lines without the text, damaged shards skipped.
SKIPPED = ("empty", "invalid_utf8", "bad_jsonl_lines", "bad_shards")
DOCS_PER_PIECE = 20_000  # automatic piece count: about one piece per this many documents
_CHUNK = 8192  # documents encoded per tokenizer call (at most) ...
_CHUNK_CHARS = 1 << 22  # ... and about this many characters at most


_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[\"'(\[]*[A-Z0-9])")


def split_sentences(text):
  """Lines, further split after '.', '!' or '?' followed by a capitalised word."""
  # One pass over the whole text: a break can only replace a run of whitespace, so a run that
  # holds a newline splits the same way as the lines would have one by one.
  return [s for s in map(str.strip, _SENTENCE_END.sub("\\1\n", text).split("\n")) if s]


@contextlib.contextmanager
def _collector_paused():
  """Python's cyclic garbage collector off for a while: encoding a batch allocates an object
  and a list per text, which would set off collections that scan the whole heap again and
  again (about a quarter of the time of encoding sentences); none of them holds a cycle."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def encode_ids(tok, texts):
  """The token ids of each text (no special tokens added): one call of the tokenizer for all of
  them, which encodes them in parallel on every core (unless TOKENIZERS_PARALLELISM=false)
  and skips the character offsets nobody here reads; the same ids as tok.encode(text)."""
  encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
  with _collector_paused():
    return [e.ids for e in encode(texts, add_special_tokens=False)] if texts else []


def _flat(ids, total):
  return np.fromiter(itertools.chain.from_iterable(ids), np.int64, total)


def encode_sentences(tok, texts):
  """Documents -> (tokens of their sentences back to back, int64; tokens per sentence; sentences
  per document), empty sentences dropped (a document of none keeps a count of 0)."""
  docs = [split_sentences(t) for t in texts]
  counts = np.fromiter(map(len, docs), np.int64, len(docs))
  tokens, lengths = _encode_joined(tok, docs, counts, texts) or _encode_each(tok, docs)
  keep = lengths > 0
  if not keep.all():
    doc_of = np.repeat(np.arange(len(docs)), counts)
    counts = np.bincount(doc_of[keep], minlength=len(docs)).astype(np.int64)
    lengths = lengths[keep]
  return tokens, lengths, counts


def _encode_each(tok, docs):
  """(tokens, tokens per sentence) with every sentence a text of its own."""
  ids = encode_ids(tok, list(itertools.chain.from_iterable(docs)))
  lengths = np.fromiter(map(len, ids), np.int64, len(ids))
  return _flat(ids, int(lengths.sum())), lengths


def _separator(tok):
  """(text, id) of one of the tokenizer's special tokens, or None."""
  specials = [(i, t.content) for i, t in tok.get_added_tokens_decoder().items() if t.special]
  if not specials:
    return None
  first, text = min(specials)
  return text, first


def _encode_joined(tok, docs, counts, texts):
  """_encode_each's result, from one text per document: its sentences joined by a special
  token, which the tokenizer splits the text at before anything else, so each sentence's
  tokens are those it has alone; the special token's places give the sentence lengths.
  About 6x fewer texts, and as many fewer lists of ids made in Python (the tokenizer's own
  time barely changes): ~5-10% of BERT's tokenization. None where a text holds that token's
  text itself (then each sentence is encoded alone)."""
  sep = _separator(tok)
  if sep is None or any(sep[0] in t for t in texts):
    return None
  ids = encode_ids(tok, [sep[0].join(d) for d in docs])
  per_doc = np.fromiter(map(len, ids), np.int64, len(ids))
  flat = _flat(ids, int(per_doc.sum()))
  flat = np.insert(flat, np.cumsum(per_doc)[counts > 0], sep[1])  # each sentence ends at one
  at = np.flatnonzero(flat == sep[1])
  if len(at) != counts.sum():  # not split as expected: the safe way
    return None
  return flat[flat != sep[1]], np.diff(at, prepend=-1) - 1


def tokenize_documents(tok, texts):
  """Documents -> lists of sentences as int32 token arrays (empty sentences dropped)."""
  tokens, lengths, counts = encode_sentences(tok, list(texts))
  sentences = np.split(tokens.astype(np.int32), np.cumsum(lengths)[:-1]) if len(lengths) else []
  bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
  return [sentences[bounds[d] : bounds[d + 1]] for d in range(len(counts))]


def directory(data, builder, split, mode, tok):
  """Where `split` of `builder`, tokenized by `tok` for `mode`, lives.

  By default each tokenizer gets its own copy under <data_dir>/tokenized/<dataset>/, so runs
  with other tokenizers (a vocabulary sweep) never collide. An explicit
  config.data.tokenized_dir holds one tokenization, and another tokenizer is refused there.
  """
  root = data.tokenized_dir or os.path.join(
    data.data_dir, "tokenized", builder.info.full_name, "tokenizer-" + tokenizer.identity(tok)
  )
  return os.path.join(root, f"{urllib.parse.quote(split, safe='')}.{mode}")  # train%5B%3A5%25%5D


def num_pieces(data, builder, split):
  """config.data.prepare_pieces, or about one piece per DOCS_PER_PIECE documents; never more
  pieces than documents. A split streamed from files is cut at shard boundaries only: runs of
  whole shards of about local_text.PIECE_BYTES each, or prepare_pieces of them."""
  if sources.streamed(builder, split):
    return sources.num_shard_groups(builder, data.prepare_pieces)
  try:
    n = builder.info.splits[split].num_examples
  except Exception:
    n = 0
  pieces = data.prepare_pieces or math.ceil(n / DOCS_PER_PIECE)
  return max(1, min(4096, pieces, n or pieces))


def _piece_name(k, n):
  return f"piece-{k:05d}-of-{n:05d}"


def _read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_dtype(tok):
  return np.uint16 if tok.get_vocab_size() <= 1 << 16 else np.int32


def _describe(tok):
  model = json.loads(tok.to_str())["model"]["type"]
  return f"{model}, vocab {tok.get_vocab_size()}"


def _mismatch(where, found, tok):
  return tokenizer.TokenizerError(
    f"config.data.tokenizer: {where} was tokenized with another tokenizer ({found}; this run's "
    f"is {_describe(tok)}, identity {tokenizer.identity(tok)}); use the same tokenizer "
    "settings, or set config.data.tokenized_dir to a new directory to tokenize again"
  )


def encode(tok, texts, mode, eos_id, stats, chunk=_CHUNK):
  """Encodes documents up to `chunk` (and about _CHUNK_CHARS characters) at a time, in one
  tokenizer call each (encode_ids); yields (tokens, document lengths in tokens or sentences,
  sentence lengths or None) per chunk, int64."""
  buffer, chars = [], 0

  def flush():
    if mode == "documents":
      ids = encode_ids(tok, buffer)
      lengths = np.fromiter(map(len, ids), np.int64, len(ids)) + 1
      ends = np.cumsum(lengths)
      tokens = np.empty(int(ends[-1]), np.int64)
      is_eos = np.zeros(len(tokens), bool)
      is_eos[ends - 1] = True
      tokens[is_eos] = eos_id
      tokens[~is_eos] = _flat(ids, len(tokens) - len(ids))
      out = (tokens, lengths, None)
    else:
      tokens, sent_lengths, counts = encode_sentences(tok, buffer)
      stats["empty"] += int(np.sum(counts == 0))
      out = (tokens, counts[counts > 0], sent_lengths)
    buffer.clear()
    return out

  for text in texts:
    buffer.append(text)
    chars += len(text)
    if len(buffer) >= chunk or chars >= _CHUNK_CHARS:
      yield flush()
      chars = 0
  if buffer:
    yield flush()


def _prepare_piece(path_prefix, texts, tok, mode, eos_id, dtype):
  """Tokenizes one piece into <prefix>.tokens.bin / .docs.npy (/ .sents.npy), then its .json."""
  stats = {"empty": 0, "invalid_utf8": 0}
  folder, name = os.path.split(path_prefix)
  tmp_bin = os.path.join(folder, f".tmp-{os.getpid()}-{name}.tokens.bin")
  doc_lengths, sent_lengths, n_tokens = [], [], 0
  try:
    with open(tmp_bin, "wb") as f:
      for tokens, docs, sents in encode(tok, texts(stats), mode, eos_id, stats):
        tokens.astype(dtype).tofile(f)
        n_tokens += len(tokens)
        doc_lengths.append(docs)
        if sents is not None:
          sent_lengths.append(sents)
    os.replace(tmp_bin, path_prefix + ".tokens.bin")
  finally:  # a shard that fails to read leaves nothing half-written
    if os.path.exists(tmp_bin):
      os.remove(tmp_bin)
  doc_lengths = np.concatenate(doc_lengths) if doc_lengths else np.zeros(0, np.int64)
  offsets = lambda lengths: np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  write_atomic(path_prefix + ".docs.npy", lambda t: np.save(t, offsets(doc_lengths)))
  record = {"tokens": n_tokens, "documents": len(doc_lengths), **stats}
  if mode == "sentences":
    sent_lengths = np.concatenate(sent_lengths) if sent_lengths else np.zeros(0, np.int64)
    write_atomic(path_prefix + ".sents.npy", lambda t: np.save(t, offsets(sent_lengths)))
    record["sentences"] = len(sent_lengths)
  else:
    lengths = doc_lengths - 1
    record["longest_document"] = int(lengths.max()) if len(lengths) else 0
  return record


def prepare(
  data,
  builder,
  split,
  tok,
  mode,
  *,
  process_index=0,
  process_count=1,
  write_manifest=True,
  log=logging.info,
):
  """Tokenizes this process's pieces of `split` (pieces k with k % process_count ==
  process_index), skipping pieces already done; writes the manifest once every piece is done
  (when `write_manifest`). A no-op for a complete split. Returns the split's directory.
  `log(message)` reports each piece done."""
  if mode not in MODES:
    raise ValueError(f"mode {mode!r}; use one of {MODES}")
  out = directory(data, builder, split, mode, tok)
  ident = tokenizer.identity(tok)
  manifest_path = os.path.join(out, "manifest.json")
  if os.path.exists(manifest_path):
    found = _read_json(manifest_path)
    if found["tokenizer"] != ident:
      raise _mismatch(out, found["tokenizer_description"], tok)
    return out
  sources.check_split(builder, split, data.text_key)
  os.makedirs(out, exist_ok=True)
  n = num_pieces(data, builder, split)
  eos_id = tok.token_to_id(data.tokenizer.eos_token)
  dtype = _token_dtype(tok)
  for k in range(process_index, n, process_count):
    prefix = os.path.join(out, _piece_name(k, n))
    if os.path.exists(prefix + ".json"):
      done = _read_json(prefix + ".json")
      if done["tokenizer"] != ident:
        raise _mismatch(prefix, done["tokenizer_description"], tok)
      continue
    texts = lambda stats, k=k: sources.texts(builder, split, data.text_key, (k, n), stats)
    record = _prepare_piece(prefix, texts, tok, mode, eos_id, dtype)
    record.update(tokenizer=ident, tokenizer_description=_describe(tok))
    write_json(prefix + ".json", record)
    log(
      f"tokenized {builder.info.full_name} {split} piece {k + 1}/{n}: "
      f"{record['documents']:,} documents, {record['tokens']:,} tokens"
    )
  if write_manifest:
    write_manifest_if_complete(
      out, n, tok, mode, dict(dataset=builder.info.full_name, split=split, text_key=data.text_key)
    )
  return out


def write_manifest_if_complete(out, n, tok, mode, source):
  """Writes manifest.json when all n pieces are done; returns whether the split is complete."""
  names = [_piece_name(k, n) for k in range(n)]
  if not all(os.path.exists(os.path.join(out, name + ".json")) for name in names):
    return False
  ident, pieces = tokenizer.identity(tok), []
  for name in names:
    record = _read_json(os.path.join(out, name + ".json"))
    if record["tokenizer"] != ident:
      raise _mismatch(os.path.join(out, name), record["tokenizer_description"], tok)
    pieces.append(dict(record, name=name))
  totals = {
    key: sum(p.get(key, 0) for p in pieces)
    for key in ("tokens", "documents", "sentences", *SKIPPED)
  }
  manifest = dict(
    format=FORMAT,
    mode=mode,
    source=source,
    tokenizer=ident,
    tokenizer_description=_describe(tok),
    vocab_size=tok.get_vocab_size(),
    dtype=np.dtype(_token_dtype(tok)).name,
    pieces=pieces,
    **totals,
  )
  write_json(os.path.join(out, "manifest.json"), manifest)
  for stale in glob.glob(os.path.join(out, ".tmp-*")):  # left by killed workers
    os.remove(stale)
  return True


def tokenizer_for(data, built):
  """config.data.tokenizer, trained on a sample of the datasets' train splits (at most
  data.tokenizer.max_train_chars characters, spread over them: sources.training_texts) if it
  is a trained kind."""
  datasets = sources.named(data)
  return tokenizer.get_tokenizer(
    data.tokenizer,
    data.data_dir,
    lambda: sources.training_texts(datasets, built, data.tokenizer.max_train_chars),
  )


def mode_for(data):
  """How a run's text is tokenized: 'sentences' for masked LM (BERT's pairs and packs need
  sentence boundaries; its configs carry data.mlm), else 'documents'."""
  return "sentences" if "mlm" in data else "documents"


def splits(data, eval_only=False):
  """(name, dataset section, split) of every split a run reads (only the evaluation splits
  with `eval_only`)."""
  return [
    (name, src, split)
    for name, src, _ in sources.named(data)
    for split in dict.fromkeys(
      (src.eval_split,) if eval_only else (src.train_split, src.eval_split)
    )
  ]


def prepare_all(data, mode, tok, built, eval_only=False, **kw):
  """Tokenizes this worker's pieces of every split (`kw` as for prepare); returns
  {(name, split): directory}."""
  return {
    (name, split): prepare(src, built[name], split, tok, mode, **kw)
    for name, src, split in splits(data, eval_only)
  }


class TokenStream:
  """The pieces' token files as one read-only sequence of tokens."""

  def __init__(self, arrays):
    self.arrays = arrays
    self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)

  def __len__(self):
    return int(self.offsets[-1])

  def spans(self, starts, length):
    """int32 [len(starts), length]: tokens [start, start + length) for each start."""
    starts = np.asarray(starts, np.int64)
    if len(self.arrays) == 1:
      return self.arrays[0][starts[:, None] + np.arange(length)].astype(np.int32)
    out = np.empty((len(starts), length), np.int32)
    for i, start in enumerate(starts):
      out[i] = self.read(start, start + length)
    return out

  def read(self, start, end):
    """Tokens [start, end) as int32, across piece boundaries."""
    k = int(np.searchsorted(self.offsets, start, side="right")) - 1
    local = start - self.offsets[k]
    if end <= self.offsets[k + 1]:
      return np.asarray(self.arrays[k][local : local + end - start], np.int32)
    parts, pos = [], start
    while pos < end:
      k = int(np.searchsorted(self.offsets, pos, side="right")) - 1
      take = min(end, self.offsets[k + 1]) - pos
      parts.append(self.arrays[k][pos - self.offsets[k] : pos - self.offsets[k] + take])
      pos += take
    return np.concatenate(parts).astype(np.int32)


class Tokenized:
  """An opened, complete tokenized split."""

  def __init__(self, path, manifest):
    self.path, self.manifest = path, manifest
    dtype = np.dtype(manifest["dtype"])
    arrays = []
    for piece in manifest["pieces"]:
      file = os.path.join(path, piece["name"] + ".tokens.bin")
      size = os.path.getsize(file) if os.path.exists(file) else -1
      if size != piece["tokens"] * dtype.itemsize:
        raise sources.DataError(
          f"config.data: {file} has {size} bytes, not the {piece['tokens'] * dtype.itemsize} "
          f"its manifest records; delete {path} and prepare it again"
        )
      arrays.append(np.memmap(file, dtype, mode="r") if piece["tokens"] else np.zeros(0, dtype))
    self.stream = TokenStream(arrays)

  @property
  def mode(self):
    return self.manifest["mode"]

  @property
  def num_tokens(self):
    return self.manifest["tokens"]

  def document_offsets(self):
    """Start of every document and the end: token offsets ('documents') or sentence indices
    ('sentences'); the pieces' offset files joined, each shifted by the pieces before it."""
    unit = "sentences" if self.mode == "sentences" else "tokens"
    out, shift = [np.zeros(1, np.int64)], 0
    for piece in self.manifest["pieces"]:
      local = np.load(os.path.join(self.path, piece["name"] + ".docs.npy"))
      out.append(local[1:] + shift)
      shift += piece[unit]
    return np.concatenate(out)

  def piece_sentences(self, k):
    """'sentences' mode: piece k as (its tokens, memory-mapped; the token offset of each
    sentence's start and the end; the first sentence of each document; one past the last of
    each), the offsets as lists."""
    name = os.path.join(self.path, self.manifest["pieces"][k]["name"])
    sents, docs = np.load(name + ".sents.npy").tolist(), np.load(name + ".docs.npy").tolist()
    return self.stream.arrays[k], sents, docs[:-1], docs[1:]

  def piece_documents(self, k):
    """'sentences' mode: the documents of piece k, each a list of sentence token arrays
    (views of the memory-mapped piece)."""
    tokens, sents, starts, ends = self.piece_sentences(k)
    sentences = [tokens[a:b] for a, b in zip(sents[:-1], sents[1:])]
    return [sentences[a:b] for a, b in zip(starts, ends)]

  def documents(self):
    """'sentences' mode: the documents of every piece, in order."""
    return [d for k in range(len(self.manifest["pieces"])) for d in self.piece_documents(k)]

  def summary(self):
    m = self.manifest
    skipped = ", ".join(
      f"{m[k]} {k.replace('_', ' ')}{'' if k.startswith('bad_') else ' documents'}"
      for k in SKIPPED
      if m.get(k)
    )
    return (
      f"{m['source']['dataset']} {m['source']['split']}: {m['documents']:,} documents, "
      f"{m['tokens']:,} tokens" + (f"; skipped {skipped}" if skipped else "")
    )


def open_split(data, builder, split, tok, mode):
  """Opens a prepared split; a clear error if it is missing, incomplete or of another tokenizer."""
  path = directory(data, builder, split, mode, tok)
  manifest_path = os.path.join(path, "manifest.json")
  if not os.path.exists(manifest_path):
    done = len(glob.glob(os.path.join(path, "piece-*.json")))
    raise sources.DataError(
      f"config.data: split {split!r} of {builder.info.full_name} is not tokenized in {path} "
      f"({done} pieces done); run `python -m input_pipeline.prepare` with this config"
    )
  manifest = _read_json(manifest_path)
  if manifest["tokenizer"] != tokenizer.identity(tok):
    raise _mismatch(path, manifest["tokenizer_description"], tok)
  if manifest["format"] != FORMAT or manifest["mode"] != mode:
    raise sources.DataError(
      f"config.data: {path} holds format {manifest['format']} mode "
      f"{manifest['mode']!r}; delete it and prepare again"
    )
  return Tokenized(path, manifest)
