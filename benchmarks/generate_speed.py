r"""Generation speed: ms per generated token with the KV cache against recomputing the prefix.

  python -m benchmarks.generate_speed                          # GPT-2 small, context 512, 32 tokens
  python -m benchmarks.generate_speed --noscan_layers --new_tokens=16
  JAX_PLATFORMS=cpu python -m benchmarks.generate_speed        # force the CPU

Random weights (the speed does not depend on them), greedy decoding, every row of the batch
holding the same random `--context` tokens. Measured side by side in one run, after a warm-up
that compiles every function:

  cached      one `prefill` of the context (whose logits give the first new token), then
              `decode_step` per further token (models/decode.py, as `generate` does; the cache
              has as many slots as `generate` gives it, decode.cache_slots: context + new
              rounded up to 128, or `--slots`);
  recomputed  per token, one jitted forward of the whole model over the current prefix,
              right-padded to a fixed context + new_tokens (one compile, not one per length:
              the model is causal, so padding on the right leaves the logits at the last real
              position unchanged), taking the logits at that position.

Both include picking the token (argmax) and feeding it back; ms/token is the total over the
`--new_tokens` tokens divided by their number, so the cached column pays for its prefill. The
steady-state `decode_step` alone is printed as well. The goal at context 512, batch 1: cached
>= 10x faster than recomputed.
"""

import functools
import platform
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from configs import common
from models import decode, decoder, model_config
from pretrain.devices import host_memory

_CONTEXT = flags.DEFINE_integer("context", 512, "Tokens of context before generating.")
_NEW = flags.DEFINE_integer("new_tokens", 32, "Tokens generated (and timed) per method.")
_BATCH = flags.DEFINE_integer("batch", 1, "Rows generated at once.")
_SIZE = flags.DEFINE_string("size", "small", "Decoder size (models/decoder.py SIZES).")
_SCAN = flags.DEFINE_boolean("scan_layers", True, "Stack the layers in one lax.scan.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Compute dtype (bfloat16 on accelerators).")
_SLOTS = flags.DEFINE_integer(
  "slots",
  0,
  "Cache slots; 0: what `generate` allocates "
  "(decode.cache_slots: context + new_tokens rounded up to 128).",
)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per method; the best is reported.")
_VOCAB = 50257  # GPT-2's tokenizer; resolve pads it to a multiple of 128


@jax.jit
def _greedy(logits):
  return jnp.argmax(logits, -1).astype(jnp.int32)


def cache_slots(cfg, length, new_tokens):
  return _SLOTS.value or decode.cache_slots(cfg, length, new_tokens)


def cached_generation(graphdef, params, cfg, context, new_tokens):
  """Prefill + (new_tokens - 1) decode steps; returns (tokens [b, new], seconds, decode s)."""
  batch, length = context.shape
  slots = cache_slots(cfg, length, _NEW.value)
  lengths = jnp.full((batch,), length, jnp.int32)
  cache = decode.init_cache(cfg, batch, slots)
  jax.block_until_ready(cache)
  start = time.perf_counter()
  logits, cache = decode.prefill(graphdef, params, context, lengths, cache)
  token = _greedy(logits)
  out = [token]
  jax.block_until_ready(token)
  after_prefill = time.perf_counter()
  for i in range(new_tokens - 1):
    positions = jnp.full((batch,), length + i, jnp.int32)
    logits, cache = decode.decode_step(graphdef, params, token, positions, cache)
    token = _greedy(logits)
    out.append(token)
  jax.block_until_ready(out)
  end = time.perf_counter()
  return np.stack([np.asarray(t) for t in out], 1), end - start, end - after_prefill


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("tokens",))
def _recompute_step(graphdef, params, tokens, last):
  """Full forward over tokens [b, fixed] (right-padded); the greedy token after position
  `last`, written at last + 1. Returns (token [b], tokens, logits at `last` [b, vocab])."""
  model = nnx.merge(graphdef, params)
  logits = model(tokens)
  logits = jax.lax.dynamic_index_in_dim(logits, last, axis=1, keepdims=False)
  logits = logits.astype(jnp.float32)
  token = jnp.argmax(logits, -1).astype(jnp.int32)
  tokens = jax.lax.dynamic_update_index_in_dim(tokens, token[:, None], last + 1, axis=1)
  return token, tokens, logits


def recomputed_generation(graphdef, params, context, new_tokens):
  """new_tokens full forwards; returns (tokens [b, new], seconds, first logits)."""
  batch, length = context.shape
  tokens = jnp.zeros((batch, length + new_tokens), jnp.int32).at[:, :length].set(context)
  jax.block_until_ready(tokens)
  start = time.perf_counter()
  out, first = [], None
  for i in range(new_tokens):
    token, tokens, logits = _recompute_step(graphdef, params, tokens, jnp.int32(length - 1 + i))
    out.append(token)
    if first is None:
      first = logits
  jax.block_until_ready(out)
  end = time.perf_counter()
  return np.stack([np.asarray(t) for t in out], 1), end - start, first


def _cpu_name():
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def main(argv):
  del argv
  host_memory.configure()  # as the entry points do (pretrain.devices.process.start)
  context_len, new_tokens, batch = _CONTEXT.value, _NEW.value, _BATCH.value
  model_section = common.model_config(decoder, _SIZE.value)
  model_section.update(dtype=_DTYPE.value, scan_layers=_SCAN.value)
  cfg = model_config.resolve(model_section, _VOCAB)
  if _SLOTS.value and _SLOTS.value < context_len + new_tokens:
    raise app.UsageError(f"--slots must hold --context + --new_tokens = {context_len + new_tokens}")
  if context_len + new_tokens > cfg.max_len:
    raise app.UsageError(
      f"--context + --new_tokens = {context_len + new_tokens} exceeds max_len {cfg.max_len}"
    )
  model = decoder.Decoder(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  context = jax.random.randint(jax.random.PRNGKey(1), (batch, context_len), 0, _VOCAB, jnp.int32)

  device = jax.devices()[0]
  where = _cpu_name() if device.platform == "cpu" else device.device_kind
  print(
    f"device: {device.platform} ({where}), {jax.device_count()} device(s); "
    f"jax {jax.__version__}, flax {flax.__version__}"
  )
  print(
    f"model: {_SIZE.value} ({n_params / 1e6:.2f}M parameters incl. positions, vocab "
    f"{cfg.vocab_size}), {cfg.dtype}, scan_layers={cfg.scan_layers}; batch {batch}, context "
    f"{context_len}, {new_tokens} new tokens, cache slots "
    f"{cache_slots(cfg, context_len, new_tokens)}, recompute padded to "
    f"{context_len + new_tokens}"
  )

  # Warm-up: compiles prefill, decode_step, the argmax and the full forward (one shape each).
  start = time.perf_counter()
  cached_generation(graphdef, params, cfg, context, 2)
  recomputed_generation(graphdef, params, context, 1)
  print(f"warm-up (compiles): {time.perf_counter() - start:.1f} s", flush=True)

  best = dict(cached=np.inf, decode=np.inf, recomputed=np.inf)
  for _ in range(_REPEATS.value):  # interleaved, so both see the same machine load
    cached_tokens, seconds, decode_seconds = cached_generation(
      graphdef, params, cfg, context, new_tokens
    )
    best["cached"] = min(best["cached"], seconds)
    best["decode"] = min(best["decode"], decode_seconds)
    recomputed_tokens, seconds, first_logits = recomputed_generation(
      graphdef, params, context, new_tokens
    )
    best["recomputed"] = min(best["recomputed"], seconds)

  # The two paths must agree: the first token's logits, and the greedy tokens (random weights
  # give near-ties, so a late token may differ by float rounding; the count is shown).
  cache = decode.init_cache(cfg, batch, cache_slots(cfg, context_len, new_tokens))
  prefill_logits, _ = decode.prefill(
    graphdef, params, context, jnp.full((batch,), context_len, jnp.int32), cache
  )
  diff = float(jnp.max(jnp.abs(prefill_logits - first_logits)))
  same = int((cached_tokens == recomputed_tokens).all(0).sum())

  cached_ms = best["cached"] / new_tokens * 1e3
  decode_ms = best["decode"] / max(new_tokens - 1, 1) * 1e3
  recomputed_ms = best["recomputed"] / new_tokens * 1e3
  print(
    f"check: max |logit diff| at the first token {diff:.2e}; greedy tokens equal at "
    f"{same}/{new_tokens} steps"
  )
  print(f"best of {_REPEATS.value} runs per method")
  print("| method | ms / token | tokens/s (all rows) |")
  print("|---|---|---|")
  print(f"| cached (prefill + decode_step) | {cached_ms:.1f} | {batch * 1e3 / cached_ms:,.1f} |")
  print(f"| cached, decode_step alone | {decode_ms:.1f} | {batch * 1e3 / decode_ms:,.1f} |")
  print(
    f"| recomputed (full forward over {context_len + new_tokens}) | {recomputed_ms:.1f} | "
    f"{batch * 1e3 / recomputed_ms:,.1f} |"
  )
  ratio = recomputed_ms / cached_ms
  print(
    f"speed-up of the cache: {ratio:.1f}x with its prefill, "
    f"{recomputed_ms / decode_ms:.1f}x per decode step (goal >= 10x): "
    f"{'met' if ratio >= 10 else 'NOT met'}"
  )


if __name__ == "__main__":
  app.run(main)
