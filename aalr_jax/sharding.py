r"""Device meshes: where the batch axes of sampling and training live.

aalr_jax spreads work over devices with XLA's SPMD partitioner (``jax.sharding``), not with a
process pool of its own. A *mesh* here is a one-dimensional :class:`jax.sharding.Mesh` whose single
axis (:data:`AXIS`, ``"devices"``) carries a batch axis of the computation:

- sampling: the flattened ``observations × chains`` axis (each chain is independent; the pooled
  metric of one observation's chains is a mean the compiler turns into a cross-device reduction);
- training: the minibatch axis (parameters and optimizer state are replicated; the mean loss over
  the batch, and so its gradient, is reduced across devices by the compiler).

An array of leading length ``n`` laid out over ``D`` devices holds ``n / D`` rows on each device;
``n`` must be a multiple of ``D`` (:func:`check_divisible` says so with the argument's name).

:func:`resolve_mesh` turns the ``mesh`` argument that sampling and training accept into a mesh or
``None`` (one device: nothing is placed, programs run exactly as without this module).
:func:`initialize_distributed` starts ``jax.distributed`` for several processes (hosts); after it,
``jax.devices()`` lists the devices of every process and a mesh over them spans the hosts.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "AXIS",
    "check_divisible",
    "initialize_distributed",
    "make_mesh",
    "process_rows",
    "replicate",
    "replicated_sharding",
    "resolve_mesh",
    "row_sharding",
    "shard_rows",
]

AXIS = "devices"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (axis name :data:`AXIS`) over ``devices`` (default: ``jax.devices()``, all
    processes' devices)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got an empty sequence")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def resolve_mesh(mesh) -> Mesh | None:
    """The mesh to use for a ``mesh`` argument.

    Args:
        mesh: ``None`` (all devices when there are several, else no mesh), ``False`` (no mesh:
            one device), an int ``D`` (the first ``D`` devices), a sequence of devices, or a
            one-axis :class:`jax.sharding.Mesh`.

    Returns:
        A one-axis mesh with at least two devices, or ``None`` for single-device execution.
    """
    if mesh is False:
        return None
    if mesh is None:
        return make_mesh() if jax.device_count() > 1 else None
    if isinstance(mesh, Mesh):
        if len(mesh.axis_names) != 1:
            raise ValueError(f"mesh: expected a mesh with one axis, got axes {mesh.axis_names}")
        if mesh.axis_names[0] != AXIS:
            mesh = Mesh(mesh.devices, (AXIS,))
        return mesh if mesh.size > 1 else None
    if isinstance(mesh, (int, np.integer)) and not isinstance(mesh, bool):
        available = jax.device_count()
        if not 1 <= mesh <= available:
            raise ValueError(f"mesh: expected a number of devices in [1, {available}], got {mesh}")
        return make_mesh(jax.devices()[:mesh]) if mesh > 1 else None
    try:
        devices = list(mesh)
    except TypeError:
        raise TypeError(
            "mesh: expected None, False, a number of devices, a sequence of devices or a "
            f"jax.sharding.Mesh, got {type(mesh).__name__}") from None
    return make_mesh(devices) if len(devices) > 1 else None


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(name: str, n: int, mesh: Mesh | None) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``n`` splits evenly over the mesh."""
    if mesh is not None and n % mesh.size:
        raise ValueError(
            f"{name}: expected a multiple of the number of devices ({mesh.size}) to shard over "
            f"them, got {n}; pass mesh=False for one device or a mesh whose size divides {n}")


def shard_rows(tree, mesh: Mesh | None):
    """Place every leaf of ``tree`` with its leading axis split over ``mesh`` (identity for
    ``None``)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, row_sharding(mesh))


def replicate(tree, mesh: Mesh | None):
    """Place every leaf of ``tree`` whole on every device of ``mesh`` (identity for ``None``)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated_sharding(mesh))


def process_rows(n: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The rows of an ``n``-row array that this process holds in a multi-process run.

    Process ``i`` of ``P`` holds rows ``[i·n/P, (i+1)·n/P)``; ``n`` must be a multiple of ``P``.
    Defaults: ``jax.process_index()`` and ``jax.process_count()`` (one process: all rows).
    """
    i = jax.process_index() if process_index is None else process_index
    p = jax.process_count() if process_count is None else process_count
    if n % p:
        raise ValueError(f"n: expected a multiple of the number of processes ({p}), got {n}")
    per = n // p
    return slice(i * per, (i + 1) * per)


_ENV = {
    "coordinator_address": "AALR_JAX_COORDINATOR",
    "num_processes": "AALR_JAX_NUM_PROCESSES",
    "process_id": "AALR_JAX_PROCESS_ID",
}


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Start ``jax.distributed`` when several processes are asked for; return whether it started.

    Each argument left ``None`` is read from the environment (``AALR_JAX_COORDINATOR``,
    ``AALR_JAX_NUM_PROCESSES``, ``AALR_JAX_PROCESS_ID``); when none is given anywhere, nothing
    starts and the function returns ``False`` (one process). Clusters that JAX detects by itself
    (SLURM, Open MPI, Cloud TPU) need only ``jax.distributed.initialize()``, which this calls
    with the values given.

    Args:
        coordinator_address: ``host:port`` of process 0.
        num_processes: number of processes, at least 1.
        process_id: this process's index in ``[0, num_processes)``.
    """
    values = {"coordinator_address": coordinator_address, "num_processes": num_processes,
              "process_id": process_id}
    for name, variable in _ENV.items():
        if values[name] is None and os.environ.get(variable):
            values[name] = os.environ[variable]
    if all(v is None for v in values.values()):
        return False
    for name in ("num_processes", "process_id"):
        if values[name] is not None:
            try:
                values[name] = int(values[name])
            except (TypeError, ValueError):
                raise ValueError(f"{name}: expected an integer, got {values[name]!r}") from None
    n, i = values["num_processes"], values["process_id"]
    if n is not None and n < 1:
        raise ValueError(f"num_processes: expected at least 1, got {n}")
    if n is not None and i is not None and not 0 <= i < n:
        raise ValueError(f"process_id: expected an integer in [0, {n}), got {i}")
    jax.distributed.initialize(**values)
    return True
