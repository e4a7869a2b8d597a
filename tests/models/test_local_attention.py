"""Local (sliding-window) attention: a local layer sees only its window, the windowed path
equals the dense one under the same mask, and the layer pattern and RoPE bases are as set."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from models import decoder, encoder, layers, model_config

VOCAB = 61


def _cfg(family, **fields):
  cfg = ml_collections.ConfigDict(family.DEFAULTS)
  cfg.update(dict(num_layers=1, num_heads=2, d_model=16, max_len=32, vocab_size=VOCAB) | fields)
  return model_config.resolve(cfg, VOCAB)


def _changed(model, tokens, j):
  """Per position, whether the output changes when token j changes."""
  other = tokens.at[:, j].set((tokens[:, j] + 1) % VOCAB)
  return np.abs(np.asarray(model(other) - model(tokens))).max(-1)[0] > 1e-6


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_a_local_decoder_layer_sees_only_the_last_window(position):
  cfg = _cfg(decoder, attention_window=4, global_every=0, position=position)
  model = decoder.Decoder(cfg, rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (1, 16)), jnp.int32)
  j = 5
  # position i sees j when i - 4 < j <= i: 5, 6, 7, 8 and nothing else
  np.testing.assert_array_equal(np.flatnonzero(_changed(model, tokens, j)), [5, 6, 7, 8])
  dense = decoder.Decoder(_cfg(decoder, position=position), rngs=nnx.Rngs(0))
  assert np.flatnonzero(_changed(dense, tokens, j)).tolist() == list(range(5, 16))


def test_a_local_encoder_layer_sees_half_the_window_each_side():
  cfg = _cfg(encoder, attention_window=4, global_every=0, position="rope", type_vocab_size=2)
  model = encoder.Encoder(cfg, rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (1, 16)), jnp.int32)
  np.testing.assert_array_equal(np.flatnonzero(_changed(model, tokens, 8)), [6, 7, 8, 9, 10])


def test_the_window_equals_the_dense_path_with_its_mask():
  """The local layer's own path (CPU's kernel here) against XLA's dense attention given the
  band as an explicit mask, with a padding mask on top, for both directions."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 12, 16)), jnp.float32)
  positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
  padding = (jnp.arange(12)[None, :] < jnp.array([[12], [9]]))[:, None, None, :]
  kw = dict(d_model=16, num_heads=2, num_kv_heads=1, head_dim=8, use_bias=True)
  kw |= dict(init_std=0.2, out_init=layers.normal(0.2), dtype=jnp.float32)
  kw |= dict(param_dtype=jnp.float32, rope_theta=1000.0)
  local = layers.Attention(**kw, implementation=None, window=5, rngs=nnx.Rngs(3))
  dense = layers.Attention(**kw, implementation="xla", rngs=nnx.Rngs(3))
  for causal in (True, False):
    got = local(x, positions=positions, causal=causal, mask=padding, local=True)
    mask = padding & layers.band(positions, 5, causal)
    want = dense(x, positions=positions, causal=causal, mask=mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a global layer of the same module is the dense one
    np.testing.assert_allclose(
      local(x, positions=positions, causal=causal, mask=padding, local=False),
      dense(x, positions=positions, causal=causal, mask=padding),
      rtol=1e-5,
      atol=1e-6,
    )


def test_the_pattern_and_the_local_rope_base():
  assert layers.per_layer(_cfg(decoder)) == ()  # no window: every layer dense
  every_third = _cfg(decoder, num_layers=7, attention_window=8, global_every=3)
  assert dict(layers.per_layer(every_third)) == {
    "local": (False, True, True, False, True, True, False)
  }
  kw = dict(d_model=16, num_heads=2, num_kv_heads=2, head_dim=8, use_bias=False)
  kw |= dict(init_std=0.2, out_init=layers.normal(0.2), dtype=jnp.float32)
  kw |= dict(param_dtype=jnp.float32, implementation="xla")
  x = jnp.asarray(np.random.default_rng(4).normal(size=(1, 6, 16)), jnp.float32)
  positions = jnp.arange(6)[None]
  # a window wider than the sequence leaves only the RoPE base to differ
  two = layers.Attention(**kw, rope_theta=1e4, window=64, rope_theta_local=10.0, rngs=nnx.Rngs(5))
  at_10 = layers.Attention(**kw, rope_theta=10.0, rngs=nnx.Rngs(5))
  at_1e4 = layers.Attention(**kw, rope_theta=1e4, rngs=nnx.Rngs(5))
  run = lambda m, **kw: m(x, positions=positions, causal=True, **kw)
  np.testing.assert_allclose(run(two, local=True), run(at_10), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(run(two, local=False), run(at_1e4), rtol=1e-5, atol=1e-6)
  assert not np.allclose(run(at_10), run(at_1e4), atol=1e-4)
