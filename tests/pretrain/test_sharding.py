"""Mesh construction: sizes, -1, errors, and hybrid (multi-slice) layouts."""

import dataclasses

import jax
import numpy as np
import pytest

from pretrain.devices import sharding


def test_minus_one_takes_the_rest():
  assert sharding.mesh_shape(dict(data=-1, fsdp=2, tensor=2), 8) == dict(
    data=2, fsdp=2, sequence=1, tensor=2
  )
  mesh = sharding.make_mesh(dict(data=-1, sequence=2))
  assert dict(mesh.shape) == dict(data=4, fsdp=1, sequence=2, tensor=1)
  # an explicit -1 on another axis wins over data's default -1: --config.mesh.fsdp=-1
  assert sharding.mesh_shape(dict(data=-1, fsdp=-1), 8) == dict(
    data=1, fsdp=8, sequence=1, tensor=1
  )


@pytest.mark.parametrize(
  "cfg,match",
  [
    (dict(data=3), "data\\*fsdp\\*sequence\\*tensor = 3 but there are 8 devices"),
    (dict(data=-1, fsdp=-1, tensor=-1), "fsdp=-1 and tensor=-1; at most one axis may be -1"),
    (dict(data=2, sequence=-1, tensor=-1), "sequence=-1 and tensor=-1; at most one axis"),
    (dict(data=-1, fsdp=3), "the fixed axes \\(3 ways\\) do not divide the 8 devices"),
    (dict(data=0), "axis sizes must be positive or -1"),
  ],
)
def test_mesh_errors_name_the_field(cfg, match):
  with pytest.raises(sharding.MeshError, match="config.mesh: " + match):
    sharding.mesh_shape(cfg, 8)


@dataclasses.dataclass(frozen=True)
class FakeDevice:
  id: int
  slice_index: int
  process_index: int = 0
  platform: str = "cpu"
  device_kind: str = "fake"


def test_hybrid_mesh_puts_slices_on_the_outer_axis():
  # 2 slices of 4 devices; data parallel across slices, fsdp within.
  devices = [FakeDevice(i, slice_index=i // 4) for i in range(8)]
  array = sharding.hybrid_device_array((2, 4, 1, 1), [2, 1, 1, 1], devices)
  assert array.shape == (2, 4, 1, 1)
  slices = np.vectorize(lambda d: d.slice_index)(array)
  assert (slices[0] == 0).all() and (slices[1] == 1).all()  # each data row is one slice
  with pytest.raises(sharding.MeshError, match="config.mesh.dcn.fsdp: 3 slices do not divide"):
    sharding.hybrid_device_array((2, 4, 1, 1), [1, 3, 1, 1], devices)
  with pytest.raises(sharding.MeshError, match="config.mesh.dcn"):
    sharding.hybrid_device_array((8, 1, 1, 1), [4, 1, 1, 1], devices)  # 4 slices wanted, 2 exist


def test_hybrid_mesh_uses_processes_where_devices_have_no_slices():
  # 2 "hosts" of 4 devices that all report slice 0: processes are the slices.
  devices = [FakeDevice(i, slice_index=0, process_index=i // 4) for i in range(8)]
  array = sharding.hybrid_device_array((2, 4, 1, 1), [2, 1, 1, 1], devices)
  processes = np.vectorize(lambda d: d.process_index)(array)
  assert (processes[0] == 0).all() and (processes[1] == 1).all()
  # The 8 local CPU devices are one process: a 1-slice hybrid mesh is the plain mesh.
  mesh = sharding.make_mesh(dict(data=2, fsdp=4, dcn=dict(data=1)))
  assert dict(mesh.shape)["fsdp"] == 4
  assert len(jax.devices()) == 8
