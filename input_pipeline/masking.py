"""Masked-LM corruption as in BERT's create_pretraining_data, applied dynamically.

Of the real (non-special, non-padding) tokens, `mask_prob` (15%) are selected, at most
`max_predictions`; each selected token becomes [MASK] with probability 0.8, a random
non-special token with 0.1, and stays unchanged otherwise. With whole-word masking a word's
WordPiece continuations ('##...') are selected together with its first piece. The random
generator is keyed by (seed, step, example), so the masks of any step can be recomputed
exactly on resume.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  mask_id: int
  special_ids: np.ndarray  # ids never selected (PAD, CLS, SEP, ...)
  replacement_ids: np.ndarray  # ids a "random token" is drawn from (all non-special ids)
  continuation: np.ndarray  # bool per vocab id: a '##' piece continuing the previous word
  max_predictions: int
  mask_prob: float = 0.15
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1
  whole_word: bool = False


def make_spec(tok, special_ids, mask_id, cfg):
  vocab = tok.get_vocab_size()
  tokens = [tok.id_to_token(i) or "" for i in range(vocab)]
  continuation = np.array([t.startswith("##") for t in tokens])
  special = np.array(sorted(set(int(i) for i in special_ids)), np.int64)
  replacement = np.setdiff1d(np.arange(vocab), special)
  return MaskingSpec(
    mask_id=mask_id,
    special_ids=special,
    replacement_ids=replacement,
    continuation=continuation,
    max_predictions=cfg.max_predictions,
    mask_prob=cfg.mask_prob,
    mask_token_prob=cfg.mask_token_prob,
    random_token_prob=cfg.random_token_prob,
    whole_word=cfg.whole_word,
  )


def mask_row(tokens, length, spec, rng):
  """Masks one example. Returns (inputs, positions, ids, weights), the last three of size
  spec.max_predictions (padded with weight 0)."""
  tokens = np.asarray(tokens)
  inputs = tokens.copy()
  cand = np.flatnonzero(~np.isin(tokens[:length], spec.special_ids))
  num = min(spec.max_predictions, required_predictions(length, spec.mask_prob))
  if spec.whole_word and len(cand):
    # Words start at candidates that are not continuations (or follow a gap in candidates).
    starts = ~spec.continuation[tokens[cand]] | np.r_[True, np.diff(cand) > 1]
    words = np.split(cand, np.flatnonzero(starts)[1:])
    chosen = []
    for w in rng.permutation(len(words)):
      if len(chosen) + len(words[w]) > num:
        continue
      chosen.extend(words[w])
      if len(chosen) >= num:
        break
    picked = np.sort(np.asarray(chosen, np.int64))
  else:
    picked = np.sort(rng.permutation(cand)[:num])
  draw = rng.random(len(picked))
  to_mask = draw < spec.mask_token_prob
  to_random = (draw >= spec.mask_token_prob) & (
    draw < spec.mask_token_prob + spec.random_token_prob
  )
  inputs[picked[to_mask]] = spec.mask_id
  inputs[picked[to_random]] = rng.choice(spec.replacement_ids, size=int(to_random.sum()))
  p = spec.max_predictions
  positions = np.zeros(p, np.int32)
  ids = np.zeros(p, np.int32)
  weights = np.zeros(p, np.float32)
  positions[: len(picked)] = picked
  ids[: len(picked)] = tokens[picked]
  weights[: len(picked)] = 1.0
  return inputs, positions, ids, weights


def required_predictions(seq_len, mask_prob):
  """How many predictions a full sequence of seq_len tokens needs at mask_prob."""
  return max(1, int(round(seq_len * mask_prob)))
