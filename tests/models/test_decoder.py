"""The decoder: GPT-2 shapes and counts, causality, document masking, variants, scan == loop."""

import jax
import jax.ad_checkpoint  # (print_saved_residuals)
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import gpt
from models import axes, cpu_kernels, decoder, layer_stack, layers, model_config


def _cfg(**kw):
  model = gpt.get_config("smoke").model
  model.update(num_layers=2, num_heads=4, d_model=32, max_len=16)
  model.update(kw)
  return model_config.resolve(model, 100)


def _tokens(b=2, t=16, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, 100)


@pytest.mark.parametrize(
  "size,millions", [("small", 123.69), ("medium", 353.82), ("large", 772.78), ("xl", 1556.05)]
)
def test_gpt2_parameter_counts(size, millions):
  # nanoGPT reports 123.69M for GPT-2 small with the padded 50304 vocab (positions excluded).
  cfg = model_config.resolve(gpt.get_config(size).model, 50257)
  assert cfg.vocab_size == 50304
  assert decoder.count_params(cfg) / 1e6 == pytest.approx(millions, abs=0.01)


def test_gpt2_initialisation():
  cfg = _cfg(num_layers=8, d_model=64, scan_layers=False)
  model = decoder.Decoder(cfg, rngs=nnx.Rngs(0))
  block = model.blocks[0]
  assert float(jnp.std(block.mlp.fc.kernel[...])) == pytest.approx(0.02, rel=0.1)
  # Residual projections are scaled by 1/sqrt(2 * layers).
  assert float(jnp.std(block.mlp.proj.kernel[...])) == pytest.approx(0.02 / 4, rel=0.1)
  assert float(jnp.std(block.attn.out.kernel[...])) == pytest.approx(0.02 / 4, rel=0.15)
  assert float(jnp.abs(block.mlp.fc.bias[...]).max()) == 0.0
  assert float(jnp.std(model.embed.embedding[...])) == pytest.approx(0.02, rel=0.1)


def test_causal():
  model = decoder.Decoder(_cfg(), rngs=nnx.Rngs(0))
  tokens = _tokens()
  changed = tokens.at[:, 10:].set((tokens[:, 10:] + 1) % 100)
  a, b = model(tokens), model(changed)
  np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
  assert not np.allclose(a[:, 10:], b[:, 10:])


def test_document_mask_isolates_packed_documents():
  model = decoder.Decoder(_cfg(), rngs=nnx.Rngs(0))
  tokens = _tokens()
  segments = jnp.array([[1] * 6 + [2] * 10] * 2)
  positions = jnp.array([list(range(6)) + list(range(10))] * 2)
  changed = tokens.at[:, :6].set((tokens[:, :6] + 7) % 100)
  a = model(tokens, positions=positions, segment_ids=segments)
  b = model(changed, positions=positions, segment_ids=segments)
  np.testing.assert_allclose(a[:, 6:], b[:, 6:], atol=1e-6)  # doc 2 never sees doc 1
  alone = model(tokens[:, 6:])
  np.testing.assert_allclose(a[:, 6:], alone, atol=1e-5)  # same as running it on its own


VARIANTS = {
  "gpt2": {},
  "modern": dict(
    position="rope",
    norm="rmsnorm",
    mlp="swiglu",
    num_kv_heads=2,
    use_bias=False,
    tie_embeddings=False,
  ),
  "remat_full": dict(remat="full"),
  "remat_dots": dict(remat="dots", dropout=0.1),
  "bf16": dict(dtype="bfloat16"),
  "cudnn_falls_back_off_gpu": dict(dtype="bfloat16", attention="cudnn"),
  "banded": dict(attention_window=4, global_every=2, position="rope", rope_theta_local=100.0),
  "recipes": dict(
    qk_norm=True, mlp="relu2", zero_init_proj=True, z_loss=1e-4, dtype="bfloat16"
  ),  # (soft-capped logits are float32: test_switches)
}


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_variants_train_and_carry_logical_axes(name):
  cfg = _cfg(**VARIANTS[name])
  model = decoder.Decoder(cfg, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  names = {v for k, v in vars(axes).items() if k.isupper()}
  for path, spec in jax.tree_util.tree_leaves_with_path(
    nnx.to_pure_dict(nnx.get_partition_spec(params)),
    is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
  ):
    assert spec and all(n in names for n in spec), (path, spec)
    assert spec[0] == axes.LAYERS or "blocks" not in jax.tree_util.keystr(path)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))  # params stay f32
  graphdef, p = nnx.split(model, nnx.Param)

  def loss(p):
    logits = nnx.merge(graphdef, p)(_tokens(), dropout_key=jax.random.key(1))
    assert logits.dtype == jnp.dtype(cfg.dtype)
    return jnp.mean(logits.astype(jnp.float32) ** 2)

  value, grads = jax.jit(jax.value_and_grad(loss))(p)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  if name == "modern":
    assert model.pos_embed is None and model.head is not None
    assert params["blocks"]["attn"]["key"]["kernel"].shape == (2, 32, 2, 8)  # 2 kv heads
    assert "bias" not in params["blocks"]["mlp"]["fc"]


def test_scan_equals_python_loop():
  loop = decoder.Decoder(_cfg(scan_layers=False), rngs=nnx.Rngs(0))
  scan = decoder.Decoder(_cfg(scan_layers=True), rngs=nnx.Rngs(1))
  loop_params = nnx.to_pure_dict(nnx.state(loop, nnx.Param))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[loop_params["blocks"][i] for i in range(2)])
  nnx.update(scan, dict(loop_params, blocks=stacked))
  np.testing.assert_allclose(loop(_tokens()), scan(_tokens()), atol=1e-5)


def test_dropout_is_keyed():
  model = decoder.Decoder(_cfg(dropout=0.2), rngs=nnx.Rngs(0))
  t = _tokens()
  a, b = model(t, dropout_key=jax.random.key(1)), model(t, dropout_key=jax.random.key(1))
  c = model(t, dropout_key=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # Dropout is on with a key and off without one: without a key the model equals the same
  # parameters with dropout=0 (which ignores the key).
  off = decoder.Decoder(_cfg(dropout=0.0), rngs=nnx.Rngs(0))
  nnx.update(off, nnx.state(model, nnx.Param))
  np.testing.assert_array_equal(model(t), off(t, dropout_key=jax.random.key(1)))
  assert not np.allclose(a, model(t))


@pytest.mark.parametrize(
  "switch",
  [
    dict(remat="full"),
    dict(remat="dots"),
    dict(remat="offload"),
    dict(attention="xla"),
    dict(attention="cudnn"),
  ],
)
@pytest.mark.slow
def test_remat_and_attention_switches_equal_the_plain_model(switch):
  """Loss and gradients (dropout on, same key) equal the model without the switch; 'cudnn'
  falls back to XLA's kernel off GPUs and 'offload' to 'dots' where there is no host memory."""
  plain = decoder.Decoder(_cfg(dropout=0.1), rngs=nnx.Rngs(0))
  variant = decoder.Decoder(_cfg(dropout=0.1, **switch), rngs=nnx.Rngs(1))
  nnx.update(variant, nnx.state(plain, nnx.Param))

  def loss_and_grads(model):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
      logits = nnx.merge(graphdef, p)(_tokens(), dropout_key=jax.random.key(3))
      return jnp.mean(jax.nn.log_softmax(logits.astype(jnp.float32))[..., 0])

    return jax.jit(jax.value_and_grad(loss))(params)

  (a, ga), (b, gb) = loss_and_grads(plain), loss_and_grads(variant)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), ga, gb)


def test_unrolled_scan_keeps_the_layout_and_the_numbers():
  """scan_unroll changes how the stacked layers run, not their parameters: the same state
  gives the same loss and gradients; 0 picks the whole stack for small depths without remat, on
  any backend."""
  for backend in ("cpu", "gpu"):  # (gpu: pretrain.aot builds the program it would run)
    with cpu_kernels.built_for(backend):
      assert layer_stack.scan_unroll(_cfg(num_layers=4)) == 4  # <= 12 layers: unrolled
      assert layer_stack.scan_unroll(_cfg(num_layers=24)) == 1  # deep: a loop, flat compile time
      assert layer_stack.scan_unroll(_cfg(num_layers=4, remat="dots")) == 1  # remat saves memory
      assert layer_stack.scan_unroll(_cfg(num_layers=4, scan_unroll=2)) == 2
      assert cpu_kernels.active() == (backend == "cpu")

  def loss_and_grads(unroll):
    model = decoder.Decoder(_cfg(num_layers=4, scan_unroll=unroll, dropout=0.1), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(_tokens(), dropout_key=jax.random.key(3)) ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)

  (a, ga), (b, gb) = loss_and_grads(1), loss_and_grads(4)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), ga, gb)


def test_cpu_matmul_gradient_equals_autodiff():
  """cpu_kernels.dot_general runs the dense layers' flat [batch * length, ...] matmuls with its own
  backward on CPU (a materialised x.T for the weight gradient): the same values and gradients
  as lax.dot_general, for a Linear's and an attention projection's (multi-axis) contraction."""
  x = jax.random.normal(jax.random.key(0), (24, 4, 8))
  dims = (((1, 2), (0, 1)), ((), ()))

  def loss(dot):
    return lambda x, k: jnp.sum(jnp.sin(dot(x, k, dims)))

  assert cpu_kernels.active()
  for width in (16, 64):  # the gradient narrower than the input (transposed), then wider
    kernel = jax.random.normal(jax.random.key(1), (4, 8, width))
    ours = jax.jit(jax.value_and_grad(loss(cpu_kernels.dot_general), argnums=(0, 1)))(x, kernel)
    plain = jax.jit(jax.value_and_grad(loss(jax.lax.dot_general), argnums=(0, 1)))(x, kernel)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, plain)
  # Only the flat form takes the custom path; the rest is lax.dot_general as it is.
  flat = jax.make_jaxpr(lambda x, k: cpu_kernels.dot_general(x, k, dims))(x, kernel)
  assert "custom_vjp_call" in str(flat)
  with cpu_kernels.built_for("gpu"):
    assert "custom_vjp_call" not in str(
      jax.make_jaxpr(lambda x, k: cpu_kernels.dot_general(x, k, dims))(x, kernel)
    )
  batched = jax.make_jaxpr(lambda x: cpu_kernels.dot_general(x, x, (((2,), (2,)), ((0,), (0,)))))(x)
  assert "custom_vjp_call" not in str(batched)


@pytest.mark.parametrize(
  "kind,exact_gelu,use_bias",
  [("gelu", False, True), ("gelu", True, False), ("relu2", False, False), ("swiglu", False, True)],
)
def test_cpu_mlp_recomputes_its_activation(kind, exact_gelu, use_bias, capsys):
  """On CPU the MLP's activation runs inside its projection's matmul (cpu_kernels._flat_matmul),
  whose backward pass recomputes it: the same values and gradients as the plain form
  accelerators run, with the activation's output no longer among the residuals kept for the
  backward pass (only the activation's inputs, [tokens, d_ff] each)."""
  mlp = layers.MLP(
    d_model=8,
    d_ff=32,
    kind=kind,
    use_bias=use_bias,
    init_std=0.3,
    out_init=nnx.initializers.normal(0.3),
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs=nnx.Rngs(0),
    gelu_approximate=not exact_gelu,
  )
  graphdef, params = nnx.split(mlp)
  x = jax.random.normal(jax.random.key(1), (3, 5, 8))
  loss = lambda p, x: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x)))

  def run():
    jax.ad_checkpoint.print_saved_residuals(loss, params, x)
    wide = [l for l in capsys.readouterr().out.splitlines() if l.startswith("f32[15,32]")]
    return len(wide), jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)

  assert cpu_kernels.active()
  (kept, ours) = run()
  with cpu_kernels.built_for("gpu"):
    plain = run()[1]
  assert kept == (2 if kind == "swiglu" else 1), kept
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, plain)


def test_cpu_backward_frees_each_layer_before_the_next(monkeypatch):
  """The CPU backward of a dense layer takes its activation's inputs, and hands its input
  gradient on, only after its cotangent and its weight gradient (cpu_kernels._after): otherwise
  XLA:CPU's scheduler recomputes every layer's activation at the start of the backward pass and
  leaves every weight gradient to the end, holding what they need meanwhile. The unrolled
  stack's step compiles to a smaller temporary buffer with the order than without it."""
  model = decoder.Decoder(_cfg(num_layers=4, d_model=64, max_len=64), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tokens = _tokens(8, 64)

  def temp_bytes():
    loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2)
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  ordered = temp_bytes()
  monkeypatch.setattr(cpu_kernels, "_after", lambda x, y: x)
  free = temp_bytes()
  assert ordered < 0.85 * free, (ordered, free)


@pytest.mark.slow
@pytest.mark.parametrize("kv_heads,block", [(4, 64), (2, 64), (1, 64), (2, 5)])
def test_heads_major_attention_equals_jax(kv_heads, block, monkeypatch):
  """The CPU attention (heads moved ahead once, queries scaled; causal attention by blocks of
  queries, here 16 positions in blocks of 5) computes what jax.nn.dot_product_attention
  does: causal or not, with a padding mask or a full one, grouped-query heads; outputs and
  gradients (written out by hand for the backward pass)."""
  monkeypatch.setattr(cpu_kernels, "_CAUSAL_BLOCK", block)
  q = jax.random.normal(jax.random.key(0), (2, 16, 4, 8))
  k, v = (jax.random.normal(jax.random.key(i), (2, 16, kv_heads, 8)) for i in (1, 2))
  mask = jax.random.bernoulli(jax.random.key(3), 0.7, (2, 1, 1, 16)).at[..., 0].set(True)
  full = jax.random.bernoulli(jax.random.key(4), 0.7, (2, 1, 16, 16)).at[..., 0].set(True)
  # A query that may attend to nothing gets no gradient. (Its output, the mean of the values
  # it sees, is of all of them here; causal blocks average only their own keys'.)
  no_keys = full.at[1, 0, 6].set(False)
  for causal in (False, True):
    for m in (None, mask, full) + (() if causal else (no_keys,)):

      def loss(attention):
        return lambda q, k, v: jnp.sum(jnp.sin(attention(q, k, v, m, causal)))

      ours = jax.value_and_grad(
        loss(lambda q, k, v, m, c: cpu_kernels.attention(q, k, v, mask=m, causal=c)),
        argnums=(0, 1, 2),
      )(q, k, v)
      theirs = jax.value_and_grad(
        loss(lambda q, k, v, m, c: jax.nn.dot_product_attention(q, k, v, mask=m, is_causal=c)),
        argnums=(0, 1, 2),
      )(q, k, v)
      jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, theirs
      )
