"""BERT masked-LM corruption (input_pipeline/masking.py) and the step-indexed loader of masked
examples (bert_data.MaskedExamples): statistics, layout, whole words, determinism."""

import numpy as np
import pytest

from configs import bert, common
from input_pipeline import bert_data, masking, tokenizer

SPECIALS = list(tokenizer.BERT_SPECIALS)  # ids 0..4, as in a trained WordPiece vocabulary
PAD, UNK, CLS, SEP, MASK = range(5)
NUM_WORDS, NUM_PIECES = 600, 400
VOCAB = SPECIALS + [f"w{i}" for i in range(NUM_WORDS)] + [f"##p{i}" for i in range(NUM_PIECES)]
WORD_IDS = np.arange(5, 5 + NUM_WORDS)
PIECE_IDS = np.arange(5 + NUM_WORDS, len(VOCAB))
NON_SPECIAL = np.arange(5, len(VOCAB))


class FakeTok:
  """What make_spec needs of a tokenizer."""

  def __init__(self, tokens):
    self.tokens = list(tokens)

  def get_vocab_size(self):
    return len(self.tokens)

  def id_to_token(self, i):
    return self.tokens[i]


def _mlm(seq_len=128, **overrides):
  cfg = bert.mlm_config(seq_len)
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def _spec(max_predictions=128, tokens=VOCAB, **overrides):
  return masking.make_spec(
    FakeTok(tokens), range(5), MASK, _mlm(max_predictions=max_predictions, **overrides)
  )


def _example_rows(n, seq_len, seed=0, body=lambda rng, k: rng.choice(NON_SPECIAL, k)):
  """Rows laid out like real examples: [CLS] A [SEP] (B [SEP]) then [PAD]s, a few [UNK]s."""
  rng = np.random.default_rng(seed)
  rows = np.full((n, seq_len), PAD, np.int32)
  lengths = rng.integers(seq_len * 3 // 4, seq_len + 1, n)
  lengths[: n // 4] = seq_len  # plenty of full rows
  for i, length in enumerate(lengths):
    if rng.random() < 0.5:
      toks = [CLS, *body(rng, length - 2), SEP]
    else:
      cut = int(rng.integers(1, length - 3))
      b = body(rng, length - 3)
      toks = [CLS, *b[:cut], SEP, *b[cut:], SEP]
    toks = np.asarray(toks, np.int32)
    unk = rng.random(length) < 0.02
    unk[[0, length - 1]] = False
    toks[unk & ~np.isin(toks, [CLS, SEP])] = UNK
    rows[i, :length] = toks
  return rows, lengths


def _check_layout(tokens, length, spec, out):
  """Invariants of one mask_row result; returns the selected positions."""
  inputs, positions, ids, weights = out
  p = spec.max_predictions
  assert inputs.shape == tokens.shape and inputs.dtype == tokens.dtype
  assert positions.shape == ids.shape == weights.shape == (p,)
  assert positions.dtype == np.int32 and ids.dtype == np.int32 and weights.dtype == np.float32
  k = int(weights.sum())
  np.testing.assert_array_equal(weights, np.r_[np.ones(k), np.zeros(p - k)])
  sel = positions[:k]
  assert np.all(np.diff(sel) > 0), "positions must be sorted and distinct"
  np.testing.assert_array_equal(positions[k:], 0)
  np.testing.assert_array_equal(ids[k:], 0)
  np.testing.assert_array_equal(ids[:k], tokens[sel])  # labels are the original tokens
  assert np.all(sel < length), "selected padding"
  assert not np.isin(tokens[sel], spec.special_ids).any(), "selected a special token"
  unselected = np.ones(len(tokens), bool)
  unselected[sel] = False
  np.testing.assert_array_equal(inputs[unselected], tokens[unselected])
  return sel


# ----------------------------------------------------------------------------- make_spec


def test_make_spec_from_a_tokenizer_and_config():
  tokens = VOCAB + [None]  # an id without a token (a gap) is neither special nor a piece
  spec = masking.make_spec(FakeTok(tokens), [3, 0, 2, 3, 1, 4], MASK, _mlm(max_predictions=7))
  np.testing.assert_array_equal(spec.special_ids, [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(spec.replacement_ids, np.arange(5, len(tokens)))
  np.testing.assert_array_equal(
    spec.continuation, [t is not None and t.startswith("##") for t in tokens]
  )
  assert spec.continuation[PIECE_IDS].all() and not spec.continuation[WORD_IDS].any()
  assert spec.mask_id == MASK and spec.max_predictions == 7 and not spec.whole_word
  assert (spec.mask_prob, spec.mask_token_prob, spec.random_token_prob) == (0.15, 0.8, 0.1)
  assert masking.make_spec(FakeTok(VOCAB), range(5), MASK, _mlm(whole_word=True)).whole_word


def test_required_predictions_and_config_defaults():
  assert masking.required_predictions(128, 0.15) == 19
  assert masking.required_predictions(512, 0.15) == 77
  assert masking.required_predictions(4, 0.15) == 1  # at least one
  assert bert.mlm_config(128).max_predictions >= 19
  assert bert.mlm_config(512).max_predictions >= 77


# ----------------------------------------------------------------------------- statistics


def test_masking_statistics_over_many_rows():
  seq_len, n = 128, 3000
  spec = _spec(max_predictions=seq_len)
  rows, lengths = _example_rows(n, seq_len)
  n_real = n_sel = n_mask = n_rand = n_keep = 0
  replaced = []
  sel_at = np.zeros(seq_len)
  real_at = np.zeros(seq_len)
  for i in range(n):
    length = int(lengths[i])
    before = rows[i].copy()
    out = masking.mask_row(rows[i], length, spec, np.random.default_rng([5, i]))
    np.testing.assert_array_equal(rows[i], before)  # the stored example is not modified
    sel = _check_layout(rows[i], length, spec, out)
    real = ~np.isin(rows[i][:length], spec.special_ids)
    assert len(sel) == min(spec.max_predictions, max(1, round(length * 0.15)))
    n_real += real.sum()
    n_sel += len(sel)
    real_at[:length] += real
    sel_at[sel] += 1
    new, old = out[0][sel], rows[i][sel]
    n_mask += np.sum(new == MASK)
    n_keep += np.sum(new == old)
    rand = (new != MASK) & (new != old)
    n_rand += rand.sum()
    replaced.append(new[rand])
  assert n_sel / n_real == pytest.approx(0.15, abs=0.015)
  assert n_mask + n_keep + n_rand == n_sel
  assert n_mask / n_sel == pytest.approx(0.8, abs=0.03)
  assert n_rand / n_sel == pytest.approx(0.1, abs=0.03)
  # "unchanged" includes the rare random draw equal to the original (1 in ~1000)
  assert n_keep / n_sel == pytest.approx(0.1, abs=0.03)
  replaced = np.concatenate(replaced)
  assert not np.isin(replaced, spec.special_ids).any(), "random token drew a special id"
  assert replaced.min() >= 5 and replaced.max() < len(VOCAB)
  assert len(np.unique(replaced)) > 0.5 * len(NON_SPECIAL)  # drawn from the whole vocabulary
  # every real position is equally likely to be selected (no bias to the start or end)
  enough = real_at >= 1000
  assert enough.sum() > 90
  rate = sel_at[enough] / real_at[enough]
  assert rate.min() > 0.11 and rate.max() < 0.19, (rate.min(), rate.max())
  assert sel_at[0] == 0


def test_specials_and_padding_are_never_selected_even_when_few_real_tokens():
  spec = _spec(max_predictions=20)
  # [CLS] x [SEP] y [SEP] [PAD]...: only 2 real tokens but round(5 * .15) = 1 wanted
  row = np.array([CLS, 7, SEP, 9, SEP] + [PAD] * 11, np.int32)
  chosen = set()
  for s in range(50):
    sel = _check_layout(row, 5, spec, masking.mask_row(row, 5, spec, np.random.default_rng(s)))
    assert len(sel) == 1
    chosen.update(sel.tolist())
  assert chosen == {1, 3}
  # a row of mostly [UNK]/specials: fewer candidates than wanted -> all candidates, no more
  row = np.array([CLS] + [UNK] * 20 + [11, 12] + [UNK] * 20 + [SEP] + [PAD] * 20, np.int32)
  sel = _check_layout(row, 44, spec, masking.mask_row(row, 44, spec, np.random.default_rng(0)))
  np.testing.assert_array_equal(sel, [21, 22])
  # no real token at all: nothing selected, all weights 0, input unchanged
  row = np.array([CLS, SEP, PAD, PAD], np.int32)
  inputs, positions, ids, weights = masking.mask_row(row, 2, spec, np.random.default_rng(0))
  assert weights.sum() == 0 and not positions.any() and not ids.any()
  np.testing.assert_array_equal(inputs, row)


def test_max_predictions_caps_the_selection():
  rows, lengths = _example_rows(200, 128, seed=1)
  for cap in (1, 5, 19):
    spec = _spec(max_predictions=cap)
    for i in range(len(rows)):
      out = masking.mask_row(rows[i], int(lengths[i]), spec, np.random.default_rng(i))
      sel = _check_layout(rows[i], int(lengths[i]), spec, out)
      assert len(sel) == min(cap, round(lengths[i] * 0.15))


def test_probabilities_are_honoured():
  rows, lengths = _example_rows(50, 64, seed=2)
  all_mask = _spec(max_predictions=64, mask_token_prob=1.0, random_token_prob=0.0)
  none_changed = _spec(max_predictions=64, mask_token_prob=0.0, random_token_prob=0.0)
  all_random = _spec(max_predictions=64, mask_token_prob=0.0, random_token_prob=1.0)
  changed = total = 0
  for i in range(len(rows)):
    length = int(lengths[i])
    inputs, positions, _, weights = masking.mask_row(
      rows[i], length, all_mask, np.random.default_rng(i)
    )
    sel = positions[weights > 0]
    assert len(sel) and np.all(inputs[sel] == MASK)
    inputs, positions, _, weights = masking.mask_row(
      rows[i], length, none_changed, np.random.default_rng(i)
    )
    assert weights.sum() > 0
    np.testing.assert_array_equal(inputs, rows[i])
    inputs, positions, _, weights = masking.mask_row(
      rows[i], length, all_random, np.random.default_rng(i)
    )
    sel = positions[weights > 0]
    assert not np.isin(inputs[sel], all_random.special_ids).any()
    changed += np.sum(inputs[sel] != rows[i][sel])
    total += len(sel)
  assert changed / total > 0.98


# ----------------------------------------------------------------------------- whole words


def _words_body(rng, k):
  """k tokens of whole words: a word start followed by 0-3 '##' pieces; sometimes an orphan
  piece first (a continuation right after [CLS]/[SEP] starts a word)."""
  out = []
  if rng.random() < 0.3:
    out.append(int(rng.choice(PIECE_IDS)))
  while len(out) < k:
    out.append(int(rng.choice(WORD_IDS)))
    out.extend(rng.choice(PIECE_IDS, int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))).tolist())
  return out[:k]


def _word_groups(tokens, length):
  """Positions of each word: a non-special token that is not a '##' piece, or that follows a
  special token, starts a word; the '##' pieces after it continue it."""
  groups, cur = [], None
  for pos in range(length):
    t = int(tokens[pos])
    if t < 5:
      cur = None
      continue
    if cur is None or not VOCAB[t].startswith("##"):
      cur = []
      groups.append(cur)
    cur.append(pos)
  return groups


def _split_words(groups, sel):
  sel = set(sel.tolist())
  return [g for g in groups if 0 < len(sel.intersection(g)) < len(g)]


def test_whole_word_masking_selects_every_piece_of_a_word():
  seq_len, n = 128, 400
  rows, lengths = _example_rows(n, seq_len, seed=3, body=_words_body)
  whole = _spec(max_predictions=20, whole_word=True)
  plain = _spec(max_predictions=20)
  full = multi = plain_split = 0
  for i in range(n):
    length = int(lengths[i])
    groups = _word_groups(rows[i], length)
    num = min(20, round(length * 0.15))
    out = masking.mask_row(rows[i], length, whole, np.random.default_rng([1, i]))
    sel = _check_layout(rows[i], length, whole, out)
    assert not _split_words(groups, sel), f"row {i}: a word was partly selected"
    assert len(sel) <= num
    full += len(sel) == num
    multi += sum(len(g) > 1 and g[0] in sel for g in groups)
    sel = _check_layout(
      rows[i],
      length,
      plain,
      masking.mask_row(rows[i], length, plain, np.random.default_rng([1, i])),
    )
    plain_split += len(_split_words(groups, sel))
  assert full > 0.95 * n  # whole words still fill the quota (single-piece words fit the gaps)
  assert multi > n  # multi-piece words are selected, not avoided
  assert plain_split > n  # the check above has teeth: token-level masking splits words


def test_whole_word_masking_with_a_real_wordpiece_vocabulary(tmp_path):
  pieces = [
    "un",
    "##believ",
    "##able",
    "play",
    "##ing",
    "##ed",
    "the",
    "cat",
    "dog",
    "s",
    "##tr",
    "##ang",
    "##ely",
    "re",
    "##do",
    "##ne",
    ".",
    ",",
  ]
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(SPECIALS + pieces) + "\n", encoding="utf-8")
  cfg = common.data_config().tokenizer
  cfg.update(kind="file", path=str(path), eos_token="[SEP]")
  tok = tokenizer.get_tokenizer(cfg, str(tmp_path), None)
  ids = tokenizer.check_bert_specials(tok)
  spec = masking.make_spec(
    tok,
    [ids[t] for t in tokenizer.BERT_SPECIALS],
    ids["[MASK]"],
    _mlm(max_predictions=20, whole_word=True),
  )
  np.testing.assert_array_equal(
    spec.continuation, [tok.id_to_token(i).startswith("##") for i in range(tok.get_vocab_size())]
  )
  text = ("The cat, strangely unbelievable, played; the dog redone playing. " * 4).strip()
  enc = tok.encode(text, add_special_tokens=False)
  assert "##believ" in enc.tokens and "[UNK]" in enc.tokens  # ';' is unknown
  tokens = np.array([ids["[CLS]"], *enc.ids, ids["[SEP]"]], np.int32)
  words = {}
  for pos, w in enumerate(enc.word_ids):
    if enc.tokens[pos] != "[UNK]":
      words.setdefault(w, []).append(pos + 1)
  groups = list(words.values())
  assert any(len(g) == 3 for g in groups)
  selected_multi = 0
  for s in range(200):
    out = masking.mask_row(tokens, len(tokens), spec, np.random.default_rng(s))
    sel = _check_layout(tokens, len(tokens), spec, out)
    assert not _split_words(groups, sel), [enc.tokens[p - 1] for p in sel]
    assert 0 < len(sel) <= round(len(tokens) * 0.15)
    selected_multi += sum(len(g) > 1 and g[0] in sel for g in groups)
  assert selected_multi > 100


# ----------------------------------------------------------------------------- MaskedExamples


def _examples(n=24, seq_len=32, seed=0):
  """Pairs with distinct lengths 8.. (a batch's input_mask identifies its rows)."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    length = 8 + i % (seq_len - 7)
    cut = int(rng.integers(1, length - 3))
    body = rng.choice(NON_SPECIAL, length - 3).tolist()
    tokens = [CLS, *body[:cut], SEP, *body[cut:], SEP]
    out.append((tokens, [0] * (cut + 2) + [1] * (length - cut - 2), bool(i % 2)))
  return out


def _loader(examples=None, seed=(3, 0), shuffle=True, batch_size=8, nsp=True, max_predictions=6):
  return bert_data.MaskedExamples.from_examples(
    _examples() if examples is None else examples,
    seq_len=32,
    pad_id=PAD,
    batch_size=batch_size,
    seed=list(seed),
    shuffle=shuffle,
    spec=_spec(max_predictions=max_predictions),
    nsp=nsp,
  )


def _assert_batches_equal(a, b):
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _masks_differ(a, b):
  return not (
    np.array_equal(a["inputs"], b["inputs"])
    and np.array_equal(a["masked_positions"], b["masked_positions"])
  )


def test_batch_contents_match_the_examples():
  examples = _examples()
  loader = _loader(examples, shuffle=False)
  by_length = {len(t): (t, ty, r) for t, ty, r in examples}
  assert loader.num_examples == 24
  for step in range(3):
    b = loader.batch(step)
    assert b["inputs"].shape == b["type_ids"].shape == b["input_mask"].shape == (8, 32)
    assert (
      b["masked_positions"].shape == b["masked_ids"].shape == b["masked_weights"].shape == (8, 6)
    )
    np.testing.assert_array_equal(b["example_weights"], np.ones(8))
    for j in range(8):
      length = int(b["input_mask"][j].sum())
      np.testing.assert_array_equal(b["input_mask"][j], [1] * length + [0] * (32 - length))
      tokens, types, is_random = by_length[length]
      row = np.array(tokens + [PAD] * (32 - length))
      k = int(b["masked_weights"][j].sum())
      assert 0 < k <= 6
      pos = b["masked_positions"][j, :k]
      np.testing.assert_array_equal(b["masked_ids"][j, :k], row[pos])
      keep = np.ones(32, bool)
      keep[pos] = False
      np.testing.assert_array_equal(b["inputs"][j][keep], row[keep])
      np.testing.assert_array_equal(b["type_ids"][j], types + [0] * (32 - length))
      assert b["nsp_labels"][j] == int(is_random)
  # unshuffled: examples in order; rows of step s are s*8 .. s*8+7 (mod 24)
  np.testing.assert_array_equal(loader.batch(1)["input_mask"].sum(1), 8 + np.arange(8, 16))
  assert "nsp_labels" not in _loader(examples, nsp=False).batch(0)


def test_batches_are_deterministic_and_masked_afresh_each_step():
  a, b = _loader(), _loader()
  for step in (0, 5, 2):
    _assert_batches_equal(a.batch(step), b.batch(step))
  # resume: a fresh loader's batch of step 7 equals that of a loader that walked steps 0..7
  walked = _loader()
  for step in range(8):
    last = walked.batch(step)
  _assert_batches_equal(_loader().batch(7), last)
  # unshuffled, one batch = all examples: same rows every step, but new masks
  small = _examples(n=8)
  x = _loader(small, shuffle=False)
  s0, s1 = x.batch(0), x.batch(1)
  np.testing.assert_array_equal(s0["input_mask"], s1["input_mask"])
  assert _masks_differ(s0, s1)
  differ = sum(_masks_differ(x.batch(0), x.batch(s)) for s in range(1, 6))
  assert differ == 5
  # another seed: other masks (and another shuffle)
  other = _loader(seed=(4, 0))
  assert _masks_differ(a.batch(0), other.batch(0))
  assert _masks_differ(
    _loader(small, shuffle=False).batch(0), _loader(small, shuffle=False, seed=(4, 0)).batch(0)
  )
  # the dataset index is part of the seed
  assert _masks_differ(_loader(small, shuffle=False, seed=(3, 1)).batch(0), s0)


def test_shuffle_visits_every_example_once_per_epoch():
  loader = _loader()  # 24 examples, batches of 8: 3 steps an epoch
  epochs = []
  for epoch in range(3):
    lengths = np.concatenate([loader.batch(epoch * 3 + s)["input_mask"].sum(1) for s in range(3)])
    assert sorted(lengths.tolist()) == list(range(8, 32))
    epochs.append(lengths.tolist())
  assert epochs[0] != list(range(8, 32))  # shuffled
  assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled per epoch
  assert loader.epoch_of(3) == 1.0 and loader.epoch_of(4) == pytest.approx(32 / 24)
  # a batch straddling two epochs (batch size not dividing the examples)
  odd = _loader(batch_size=10)
  seen = np.concatenate([odd.batch(s)["input_mask"].sum(1) for s in range(12)])  # 5 epochs
  for e in range(5):
    assert sorted(seen[e * 24 : (e + 1) * 24].tolist()) == list(range(8, 32))
  np.testing.assert_array_equal(seen[20:30], _loader(batch_size=10).batch(2)["input_mask"].sum(1))


def test_eval_batches_are_fixed():
  a, b = _loader(shuffle=False), _loader(shuffle=False)
  first = a.eval_batch(1)
  for step in range(4):
    a.batch(step)
  _assert_batches_equal(a.eval_batch(1), first)
  _assert_batches_equal(b.eval_batch(1), first)
  # examples in order
  np.testing.assert_array_equal(first["input_mask"].sum(1), 8 + np.arange(8, 16))
  np.testing.assert_array_equal(a.eval_batch(3)["input_mask"].sum(1), 8 + np.arange(0, 8))
  # evaluation masks are their own stream: not the training masks of the same rows
  assert _masks_differ(a.eval_batch(0), a.batch(0))
  assert _masks_differ(a.eval_batch(0), a.eval_batch(3))  # same rows, other batch index


def test_loader_does_not_modify_its_examples():
  loader = _loader()
  tokens = loader.tokens.arrays[0].copy()
  for step in range(6):
    loader.batch(step)
    loader.eval_batch(step)
  np.testing.assert_array_equal(loader.tokens.arrays[0], tokens)
