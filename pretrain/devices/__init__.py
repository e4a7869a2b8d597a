"""Devices: the mesh and its shardings, jax.distributed across hosts, and host memory on CPU."""
