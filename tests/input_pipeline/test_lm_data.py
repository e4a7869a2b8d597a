"""Packing and step-indexed batches (input_pipeline/lm_data.py)."""

import numpy as np
import pytest

from configs import common
from input_pipeline import lm_data, tokenizer
from input_pipeline.corpora import sources, tokenized

EOS = "<|endoftext|>"


def _char_tok(tmp_path, texts):
  cfg = common.data_config().tokenizer
  cfg.kind = "char"
  return tokenizer.get_tokenizer(cfg, str(tmp_path / "tok"), lambda: iter(texts))


def _windows(
  n_tokens=101, seq_len=10, batch_size=2, seed=0, shuffle=True, document_mask=False, positions=None
):
  tokens = np.arange(n_tokens, dtype=np.int32)  # a token's value is its index in the stream
  if positions is None:
    positions = np.arange(n_tokens, dtype=np.int32)
  del positions
  return lm_data.PackedWindows(tokens, seq_len, batch_size, seed, shuffle, document_mask)


def _starts(batch):
  return [int(s) for s in batch["inputs"][:, 0]]


# ----------------------------------------------------------------------------- tokenize_stream


def test_tokenize_stream_joins_documents_with_eos(tmp_path):
  docs = ["hello", "", "wide world\n", "a"]
  tok = _char_tok(tmp_path, docs)
  eos = tok.token_to_id(EOS)
  tokens, positions = lm_data.tokenize_stream(tok, docs, eos)
  assert tokens.dtype == np.int32 and positions.dtype == np.int32
  expected = []
  for d in docs:
    expected += tok.encode(d, add_special_tokens=False).ids + [eos]
  assert tokens.tolist() == expected
  assert len(tokens) == sum(len(d) + 1 for d in docs)
  assert positions.tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1]
  # the position resets to 0 exactly on the token after each EOS
  assert positions[0] == 0
  np.testing.assert_array_equal(positions[1:] == 0, tokens[:-1] == eos)
  assert (tokens == eos).sum() == len(docs)
  assert tok.decode(tokens[:5].tolist()) == "hello"


def test_tokenize_stream_chunking_does_not_change_the_stream(tmp_path):
  docs = [f"doc {i}: " + "xyz" * i for i in range(25)]
  tok = _char_tok(tmp_path, docs)
  eos = tok.token_to_id(EOS)
  whole = lm_data.tokenize_stream(tok, iter(docs), eos)
  for chunk in (1, 2, 7):
    got = lm_data.tokenize_stream(tok, iter(docs), eos, chunk=chunk)
    np.testing.assert_array_equal(got[0], whole[0])
    np.testing.assert_array_equal(got[1], whole[1])


def test_tokenize_stream_empty(tmp_path):
  tok = _char_tok(tmp_path, ["abc"])
  tokens, positions = lm_data.tokenize_stream(tok, [], tok.token_to_id(EOS))
  assert tokens.shape == positions.shape == (0,)


# ----------------------------------------------------------------------------- PackedWindows


def test_targets_are_inputs_shifted_by_one():
  for shuffle in (True, False):
    w = _windows(n_tokens=110, shuffle=shuffle)
    for step in range(12):
      b = w.batch(step)
      assert set(b) == {"inputs", "targets"}
      assert b["inputs"].shape == b["targets"].shape == (2, 10)
      np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
      np.testing.assert_array_equal(b["targets"], b["inputs"] + 1)  # token value == stream index
      np.testing.assert_array_equal(b["inputs"], b["inputs"][:, :1] + np.arange(10))  # contiguous


def test_windows_overlap_by_one_token_without_padding():
  w = _windows(n_tokens=101, seq_len=10, batch_size=1, shuffle=False)
  assert w.num_windows == 10
  rows = [w.batch(s) for s in range(10)]
  assert _starts(w.batch(0)) == [0]
  for a, b in zip(rows, rows[1:]):
    assert a["targets"][0, -1] == b["inputs"][0, 0]  # stride seq_len: one shared token
  targets = np.concatenate([r["targets"][0] for r in rows])
  np.testing.assert_array_equal(targets, np.arange(1, 101))  # every token a target once
  # a stream one token short of 10 full windows gives 9
  assert _windows(n_tokens=100, seq_len=10, shuffle=False).num_windows == 9
  assert _windows(n_tokens=11, seq_len=10, shuffle=False).num_windows == 1
  assert _windows(n_tokens=10, seq_len=10, shuffle=False).num_windows == 0


def test_shuffled_windows_leave_room_for_the_epoch_shift():
  # shuffled epochs shift every start by an offset in [0, seq_len): seq_len - 1 tokens of slack
  for n in range(11, 140):
    w = _windows(n_tokens=n, seq_len=10, shuffle=True)
    if n - 1 >= 19:
      assert w.num_windows * 10 + 9 <= n - 1 < (w.num_windows + 1) * 10 + 9
    else:  # too small to shift: one unshifted window
      assert w.num_windows == 1
    if w.num_windows:
      for e in range(4):  # never reads past the stream
        w.windows(np.arange(e * w.num_windows, (e + 1) * w.num_windows))


def test_shuffle_false_is_in_order_and_wraps():
  w = _windows(n_tokens=101, seq_len=10, batch_size=3, shuffle=False)
  starts = [s for step in range(7) for s in _starts(w.batch(step))]
  assert starts == [10 * (i % 10) for i in range(21)]


def test_batch_is_a_pure_function_of_seed_and_step():
  a, b = _windows(n_tokens=110, seed=3), _windows(n_tokens=110, seed=3)
  steps = [0, 9, 1, 4, 4, 23, 0, 5, 17]  # out of order, repeated, across epochs
  for step in steps:
    x, y = a.batch(step), b.batch(step)
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
    np.testing.assert_array_equal(x["targets"], y["targets"])
  fresh = _windows(n_tokens=110, seed=3)
  for step in range(12):
    np.testing.assert_array_equal(a.batch(step)["inputs"], fresh.batch(step)["inputs"])
  # a different seed (or dataset, as the trainer passes [seed, dataset index]) gives another
  # order
  order = lambda seed: [
    s
    for step in range(5)  # noqa: E731
    for s in _starts(_windows(n_tokens=110, seed=seed).batch(step))
  ]
  assert order(3) != order(4)
  assert order([3, 0]) == order([3, 0])
  assert order([3, 0]) != order([3, 1])


def _epoch_starts(w, epoch):
  n = w.num_windows
  assert n % w.batch_size == 0
  per_epoch = n // w.batch_size
  return [
    s for step in range(epoch * per_epoch, (epoch + 1) * per_epoch) for s in _starts(w.batch(step))
  ]


def test_every_window_once_per_epoch_and_epochs_reshuffle():
  w = _windows(n_tokens=110, seq_len=10, batch_size=2, seed=0, shuffle=True)
  assert w.num_windows == 10
  epochs = [_epoch_starts(w, e) for e in range(6)]
  shifts = set()
  for starts in epochs:
    shift = min(starts)
    assert 0 <= shift < 10
    # one window at every stride from the epoch's shift: each covered token a target exactly once
    assert sorted(starts) == [shift + 10 * k for k in range(10)]
    shifts.add(shift)
  assert len(shifts) > 1  # epochs see shifted windows, not the same ones again
  assert [s - min(epochs[0]) for s in epochs[0]] != list(range(0, 100, 10))  # actually shuffled
  orders = [[(s - min(st)) // 10 for s in st] for st in epochs]
  assert all(a != b for a, b in zip(orders, orders[1:]))
  assert w.epoch_of(5) == 1.0 and w.epoch_of(2) == 0.4


def test_batch_straddling_an_epoch_boundary():
  # 10 windows, 3 rows per step: step 3 takes the last window of epoch 0 and two of epoch 1
  w = _windows(n_tokens=110, seq_len=10, batch_size=3, seed=1, shuffle=True)
  assert w.num_windows == 10
  starts = [s for step in range(10) for s in _starts(w.batch(step))]
  for e in range(3):
    epoch = starts[10 * e : 10 * (e + 1)]
    assert sorted(epoch) == [min(epoch) + 10 * k for k in range(10)]
  fresh = _windows(n_tokens=110, seq_len=10, batch_size=3, seed=1, shuffle=True)
  assert _starts(fresh.batch(3)) == starts[9:12]
  one_row = _windows(n_tokens=110, seq_len=10, batch_size=1, seed=1, shuffle=True)
  assert [s for step in range(30) for s in _starts(one_row.batch(step))] == starts


def test_document_mask_positions_and_segments(tmp_path):
  docs = [
    "short",
    "a somewhat longer document here",
    "x",
    "",
    "mid-sized text",
    "another one that spans windows for sure, it is long enough",
  ] * 3
  tok = _char_tok(tmp_path, docs)
  eos = tok.token_to_id(EOS)
  tokens, doc_pos = lm_data.tokenize_stream(tok, docs, eos)
  seq_len = 16
  w = lm_data.PackedWindows(tokens, seq_len, 4, 0, False, True, eos)
  plain = lm_data.PackedWindows(tokens, seq_len, 4, 0, False, False, eos)
  steps = w.num_windows // 4
  assert steps >= 3
  saw_change = False
  for step in range(steps):
    b = w.batch(step)
    assert set(b) == {"inputs", "targets", "positions", "segment_ids"}
    np.testing.assert_array_equal(b["inputs"], plain.batch(step)["inputs"])
    pos, seg, inp = b["positions"], b["segment_ids"], b["inputs"]
    assert pos.shape == seg.shape == inp.shape == (4, seq_len)
    for r in range(4):
      start = (step * 4 + r) * seq_len
      np.testing.assert_array_equal(inp[r], tokens[start : start + seq_len])
      expected = doc_pos[start : start + seq_len].copy()
      carried = np.cumsum(expected == 0) == 0  # a document begun in an earlier window
      expected[carried] -= expected[0]
      np.testing.assert_array_equal(pos[r], expected)
      # within a document positions count up by one
      same = seg[r, 1:] == seg[r, :-1]
      np.testing.assert_array_equal(pos[r, 1:][same], pos[r, :-1][same] + 1)
      # the segment changes exactly where the position resets to 0, i.e. right after an EOS
      np.testing.assert_array_equal(~same, pos[r, 1:] == 0)
      np.testing.assert_array_equal(~same, inp[r, :-1] == eos)
      assert np.all(np.diff(seg[r]) >= 0) and seg[r, 0] >= 1
      saw_change |= bool((~same).any())
  assert saw_change


def test_document_mask_positions_fit_the_window(tmp_path):
  docs = ["a long document " * 10, "short", "another long one " * 6]
  tok = _char_tok(tmp_path, docs)
  tokens, _ = lm_data.tokenize_stream(tok, docs, tok.token_to_id(EOS))
  seq_len = 16
  w = lm_data.PackedWindows(tokens, seq_len, 2, 0, False, True, tok.token_to_id(EOS))
  for step in range(w.num_windows // 2):
    pos = w.batch(step)["positions"]
    assert pos.min() >= 0 and pos.max() < seq_len  # valid indices into a max_len >= seq_len table


# ----------------------------------------------------------------------------- load


def _prepared_char_corpus(tmp_path, text, **data_overrides):
  """`text` as a one-file local_text corpus (last 10% validation), prepared, with a char
  tokenizer; returns (config.data, builder, tokenizer)."""
  path = tmp_path / "input.txt"
  path.write_text(text)
  data = common.data_config()
  data.data_dir = str(tmp_path / "tfds")
  data.files = str(path)
  data.split_by = "tail"
  data.validation_fraction = 0.1
  data.tokenizer.kind = "char"
  data.update(data_overrides)
  b = sources.builder(data)
  sources.prepare(b)
  tok = tokenizer.get_tokenizer(
    data.tokenizer, data.data_dir, lambda: sources.texts(b, "train", "text")
  )
  return data, b, tok


def _load(data, b, tok, split, **kw):
  tokenized.prepare(data, b, split, tok, "documents")
  opened = tokenized.open_split(data, b, split, tok, "documents")
  return lm_data.load(opened, data, eos_id=tok.token_to_id(EOS), **kw)


def _all_tokens(windows):
  return windows.stream.read(0, len(windows.stream))


def test_load(tmp_path):
  text = "".join(f"line {i}: the five boxing wizards jump quickly.\n" for i in range(40))
  data, b, tok = _prepared_char_corpus(tmp_path, text, document_mask=True)
  n_train = int(len(text) * 0.9)
  n_val = len(text) - n_train
  assert n_val + 1 < 200 < n_train

  train = _load(data, b, tok, "train", batch_size=2, seq_len=64, seed=0, shuffle=True)
  assert len(train.stream) == n_train + 1  # the text and one EOS
  assert _all_tokens(train)[-1] == tok.token_to_id(EOS)
  assert tok.decode(_all_tokens(train)[:-1].tolist()) == text[:n_train]
  # shuffled: as many windows as leave seq_len - 1 tokens of slack for the per-epoch shift
  assert train.num_windows * 64 + 63 <= n_train < (train.num_windows + 1) * 64 + 63
  ordered = _load(data, b, tok, "train", batch_size=2, seq_len=64, seed=0, shuffle=False)
  assert ordered.num_windows == n_train // 64
  np.testing.assert_array_equal(_all_tokens(ordered), _all_tokens(train))
  batch = train.batch(0)
  assert set(batch) == {"inputs", "targets", "positions", "segment_ids"}
  assert batch["inputs"].shape == (2, 64)

  with pytest.raises(
    sources.DataError,
    match=r"validation: .*fewer than one window.*"
    r"config\.batch\.seq_len",
  ):
    _load(data, b, tok, "validation", batch_size=2, seq_len=200, seed=0, shuffle=False)
  # exactly one window needs seq_len + 1 tokens
  val = _load(data, b, tok, "validation", batch_size=1, seq_len=n_val, seed=0, shuffle=False)
  assert val.num_windows == 1
  with pytest.raises(sources.DataError, match="fewer than one window"):
    _load(data, b, tok, "validation", batch_size=1, seq_len=n_val + 1, seed=0, shuffle=False)


def test_load_one_window_when_shuffled(tmp_path):
  text = "".join(f"line {i}: sphinx of black quartz, judge my vow.\n" for i in range(20))
  data, b, tok = _prepared_char_corpus(tmp_path, text)
  n_val = len(text) - int(len(text) * 0.9)  # n_val + 1 tokens == one window of seq_len=n_val
  val = _load(data, b, tok, "validation", batch_size=1, seq_len=n_val, seed=0, shuffle=True)
  assert val.num_windows == 1
  np.testing.assert_array_equal(val.batch(0)["inputs"][0], _all_tokens(val)[:-1])
