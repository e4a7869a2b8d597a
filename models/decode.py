"""Decoding with a KV cache: prefill, one token per step, and sampling.

The cache holds the keys and values of every layer, [layers, batch, slots, kv_heads,
head_dim], preallocated to a fixed number of slots; a token's slot is its position, per row
(models/layers.py Attention). A batch of prompts of different lengths is right-padded to a
bucket (a power of two), prefilled in one call, and then every row decodes at its own
position: slots past a row's prompt hold padding until that row's new tokens overwrite them,
and a query only sees the slots up to its own position. Every call is jitted for fixed shapes:
one compile per (batch, prompt bucket, cache size), none per token or per prompt length.

Sampling: greedy (temperature 0), or temperature with optional top-k and top-p (nucleus),
keyed by (seed, step) so that a seed reproduces the samples.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models import layers, model_config


def bucket(n: int, limit: int, smallest: int = 16) -> int:
  """The smallest power of two >= n (at least `smallest`), capped at `limit`."""
  size = smallest
  while size < n:
    size *= 2
  return min(size, limit)


def cache_slots(cfg: model_config.ModelConfig, longest: int, max_new_tokens: int) -> int:
  """Cache slots for prompts of up to `longest` tokens and max_new_tokens more: in steps of
  128 rather than powers of two (a decoding step reads every slot), and at least the prompts'
  bucket (prefill writes all of it)."""
  slots = min(cfg.max_len, -(-(longest + max_new_tokens) // 128) * 128)
  return max(slots, bucket(longest, cfg.max_len))


def init_cache(cfg: model_config.ModelConfig, batch: int, slots: int) -> dict[str, jax.Array]:
  """A zero KV cache for resolved decoder config `cfg`."""
  shape = (cfg.num_layers, batch, slots, cfg.num_kv_heads, cfg.head_dim)
  dtype = layers.dtype_of(cfg.dtype)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def prefill(graphdef, params, tokens, lengths, cache):
  """Writes the prompts [b, bucket] (row i: its first lengths[i] tokens) into the cache;
  returns (float32 logits of each row's last prompt token [b, vocab], cache)."""
  model = nnx.merge(graphdef, params)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
  logits, cache = model(tokens, positions=positions, cache=cache)
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return last.astype(jnp.float32), cache


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def decode_step(graphdef, params, tokens, positions, cache):
  """One new token per row, at its position: (float32 logits [b, vocab], cache)."""
  model = nnx.merge(graphdef, params)
  logits, cache = model(tokens[:, None], positions=positions[:, None], cache=cache)
  return logits[:, 0].astype(jnp.float32), cache


@functools.partial(jax.jit, static_argnames=("top_k",))
def sample(
  logits: jax.Array, key: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
  """Token ids [b] from logits [b, vocab]: greedy where temperature is 0, else sampled from
  softmax(logits / temperature) restricted to the top_k tokens (0: all) and to the smallest
  set whose probability reaches top_p (nucleus)."""
  greedy = jnp.argmax(logits, -1)
  scaled = logits / jnp.maximum(temperature, 1e-6)
  if top_k:
    kth = jax.lax.top_k(scaled, top_k)[0][:, -1:]
    scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
  order = jnp.sort(scaled, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(order, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above
  cutoff = jnp.min(jnp.where(before < top_p, order, jnp.inf), axis=-1, keepdims=True)
  scaled = jnp.where(scaled < cutoff, -jnp.inf, scaled)
  sampled = jax.random.categorical(key, scaled, axis=-1)
  return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


@dataclasses.dataclass
class Sampling:
  max_new_tokens: int = 64
  temperature: float = 0.0  # 0: greedy
  top_k: int = 0  # 0: no top-k cut
  top_p: float = 1.0  # 1: no nucleus cut
  seed: int = 0
  eos_id: int | None = None
  stop: Callable | None = None  # (row, new token ids) -> True to stop that row (stop strings)


def generate(
  model: nnx.Module,
  cfg: model_config.ModelConfig,
  prompts: Sequence[Sequence[int]],
  sampling: Sampling,
  on_token: Callable | None = None,
) -> list[list[int]]:
  """New tokens for each prompt (lists of ids): up to max_new_tokens, ending at EOS (kept) or
  when `sampling.stop` says so. `on_token(step, tokens [b])` sees every step's tokens (for
  streaming). Prompts must leave room: len(prompt) + max_new_tokens <= cfg.max_len."""
  graphdef, params = nnx.split(model)
  lengths = np.array([len(p) for p in prompts], np.int32)
  if lengths.min() < 1 or lengths.max() + sampling.max_new_tokens > cfg.max_len:
    raise ValueError(
      f"prompts of {lengths.min()}-{lengths.max()} tokens plus "
      f"{sampling.max_new_tokens} new ones do not fit max_len={cfg.max_len}"
    )
  width = bucket(int(lengths.max()), cfg.max_len)
  tokens = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, : len(p)] = p
  cache = init_cache(
    cfg, len(prompts), cache_slots(cfg, int(lengths.max()), sampling.max_new_tokens)
  )
  logits, cache = prefill(graphdef, params, jnp.asarray(tokens), jnp.asarray(lengths), cache)
  key = jax.random.PRNGKey(sampling.seed)
  out: list[list[int]] = [[] for _ in prompts]
  done = np.zeros(len(prompts), bool)
  positions = lengths.copy()
  for step in range(sampling.max_new_tokens):
    new = np.asarray(
      sample(
        logits, jax.random.fold_in(key, step), sampling.temperature, sampling.top_k, sampling.top_p
      )
    )
    for row in np.flatnonzero(~done):
      out[row].append(int(new[row]))
      if new[row] == sampling.eos_id or (
        sampling.stop is not None and sampling.stop(row, out[row])
      ):
        done[row] = True
    if on_token is not None:
      on_token(step, new)
    if done.all() or step + 1 == sampling.max_new_tokens:
      break
    logits, cache = decode_step(graphdef, params, jnp.asarray(new), jnp.asarray(positions), cache)
    positions += 1
  return out
