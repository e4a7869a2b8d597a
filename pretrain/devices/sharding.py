"""Device mesh and logical-axis rules -> NamedShardings.

The mesh has axes (data, fsdp, sequence, tensor) with sizes from config.mesh; -1 means "the
devices the other axes leave". Parameters and activations carry logical names (models/axes.py); the rules
in config.mesh.rules map each logical name to mesh axes, e.g. ('embed', 'fsdp') shards the
model width over the FSDP axis and ('batch', ('data', 'fsdp')) splits examples over both.
"""

import contextlib
import math

import jax
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from models import axes
from pretrain.ground import errors

MESH_AXES = ("data", "fsdp", "sequence", "tensor")


class MeshError(errors.UserError):
  pass


def mesh_shape(mesh_cfg, num_devices):
  """Resolves -1 and checks that the product of the axes equals the device count."""
  sizes = [int(mesh_cfg.get(name, 1)) for name in MESH_AXES]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1 and free[0] == 0:
    # data=-1 is the default: another axis set to -1 (say fsdp=-1 for pure FSDP) wins.
    sizes[0], free = 1, free[1:]
  if len(free) > 1:
    named = " and ".join(f"{MESH_AXES[i]}=-1" for i in free)
    raise MeshError(f"config.mesh: {named}; at most one axis may be -1, set the others to sizes")
  if any(s == 0 or s < -1 for s in sizes):
    raise MeshError(
      f"config.mesh: axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}"
    )
  fixed = math.prod(s for s in sizes if s != -1)
  if free:
    if num_devices % fixed:
      raise MeshError(
        f"config.mesh: the fixed axes ({fixed} ways) do not divide the "
        f"{num_devices} devices; choose sizes whose product divides {num_devices}"
      )
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise MeshError(
      f"config.mesh: data*fsdp*sequence*tensor = {math.prod(sizes)} but there are {num_devices} "
      "devices; "
      "make the product match (or set one axis to -1)"
    )
  return dict(zip(MESH_AXES, sizes))


def dcn_shape(mesh_cfg):
  """How many slices (or hosts) each mesh axis spans: config.mesh.dcn, all 1 by default."""
  dcn = mesh_cfg.get("dcn", None) or {}
  return [int(dcn.get(name, 1)) for name in MESH_AXES]


def hybrid_device_array(shape, dcn, devices):
  """Devices laid out so that axes split across slices (slow links) are the outer ones.

  shape: total size per axis; dcn: slices per axis. Slices are TPU slices (device.slice_index)
  or, where all devices share one slice index (GPU clusters, CPU), processes.
  """
  for name, total, outer in zip(MESH_AXES, shape, dcn):
    if total % outer:
      raise MeshError(f"config.mesh.dcn.{name}: {outer} slices do not divide mesh.{name}={total}")
  ici = [total // outer for total, outer in zip(shape, dcn)]
  slices = {getattr(d, "slice_index", 0) for d in devices}
  try:
    return mesh_utils.create_hybrid_device_mesh(
      ici, dcn, devices, process_is_granule=len(slices) == 1
    )
  except ValueError as e:
    raise MeshError(f"config.mesh.dcn: {e}") from None


def make_mesh(mesh_cfg, devices=None):
  """The (data, fsdp, sequence, tensor) mesh over `devices` (default: all), with Auto axes so
  that jit with explicit in/out shardings lets XLA place everything in between. With
  config.mesh.dcn the mesh is hybrid: axes spanning several slices are laid out over them."""
  devices = jax.devices() if devices is None else list(devices)
  shape = tuple(mesh_shape(mesh_cfg, len(devices)).values())
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  dcn = dcn_shape(mesh_cfg)
  if math.prod(dcn) > 1:
    return jax.sharding.Mesh(hybrid_device_array(shape, dcn, devices), MESH_AXES, axis_types=auto)
  return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=auto)


logical_to_mesh = axes.logical_to_mesh


def is_spec(x):
  return isinstance(x, P)


def tree_shardings(logical_specs, mesh, rules):
  """A tree of logical PartitionSpecs -> the same tree of NamedShardings."""
  return jax.tree.map(
    lambda s: NamedSharding(mesh, logical_to_mesh(s, rules)), logical_specs, is_leaf=is_spec
  )


def batch_sharding(mesh, rules, ndim=2):
  """Sharding of a [batch] or [batch, length, ...] input array."""
  names = ((axes.BATCH,) + (axes.LENGTH,) + (None,) * (ndim - 2))[:ndim]
  return NamedSharding(mesh, logical_to_mesh(names, rules))


def replicated(mesh):
  return NamedSharding(mesh, P())


@contextlib.contextmanager
def context(mesh, rules):
  """The mesh and logical rules as context, for activation constraints in model code
  (models/axes.py: constrain)."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield
