"""Decoding with a KV cache: exactly the full forward pass, for every position switch, GQA and
both layer layouts; greedy decoding of a batch equals decoding each prompt alone."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from models import decode, decoder, model_config

VOCAB = 97


def _model(**fields):
  cfg = ml_collections.ConfigDict(decoder.DEFAULTS)
  cfg.update(num_layers=2, num_heads=4, d_model=32, max_len=64, vocab_size=VOCAB, **fields)
  cfg = model_config.resolve(cfg, VOCAB)
  return decoder.Decoder(cfg, rngs=nnx.Rngs(0)), cfg


SWITCHES = [
  dict(),  # GPT-2: learned positions
  dict(
    position="rope",
    norm="rmsnorm",
    mlp="swiglu",
    num_kv_heads=2,
    use_bias=False,
    tie_embeddings=False,
  ),  # Llama-style, GQA
  dict(position="rope", num_kv_heads=1, scan_layers=False),  # multi-query, unscanned
  dict(pre_norm=False, scan_layers=False),  # post-LN
  dict(position="rope", qk_norm=True, mlp="relu2", logit_softcap=5.0),  # modded-nanogpt-like
  # GPT-3's alternating dense and banded layers, a window shorter than the sequence
  dict(attention_window=3, global_every=2, position="rope", rope_theta_local=100.0),
  dict(attention_window=4, global_every=0, scan_layers=False),  # every layer local
]


@pytest.mark.parametrize(
  "fields",
  SWITCHES,
  ids=[
    "gpt2",
    "llama_gqa",
    "mqa_unscanned",
    "postln",
    "qknorm_softcap",
    "alternating_local",
    "local_unscanned",
  ],
)
@pytest.mark.slow
def test_cached_logits_equal_the_full_forward_pass(fields):
  model, cfg = _model(**fields)
  graphdef, params = nnx.split(model)
  tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 12)).astype(np.int32)
  full = np.asarray(model(jnp.asarray(tokens)), np.float32)
  lengths = np.array([5, 3], np.int32)  # prompts of different lengths in one batch
  prompt = np.where(np.arange(8)[None] < lengths[:, None], tokens[:, :8], 0)
  cache = decode.init_cache(cfg, 2, 16)
  logits, cache = decode.prefill(graphdef, params, jnp.asarray(prompt), jnp.asarray(lengths), cache)
  rows = np.arange(2)
  np.testing.assert_allclose(logits, full[rows, lengths - 1], rtol=1e-5, atol=1e-5)
  positions = lengths.copy()
  for _ in range(6):  # teacher-forced: each row feeds its own next token
    logits, cache = decode.decode_step(
      graphdef, params, jnp.asarray(tokens[rows, positions]), jnp.asarray(positions), cache
    )
    np.testing.assert_allclose(logits, full[rows, positions], rtol=1e-5, atol=1e-5)
    positions += 1


def test_greedy_batch_equals_each_prompt_alone():
  model, cfg = _model(position="rope", num_kv_heads=2)
  prompts = [[5, 9, 11, 3, 7, 2, 8], [4], [60, 61, 62]]
  sampling = decode.Sampling(max_new_tokens=6)
  together = decode.generate(model, cfg, prompts, sampling)
  alone = [decode.generate(model, cfg, [p], sampling)[0] for p in prompts]
  assert together == alone and all(len(t) == 6 for t in together)


def test_sampling_is_reproducible_and_cut_by_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
  key = jax.random.PRNGKey(3)
  draws = np.asarray(decode.sample(logits, key, 1.0))
  assert np.array_equal(draws, np.asarray(decode.sample(logits, key, 1.0)))  # same seed
  assert abs(np.mean(draws == 0) - 0.5) < 0.05 and (draws == 3).any()
  assert set(np.asarray(decode.sample(logits, key, 1.0, top_k=2)).tolist()) == {0, 1}
  # top_p=0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it: tokens 0 and 1 only.
  assert set(np.asarray(decode.sample(logits, key, 1.0, top_p=0.7)).tolist()) == {0, 1}
  assert set(np.asarray(decode.sample(logits, key, 0.0)).tolist()) == {0}  # greedy
  assert set(np.asarray(decode.sample(logits, key, 1.0, top_p=0.4)).tolist()) == {0}


def test_stops_at_eos_and_at_stop_strings():
  model, cfg = _model()
  free = decode.generate(model, cfg, [[1, 2, 3]], decode.Sampling(max_new_tokens=8))[0]
  eos = decode.generate(model, cfg, [[1, 2, 3]], decode.Sampling(max_new_tokens=8, eos_id=free[2]))[
    0
  ]
  assert eos == free[: free.index(free[2]) + 1]
  stop = decode.generate(
    model, cfg, [[1, 2, 3]], decode.Sampling(max_new_tokens=8, stop=lambda row, new: len(new) == 4)
  )[0]
  assert stop == free[:4]
  with pytest.raises(ValueError, match="max_len=64"):
    decode.generate(model, cfg, [[1] * 60], decode.Sampling(max_new_tokens=8))
