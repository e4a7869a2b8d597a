"""BERT / RoBERTa examples (input_pipeline/bert_data.py) and the BERT tokenizers they need:
sentence splitting, next-sentence pairs, full-sentence packing, bert_data.load on the real tfds
path."""

import ml_collections
import numpy as np
import pytest
import tokenizers as hf_tokenizers
from tokenizers import models as hf_models

from configs import common
from input_pipeline import bert_data, tokenizer
from input_pipeline.corpora import sources, tokenized
from tests.helpers import tiny_bert_config

CLS, SEP = 2, 3
FIRST = 10  # synthetic corpora: token id = FIRST + position in the corpus' token stream


# ----------------------------------------------------------------------------- helpers


class Corpus:
  """Documents of sentences whose token ids are FIRST + their position in the whole stream,
  so every token of an example can be located."""

  def __init__(self, num_docs, seed=0, sentences=(3, 10), lengths=(5, 30), layout=None):
    rng = np.random.default_rng(seed)
    self.docs, nxt = [], FIRST
    for d in range(num_docs):
      if layout is not None:
        sizes = layout(rng, d)
      else:
        sizes = rng.integers(
          lengths[0], lengths[1] + 1, int(rng.integers(sentences[0], sentences[1] + 1))
        )
      doc = []
      for size in sizes:
        doc.append(np.arange(nxt, nxt + size, dtype=np.int32))
        nxt += int(size)
      self.docs.append(doc)
    n = nxt - FIRST
    self.doc_of = np.empty(n, np.int64)
    self.sent_of = np.empty(n, np.int64)
    self.sent_start = np.zeros(n + 1, bool)
    self.sent_end = np.zeros(n, bool)
    self.doc_last_sentence = np.zeros(n, bool)
    s = 0
    for d, doc in enumerate(self.docs):
      for k, sent in enumerate(doc):
        p = sent - FIRST
        self.doc_of[p], self.sent_of[p] = d, s
        self.sent_start[p[0]] = self.sent_end[p[-1]] = True
        self.doc_last_sentence[p] = k == len(doc) - 1
        s += 1
    self.num_tokens = n

  def pos(self, ids):
    p = np.asarray(ids, np.int64) - FIRST
    assert p.min() >= 0 and p.max() < self.num_tokens
    return p


def _split_pair(tokens, types, seq_len):
  """Checks [CLS] A [SEP] B [SEP] framing and type ids; returns (A, B)."""
  assert len(tokens) == len(types) <= seq_len
  assert tokens[0] == CLS and tokens[-1] == SEP
  seps = [i for i, t in enumerate(tokens) if t == SEP]
  assert len(seps) == 2, tokens
  a, b = tokens[1 : seps[0]], tokens[seps[0] + 1 : -1]
  assert len(a) >= 1 and len(b) >= 1
  assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
  return np.asarray(a), np.asarray(b)


def _contiguous(p):
  return bool(np.all(np.diff(p) == 1))


def _data_config(data_dir, files, recipe="bert", **overrides):
  return tiny_bert_config(data_dir, files, recipe=recipe, **overrides)


def _load(config, split="train", seq_len=32, seed=(0, 0), shuffle=True, tok=None):
  data = config.data
  b = sources.builder(data)
  sources.prepare(b)
  if tok is None:
    tok = tokenizer.get_tokenizer(
      data.tokenizer, data.data_dir, lambda: sources.texts(b, data.train_split, data.text_key)
    )
  tokenized.prepare(data, b, split, tok, "sentences")
  opened = tokenized.open_split(data, b, split, tok, "sentences")
  bert_data.build_examples(opened, data, tok, seq_len=seq_len, seed=list(seed))
  loader = bert_data.load(
    opened, data, tok, batch_size=8, seq_len=seq_len, seed=list(seed), shuffle=shuffle
  )
  return loader, tok, b


def _rows(loader):
  for i in range(loader.num_examples):
    n, a = int(loader.lengths[i]), int(loader.a_lengths[i])
    row = loader.tokens.take([i])[0]
    yield row[:n].tolist(), [0] * a + [1] * (n - a), bool(loader.nsp_labels[i]), row[n:]


# ----------------------------------------------------------------------------- tokenizers


TEXTS = [
  "The Quick Brown Fox jumps over the Lazy Dog. Playing and played, unbelievable things!"
] * 20 + ["Another Sentence Here. And More Words, e.g. these ones!"] * 10


def _tok_cfg(**overrides):
  cfg = common.data_config().tokenizer
  cfg.update(eos_token="[SEP]", **overrides)
  return cfg


def test_wordpiece_training_puts_bert_specials_first_and_lowercases(tmp_path):
  tok = tokenizer.get_tokenizer(
    _tok_cfg(kind="wordpiece", vocab_size=200), str(tmp_path), lambda: iter(TEXTS)
  )
  assert [tok.id_to_token(i) for i in range(5)] == list(tokenizer.BERT_SPECIALS)
  assert tokenizer.check_bert_specials(tok) == {t: i for i, t in enumerate(tokenizer.BERT_SPECIALS)}
  assert any(t.startswith("##") for t in tok.get_vocab())
  enc = tok.encode("The QUICK Brown fox", add_special_tokens=False)
  assert enc.tokens == ["the", "quick", "brown", "fox"]
  assert enc.ids == tok.encode("the quick brown fox", add_special_tokens=False).ids
  assert tok.encode("[MASK]", add_special_tokens=False).ids == [4]  # one token, not split
  cased = tokenizer.get_tokenizer(
    _tok_cfg(kind="wordpiece", vocab_size=200, lowercase=False), str(tmp_path), lambda: iter(TEXTS)
  )
  assert cased.encode("The Quick", add_special_tokens=False).tokens == ["The", "Quick"]
  assert [cased.id_to_token(i) for i in range(5)] == list(tokenizer.BERT_SPECIALS)


VOCAB_TXT = list(tokenizer.BERT_SPECIALS) + [
  "[unused0]",
  "the",
  "un",
  "##believ",
  "##able",
  "play",
  "##ing",
  "##ed",
  "dog",
  ".",
  ",",
  "h",
  "##e",
  "##l",
  "##o",
]


def test_bert_vocab_txt_loads_as_a_file_tokenizer(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(VOCAB_TXT) + "\n", encoding="utf-8")
  tok = tokenizer.get_tokenizer(_tok_cfg(kind="file", path=str(path)), str(tmp_path / "d"), None)
  assert tok.get_vocab_size() == len(VOCAB_TXT)
  assert all(tok.token_to_id(t) == i for i, t in enumerate(VOCAB_TXT))  # ids are line numbers
  enc = tok.encode("The DOG, unbelievable; playing played. Hello [MASK]", add_special_tokens=False)
  assert enc.tokens == [
    "the",
    "dog",
    ",",
    "un",
    "##believ",
    "##able",
    "[UNK]",
    "play",
    "##ing",
    "play",
    "##ed",
    ".",
    "h",
    "##e",
    "##l",
    "##l",
    "##o",
    "[MASK]",
  ]
  assert enc.ids == [VOCAB_TXT.index(t) for t in enc.tokens]
  assert tokenizer.check_bert_specials(tok) == {
    "[PAD]": 0,
    "[UNK]": 1,
    "[CLS]": 2,
    "[SEP]": 3,
    "[MASK]": 4,
  }
  cased = tokenizer.get_tokenizer(
    _tok_cfg(kind="file", path=str(path), lowercase=False), str(tmp_path / "d"), None
  )
  assert cased.encode("The dog", add_special_tokens=False).tokens == ["[UNK]", "dog"]
  bad = tmp_path / "novocab.txt"
  bad.write_text("[PAD]\nthe\n", encoding="utf-8")
  with pytest.raises(tokenizer.TokenizerError, match=r"config\.data\.tokenizer\.path.*\[UNK\]"):
    tokenizer.get_tokenizer(_tok_cfg(kind="file", path=str(bad)), str(tmp_path / "d"), None)


@pytest.fixture
def no_mask_tokenizer_json(tmp_path):
  vocab = {t: i for i, t in enumerate(VOCAB_TXT) if t != "[MASK]"}
  tok = hf_tokenizers.Tokenizer(hf_models.WordPiece(vocab, unk_token="[UNK]"))
  path = tmp_path / "tokenizer.json"
  tok.save(str(path))
  return str(path)


def test_tokenizer_without_mask_is_refused(
  no_mask_tokenizer_json, tmp_path, data_dir, sentence_corpus
):
  tok = tokenizer.get_tokenizer(
    _tok_cfg(kind="file", path=no_mask_tokenizer_json), str(tmp_path), None
  )
  with pytest.raises(tokenizer.TokenizerError, match=r"config\.data\.tokenizer: .*\[MASK\]") as e:
    tokenizer.check_bert_specials(tok)
  assert "[PAD]" not in str(e.value).split(";")[0]  # names only what is missing
  config = _data_config(data_dir, sentence_corpus)
  config.data.tokenizer.update(kind="file", path=no_mask_tokenizer_json)
  for nsp in (True, False):
    config.data.mlm.nsp = nsp
    with pytest.raises(tokenizer.TokenizerError, match=r"config\.data\.tokenizer.*\[MASK\]"):
      _load(config, tok=tok)


# ----------------------------------------------------------------------------- sentences


def test_split_sentences():
  assert tokenized.split_sentences("Hello there. How are you? Fine!") == [
    "Hello there.",
    "How are you?",
    "Fine!",
  ]
  assert tokenized.split_sentences("Use a tool, e.g. this one. Then stop.") == [
    "Use a tool, e.g. this one.",
    "Then stop.",
  ]
  assert tokenized.split_sentences("It was 3.5 m long. 42 is the answer.") == [
    "It was 3.5 m long.",
    "42 is the answer.",
  ]
  # lines are sentences too; blank lines and surrounding spaces go
  assert tokenized.split_sentences("  first line\n\nSecond one.  Third!\n") == [
    "first line",
    "Second one.",
    "Third!",
  ]
  assert tokenized.split_sentences("") == []


def test_split_sentences_keeps_closing_quotes_and_brackets():
  assert tokenized.split_sentences('He said "stop." Then he left.') == [
    'He said "stop."',
    "Then he left.",
  ]
  assert tokenized.split_sentences("(See above.) Next one.") == ["(See above.)", "Next one."]


def test_tokenize_documents(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(VOCAB_TXT) + "\n", encoding="utf-8")
  tok = tokenizer.get_tokenizer(_tok_cfg(kind="file", path=str(path)), str(tmp_path / "d"), None)
  docs = tokenized.tokenize_documents(tok, ["The dog. Hello dog!", "", "Played.\n\nUnbelievable"])
  assert [len(d) for d in docs] == [2, 0, 2]
  for d in docs:
    assert all(s.dtype == np.int32 for s in d)
  assert docs[0][0].tolist() == tok.encode("The dog.", add_special_tokens=False).ids
  assert docs[0][1].tolist() == tok.encode("Hello dog!", add_special_tokens=False).ids
  assert [VOCAB_TXT[i] for i in docs[2][1]] == ["un", "##believ", "##able"]
  assert tokenized.tokenize_documents(tok, []) == []


# ----------------------------------------------------------------------------- NSP pairs


def _nsp(corpus, seq_len, short_seq_prob=0.1, seed=1):
  return bert_data.nsp_examples(
    corpus.docs, seq_len, short_seq_prob, np.random.default_rng(seed), CLS, SEP
  )


@pytest.mark.parametrize("seq_len", [128, 64])
def test_nsp_pairs_are_well_formed_and_located(seq_len):
  corpus = Corpus(1500, seed=seq_len)
  examples = _nsp(corpus, seq_len)
  used = np.zeros(corpus.num_tokens, np.int64)  # tokens used as A or as an actual next B
  a_docs = []
  for tokens, types, is_random in examples:
    a, b = _split_pair(tokens, types, seq_len)
    pa, pb = corpus.pos(a), corpus.pos(b)
    assert _contiguous(pa) and _contiguous(pb)
    assert corpus.doc_of[pa[0]] == corpus.doc_of[pa[-1]]
    assert corpus.doc_of[pb[0]] == corpus.doc_of[pb[-1]]
    a_docs.append(corpus.doc_of[pa[0]])
    untruncated = len(tokens) < seq_len  # truncation stops at exactly seq_len tokens
    if untruncated:
      assert corpus.sent_start[pa[0]] and corpus.sent_end[pa[-1]]
      assert corpus.sent_start[pb[0]] and corpus.sent_end[pb[-1]]
    used[pa] += 1
    if is_random:
      assert corpus.doc_of[pb[0]] != corpus.doc_of[pa[0]]
    else:
      assert corpus.doc_of[pb[0]] == corpus.doc_of[pa[0]]
      used[pb] += 1
      if untruncated:
        assert pb[0] == pa[-1] + 1, "B is not the continuation of A"
      else:
        # only A's tail and B's head can be cut: a sentence boundary lies in between
        assert pb[0] > pa[-1] and corpus.sent_start[pa[-1] + 1 : pb[0] + 1].any()
  # one pass uses a sentence at most once as A or as the actual next B, and most of them
  assert used.max() == 1
  assert used.mean() > 0.75
  assert set(a_docs) == set(range(len(corpus.docs)))
  assert np.all(np.diff(a_docs) >= 0)  # documents in order
  labels = np.array([e[2] for e in examples])
  assert 0.4 < labels.mean() < 0.65


def _forced(corpus, examples):
  """Examples whose chunk was the document's lone last sentence (A = that sentence)."""
  return np.array(
    [
      corpus.doc_last_sentence[corpus.pos(_split_pair(t, ty, 10**6)[0])].all()
      for t, ty, _ in examples
    ]
  )


@pytest.mark.parametrize("seq_len", [128, 64])
def test_nsp_coin_is_fair_where_a_pair_can_be_formed(seq_len):
  corpus = Corpus(3000, seed=10 + seq_len)
  examples = _nsp(corpus, seq_len)
  labels = np.array([e[2] for e in examples])
  forced = _forced(corpus, examples)
  assert labels[forced].all()  # a lone sentence can only get a random B
  assert labels[~forced].mean() == pytest.approx(0.5, abs=0.03)


def _sentence_corpus_labels(data_dir, sentence_corpus, seq_len):
  # 10 passes: ~5000 pairs, so +-3 points is 6 standard deviations of a fair coin
  config = _data_config(data_dir, sentence_corpus, **{"data.mlm.dupe_factor": 10})
  loader, _, _ = _load(config, seq_len=seq_len)
  assert loader.num_examples > 3000
  return loader.nsp_labels


@pytest.mark.parametrize(
  "source", ["synthetic-128", "synthetic-64", "sentence_corpus-128", "sentence_corpus-32"]
)
def test_nsp_labels_are_balanced(source, data_dir, sentence_corpus):
  kind, seq_len = source.rsplit("-", 1)
  seq_len = int(seq_len)
  if kind == "synthetic":
    labels = [e[2] for e in _nsp(Corpus(3000, seed=seq_len + 1), seq_len)]
  else:
    labels = _sentence_corpus_labels(data_dir, sentence_corpus, seq_len)
  # +-0.04: 5 standard deviations of a fair coin over the ~4,000 pairs of the smallest case.
  # (The sentence corpus's WordPiece vocabulary differs between processes, as HF tokenizers'
  # trainer does, and with it which pairs are formed: at seq_len 32 the mean was seen from
  # 0.475 to 0.506.)
  assert np.mean(labels) == pytest.approx(0.5, abs=0.04)


def test_nsp_long_sentences_are_truncated_from_both_ends_not_dropped():
  seq_len = 64
  corpus = Corpus(400, seed=3, sentences=(2, 4), lengths=(70, 150))
  examples = _nsp(corpus, seq_len, short_seq_prob=0.0)
  a_docs, both_a, both_b = set(), 0, 0
  for tokens, types, _ in examples:
    a, b = _split_pair(tokens, types, seq_len)
    assert len(tokens) == seq_len  # truncated to exactly seq_len - 3 content tokens
    assert abs(len(a) - len(b)) <= 1  # tokens come off the longer segment
    pa, pb = corpus.pos(a), corpus.pos(b)
    assert _contiguous(pa) and _contiguous(pb)
    assert corpus.sent_of[pa[0]] == corpus.sent_of[pa[-1]]  # A is one (cut) sentence
    a_docs.add(corpus.doc_of[pa[0]])
    both_a += (not corpus.sent_start[pa[0]]) and (not corpus.sent_end[pa[-1]])
    both_b += (not corpus.sent_start[pb[0]]) and (not corpus.sent_end[pb[-1]])
  assert len(examples) >= len(corpus.docs)
  assert a_docs == set(range(len(corpus.docs)))  # no document lost to truncation
  # the documented deviation: a chunk closes only with two sentences, so sentences longer
  # than the target still get actual next sentences (the original would force random Bs)
  labels = np.array([e[2] for e in examples])
  forced = _forced(corpus, examples)
  assert labels[~forced].mean() == pytest.approx(0.5, abs=0.06)
  assert both_a > 0.9 * len(examples) and both_b > 0.9 * len(examples)


def test_nsp_truncation_cuts_only_the_longer_segment():
  seq_len = 64

  def layout(rng, d):
    return [int(rng.integers(3, 8)), int(rng.integers(80, 120))]

  corpus = Corpus(300, seed=4, layout=layout)
  examples = _nsp(corpus, seq_len, short_seq_prob=0.0)
  actual = 0
  for tokens, types, is_random in examples:
    a, b = _split_pair(tokens, types, seq_len)
    if is_random or corpus.doc_last_sentence[corpus.pos(a)].all():
      continue
    actual += 1
    pa = corpus.pos(a)
    assert corpus.sent_start[pa[0]] and corpus.sent_end[pa[-1]]  # the short A is intact
    assert len(b) == seq_len - 3 - len(a)
  assert actual > 100


def test_short_seq_prob_gives_shorter_targets():
  seq_len = 128
  corpus = Corpus(800, seed=5, sentences=(20, 20), lengths=(5, 30))

  def short_mid_document(p):
    """Documents with an actual-next pair, not at the document end, below the full target."""
    docs = set()
    for tokens, types, is_random in _nsp(corpus, seq_len, short_seq_prob=p, seed=2):
      a, b = _split_pair(tokens, types, seq_len)
      if not is_random and not corpus.doc_last_sentence[corpus.pos(b)[-1]]:
        if len(tokens) < seq_len:
          docs.add(corpus.doc_of[corpus.pos(a)[0]])
    return len(docs) / len(corpus.docs)

  assert short_mid_document(0.0) == 0.0  # full target: such pairs always reach seq_len
  assert 0.04 < short_mid_document(0.1) < 0.16
  assert short_mid_document(1.0) > 0.8


def test_nsp_with_a_single_document():
  corpus = Corpus(1, seed=6, sentences=(12, 12))
  examples = _nsp(corpus, 64)
  assert examples
  for tokens, types, _ in examples:
    _split_pair(tokens, types, 64)


def _check_nsp_labels(corpus, examples, seq_len):
  """Checks that a random B comes from another document than A's and an actual B is A's
  continuation; returns the labels."""
  labels = []
  for tokens, types, is_random in examples:
    a, b = _split_pair(tokens, types, seq_len)
    pa, pb = corpus.pos(a), corpus.pos(b)
    assert _contiguous(pa) and _contiguous(pb)
    a_doc, b_doc = corpus.doc_of[pa[0]], corpus.doc_of[pb[0]]
    assert corpus.doc_of[pa[-1]] == a_doc and corpus.doc_of[pb[-1]] == b_doc
    if is_random:
      assert b_doc != a_doc, "a random B from A's own document"
    else:
      assert b_doc == a_doc, "an actual next B from another document"
      if len(tokens) < seq_len:
        assert pb[0] == pa[-1] + 1, "B is not the continuation of A"
      else:  # only A's tail and B's head can be cut
        assert pb[0] > pa[-1] and corpus.sent_start[pa[-1] + 1 : pb[0] + 1].any()
    labels.append(is_random)
  return np.array(labels)


@pytest.mark.parametrize("num_docs,sentences", [(2, 20000), (50, 400)])
def test_nsp_random_b_never_comes_from_a_own_document(num_docs, sentences):
  # with two documents, ten draws of another one fail about once in a thousand random pairs
  seq_len = 16
  corpus = Corpus(num_docs, seed=7, sentences=(sentences, sentences), lengths=(1, 4))
  labels = _check_nsp_labels(corpus, _nsp(corpus, seq_len, seed=7), seq_len)
  assert len(labels) > 4000
  assert labels.mean() == pytest.approx(0.5, abs=0.03)


def test_nsp_single_document_gives_only_actual_next_pairs():
  seq_len = 32
  corpus = Corpus(1, seed=8, sentences=(300, 300), lengths=(2, 10))
  labels = _check_nsp_labels(corpus, _nsp(corpus, seq_len), seq_len)
  assert len(labels) > 50 and not labels.any()


# ----------------------------------------------------------------------------- NSP: real path


def _train_docs(tok, b):
  """The train split's documents as bert_data.load sees them (lists of sentence token arrays)."""
  return [
    d for d in tokenized.tokenize_documents(tok, list(sources.texts(b, "train", "text"))) if d
  ]


@pytest.mark.parametrize("seq_len", [32, 128])
def test_load_nsp_on_the_sentence_corpus(data_dir, sentence_corpus, seq_len):
  config = _data_config(data_dir, sentence_corpus)
  loader, tok, b = _load(config, seq_len=seq_len)
  ids = tokenizer.check_bert_specials(tok)
  assert (ids["[CLS]"], ids["[SEP]"]) == (CLS, SEP)
  docs = _train_docs(tok, b)
  pairs = set()  # every [sentences i:j] + [sentences j:k] of a document
  for d in docs:
    for i in range(len(d)):
      for j in range(i + 1, len(d)):
        for k in range(j + 1, len(d) + 1):
          pairs.add(
            (tuple(int(t) for s in d[i:j] for t in s), tuple(int(t) for s in d[j:k] for t in s))
          )
  located = 0
  for tokens, types, is_random, pad in _rows(loader):
    a, b_ = _split_pair(tokens, types, seq_len)
    assert (pad == ids["[PAD]"]).all()
    if is_random or len(tokens) == seq_len:
      continue
    assert (tuple(a.tolist()), tuple(b_.tolist())) in pairs, tok.decode(tokens)
    located += 1
  assert located > 100
  assert 0.4 < loader.nsp_labels.mean() < 0.65
  batch = loader.batch(0)
  assert set(batch) >= {
    "inputs",
    "type_ids",
    "input_mask",
    "masked_positions",
    "masked_ids",
    "masked_weights",
    "nsp_labels",
    "example_weights",
  }
  k = batch["masked_weights"] > 0
  assert k.any()
  assert not np.isin(batch["masked_ids"][k], list(ids.values())).any()
  val, _, _ = _load(config, split="validation", seq_len=seq_len, shuffle=False, tok=tok)
  assert val.num_examples > 0
  for tokens, types, _, _ in _rows(val):
    _split_pair(tokens, types, seq_len)


def test_load_dupe_factor(data_dir, sentence_corpus):
  one, tok, _ = _load(_data_config(data_dir, sentence_corpus))
  two, _, _ = _load(_data_config(data_dir, sentence_corpus, **{"data.mlm.dupe_factor": 2}), tok=tok)
  assert two.num_examples == pytest.approx(2 * one.num_examples, rel=0.1)
  first = {tuple(t) for t, _, _, _ in _rows(two)}
  assert len(first) > 1.2 * len({tuple(t) for t, _, _, _ in _rows(one)})  # passes differ


def _write_docs(path, docs):
  path.write_text("\n\n".join(docs), encoding="utf-8")
  return str(path)


def _single_sentence_docs(n, word="zebra"):
  names = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
  return [f"{names[i % 6]} likes the {word} number {i} very much." for i in range(n)]


def test_documents_with_one_sentence_are_skipped(data_dir, tmp_path, capsys):
  multi = [
    " ".join(f"{n} sees {c} boats." for c in ("red", "green", "old")[: 2 + i % 2])
    for i, n in enumerate(["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"] * 30)
  ]
  multi = [f"{d} Count {i}." for i, d in enumerate(multi)]
  files = _write_docs(tmp_path / "mixed.txt", multi + _single_sentence_docs(200))
  loader, tok, b = _load(_data_config(data_dir, files), seq_len=64)
  assert tok.decode(tok.encode("zebra").ids) == "zebra"
  texts = list(sources.texts(b, "train", "text"))
  single = sum("zebra" in t for t in texts)
  assert single > 100 and all(len(tokenized.split_sentences(t)) == 1 for t in texts if "zebra" in t)
  warnings = [l for l in capsys.readouterr().err.splitlines() if "fewer than 2 sentences" in l]
  assert len(warnings) == 1
  assert warnings[0].startswith("warning: ")
  assert f"train: skipped {single} of {len(texts)} documents" in warnings[0]
  for tokens, types, _, _ in _rows(loader):
    _split_pair(tokens, types, 64)
    assert "zebra" not in tok.decode(tokens)  # neither as A nor as a random B


def test_only_single_sentence_documents_is_a_data_error(data_dir, tmp_path):
  files = _write_docs(tmp_path / "single.txt", _single_sentence_docs(200))
  with pytest.raises(sources.DataError, match=r"2 or more sentences.*recipe=roberta"):
    _load(_data_config(data_dir, files))
  # the RoBERTa recipe packs them fine
  loader, _, _ = _load(_data_config(data_dir, files, recipe="roberta"))
  assert loader.num_examples > 0 and "nsp_labels" not in loader.batch(0)


# ----------------------------------------------------------------------------- full sentences


def _check_full_sentences(docs, examples, seq_len, sep=SEP):
  """Returns the concatenated inner tokens (without [CLS]/closing [SEP])."""
  inners = []
  for tokens, types, is_random in examples:
    assert len(tokens) <= seq_len and tokens[0] == CLS and tokens[-1] == sep
    assert types == [0] * len(tokens) and is_random is False
    inners.append(list(tokens[1:-1]))
  stream = [t for inner in inners for t in inner]
  expected = []
  for doc in docs:
    expected.extend(int(t) for s in doc for t in s)
  assert [t for t in stream if t != sep] == expected  # every token once, in order
  return inners, stream


@pytest.mark.parametrize("seq_len", [128, 64])
def test_full_sentences_pack_whole_sentences_in_order(seq_len):
  max_tokens = seq_len - 2

  def layout(rng, d):  # a few overlong sentences among ordinary ones
    sizes = rng.integers(5, 30, int(rng.integers(1, 9)))
    if d % 7 == 3:
      sizes[int(rng.integers(len(sizes)))] = int(rng.integers(max_tokens + 1, 3 * max_tokens))
    if d % 11 == 5:
      sizes[-1] = max_tokens  # a sentence exactly filling an example
    return sizes

  corpus = Corpus(300, seed=seq_len, layout=layout)
  examples = bert_data.full_sentence_examples(corpus.docs, seq_len, CLS, SEP)
  inners, stream = _check_full_sentences(corpus.docs, examples, seq_len)
  where = {}
  for e, inner in enumerate(inners):
    for t in inner:
      if t != SEP:
        where[t] = e
  # sentences are never split, unless longer than seq_len - 2
  for doc in corpus.docs:
    for sent in doc:
      spans = sorted({where[int(t)] for t in sent})
      if len(sent) <= max_tokens:
        assert len(spans) == 1
      else:
        assert len(spans) == -(-len(sent) // max_tokens)
        assert inners[spans[0]][0] == sent[0]  # a cut sentence starts a fresh example
        for e in spans[:-1]:
          assert len(inners[e]) == max_tokens
  # a [SEP] marks each document boundary; it is left out only where the example is full
  seps = 0
  for d in range(len(corpus.docs) - 1):
    last, nxt = int(corpus.docs[d][-1][-1]), int(corpus.docs[d + 1][0][0])
    i = stream.index(last)
    if stream[i + 1] == SEP:
      assert stream[i + 2] == nxt
      seps += 1
    else:
      assert stream[i + 1] == nxt
      e = where[last]
      assert inners[e][-1] == last and len(inners[e]) == max_tokens
  assert stream.count(SEP) == seps > 0.8 * (len(corpus.docs) - 1)
  assert stream[-1] == int(corpus.docs[-1][-1][-1])  # no [SEP] after the last document
  # greedy: an example closes only when the next sentence (or piece) does not fit
  for e in range(len(inners) - 1):
    first = inners[e + 1][0]
    p = corpus.pos([first])[0]
    s = corpus.sent_of[p]
    rest = int(np.sum(corpus.sent_of[p : p + seq_len] == s))
    assert len(inners[e]) + min(rest, max_tokens) > max_tokens
  assert np.mean([len(t) for t, _, _ in examples]) > 0.8 * seq_len


def test_full_sentences_edge_cases():
  assert bert_data.full_sentence_examples([], 16, CLS, SEP) == []
  one = [[np.arange(10, 15, dtype=np.int32)]]
  assert bert_data.full_sentence_examples(one, 16, CLS, SEP) == [
    ([CLS, 10, 11, 12, 13, 14, SEP], [0] * 7, False)
  ]
  two = [[np.arange(10, 13, dtype=np.int32)], [np.arange(13, 15, dtype=np.int32)]]
  assert bert_data.full_sentence_examples(two, 16, CLS, SEP)[0][0] == [
    CLS,
    10,
    11,
    12,
    SEP,
    13,
    14,
    SEP,
  ]


def test_load_full_sentences_on_the_sentence_corpus(data_dir, sentence_corpus):
  config = _data_config(data_dir, sentence_corpus, recipe="roberta")
  assert not config.data.mlm.nsp
  loader, tok, b = _load(config, seq_len=32)
  docs = _train_docs(tok, b)
  examples = [(t, ty, r) for t, ty, r, _ in _rows(loader)]
  _check_full_sentences(docs, examples, 32)
  assert not loader.nsp_labels.any()
  batch = loader.batch(0)
  assert "nsp_labels" not in batch and not batch["type_ids"].any()


def test_packed_rows_keep_their_documents_apart(data_dir, sentence_corpus):
  """With data.document_mask, a packed row's segments start after each document's [SEP]:
  positions restart there, and the padding past the row's length starts no segment."""
  config = _data_config(data_dir, sentence_corpus, recipe="roberta")
  config.data.document_mask = True
  loader, tok, _ = _load(config, seq_len=32, shuffle=False)
  sep = tok.token_to_id("[SEP]")
  batch = loader.batch(0)
  rows, lengths = loader.tokens.take(np.arange(8)), loader.lengths[:8]
  several = 0
  for row, n, seg, pos in zip(rows, lengths, batch["segment_ids"], batch["positions"]):
    starts = [0] + [j for j in range(1, 32) if row[j - 1] == sep and j < n]
    np.testing.assert_array_equal(np.flatnonzero(np.diff(seg) != 0) + 1, starts[1:])
    assert all(pos[j] == 0 for j in starts)
    np.testing.assert_array_equal(pos[n - 1 :], np.arange(pos[n - 1], pos[n - 1] + 33 - n))
    several += len(starts) > 1
  assert several  # the corpus's short documents share rows


# ----------------------------------------------------------------------------- the reference


def _reference_truncate(a, b, max_tokens, rng):
  while len(a) + len(b) > max_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def _reference_nsp(docs, seq_len, short_seq_prob, rng, cls_id, sep_id):
  """The pair building as first written, on lists of tokens (bert_data now works on offsets)."""
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
      if i == len(doc) - 1 or (length >= target and len(chunk) >= 2):
        if len(chunk) < 2:
          break
        a_end = int(rng.integers(1, len(chunk)))
        a = [int(t) for s in chunk[:a_end] for t in s]
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
            b.extend(int(t) for t in rdoc[j])
            if len(b) >= target - len(a):
              break
          i -= len(chunk) - a_end
        else:
          is_random = False
          b = [int(t) for s in chunk[a_end:] for t in s]
        _reference_truncate(a, b, max_tokens, rng)
        if a and b:
          examples.append(
            (
              [cls_id] + a + [sep_id] + b + [sep_id],
              [0] * (len(a) + 2) + [1] * (len(b) + 1),
              is_random,
            )
          )
        chunk, length = [], 0
      i += 1
  return examples


def _reference_full_sentences(docs, seq_len, cls_id, sep_id):
  max_tokens = seq_len - 2
  examples, cur = [], []

  def emit():
    if cur:
      examples.append(([cls_id] + cur + [sep_id], [0] * (len(cur) + 2), False))

  for d, doc in enumerate(docs):
    for sent in doc:
      for start in range(0, len(sent), max_tokens):
        piece = [int(t) for t in sent[start : start + max_tokens]]
        if len(cur) + len(piece) > max_tokens:
          emit()
          cur = []
        cur.extend(piece)
    if d < len(docs) - 1 and cur:
      if len(cur) + 1 > max_tokens:
        emit()
        cur = []
      else:
        cur.append(sep_id)
  emit()
  return examples


@pytest.mark.parametrize("seed", range(3))
def test_examples_equal_the_list_based_reference(seed):
  """Pairs and packs computed on offsets, and their arrays, equal the list-based algorithm's,
  draw for draw: short and overlong sentences, one document, few, many, short targets."""
  for num_docs, sentences, lengths in (
    (1, (1, 12), (1, 5)),
    (2, (2, 30), (1, 60)),
    (60, (1, 12), (1, 200)),
    (150, (2, 8), (3, 40)),
  ):
    corpus = Corpus(num_docs, seed=seed, sentences=sentences, lengths=lengths)
    docs = [d for d in corpus.docs if len(d) >= 2] or corpus.docs
    for seq_len in (8, 16, 64, 128):
      for p in (0.0, 0.1, 1.0):
        ours = bert_data.nsp_examples(docs, seq_len, p, np.random.default_rng(seed), CLS, SEP)
        assert ours == _reference_nsp(docs, seq_len, p, np.random.default_rng(seed), CLS, SEP)
      assert bert_data.full_sentence_examples(
        corpus.docs, seq_len, CLS, SEP
      ) == _reference_full_sentences(corpus.docs, seq_len, CLS, SEP)
  assert bert_data.full_sentence_examples(
    [[], [np.arange(10, 13)], []], 8, CLS, SEP
  ) == _reference_full_sentences([[], [np.arange(10, 13)], []], 8, CLS, SEP)
  # the arrays a piece's examples are stored as, with dupe_factor passes and skipped documents
  corpus = Corpus(200, seed=seed, sentences=(1, 10), lengths=(1, 50))
  sents = bert_data.Sentences.from_lists(corpus.docs)
  ids = {"[CLS]": CLS, "[SEP]": SEP, "[PAD]": 0}
  for nsp in (True, False):
    data = common.data_config()
    data.mlm = ml_collections.ConfigDict(dict(nsp=nsp, short_seq_prob=0.1, dupe_factor=2))
    build = bert_data._build_examples
    arrays, skipped = build(sents, data, 64, np.random.default_rng(seed), ids)
    if nsp:
      usable, rng = [d for d in corpus.docs if len(d) >= 2], np.random.default_rng(seed)
      expected = [e for _ in range(2) for e in _reference_nsp(usable, 64, 0.1, rng, CLS, SEP)]
      assert skipped == len(corpus.docs) - len(usable) > 0
    else:
      expected, _ = _reference_full_sentences(corpus.docs, 64, CLS, SEP), 0
      assert skipped == 0
    reference = bert_data.example_arrays(expected, 64, 0)
    assert arrays.keys() == reference.keys()
    for key, value in reference.items():
      np.testing.assert_array_equal(arrays[key], value)
