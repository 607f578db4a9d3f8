"""Several processes, one run: the process group torchrun starts, which rank does what, and the share
of the work each rank takes.

A process started by torchrun (or by ``--nproc``, which starts torchrun's launcher) finds RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous in its environment; ``init`` joins the group (NCCL on
CUDA, gloo on the CPU) and picks the rank's device. Everything else asks ``world()``/``rank()``, which
are 1 and 0 in a plain process, so single-process code paths stay as they are.

Every rank draws the same random numbers: the run's generators are seeded from the recipe, and a rank
takes its slice of what they drew for the whole world (``share``). That is what makes a recipe the same
experiment at any world size, and a checkpoint written by rank 0 the state of every rank.

Torch is imported inside the functions: the CLI imports this module to see whether it is a rank.
"""

from __future__ import annotations

import os
from datetime import timedelta

from .errors import RunError

# a rank waits this long for the others at a collective before giving up (a peer that died without
# the socket closing, e.g. a machine that went away); torch's default is 30 minutes for gloo
TIMEOUT = timedelta(minutes=10)


def launched() -> bool:
    """True in a process torchrun started as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    if not launched():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world() -> int:
    if not active():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    if not active():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes the run directory and prints."""
    return int(os.environ.get("RANK", "0")) == 0 if launched() else True


def init(device):
    """Join the process group torchrun described (once) and return this rank's device: ``cuda:LOCAL_RANK``
    when ``device`` is CUDA (one GPU per rank), the CPU otherwise. Outside torchrun: ``device`` as given."""
    if not launched():
        return device
    import torch
    import torch.distributed as dist

    from .errors import UsageError

    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UsageError(f"rank with LOCAL_RANK {local} has no GPU of its own ({torch.cuda.device_count()} here); "
                             "start at most one process per GPU (--nproc / --nproc-per-node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def share(n: int) -> slice:
    """This rank's contiguous part of ``n`` items split over the world (sizes differ by at most one)."""
    w, r = world(), rank()
    return slice(r * n // w, (r + 1) * n // w)


def weight(local: int, total: int) -> float:
    """Factor on a rank's mean loss over ``local`` of ``total`` items so that the mean DDP takes of the
    ranks' gradients is the gradient of the mean over all ``total``: local * world / total (1 when the
    items split evenly)."""
    return local * world() / total


def all_mean(tensor):
    """The mean over ranks of ``tensor`` (in place; unchanged in a plain process)."""
    if world() > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
        tensor /= world()
    return tensor


def all_sum(tensor):
    """The sum over ranks of ``tensor`` (in place; unchanged in a plain process). Where every element is
    nonzero on at most one rank (each rank filled in its own part), the sum is that rank's value exactly."""
    if world() > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def all_gather_rows(local, total: int):
    """Concatenate along dim 0 the ``share(total)`` slices every rank holds (``local`` is this rank's)."""
    if world() == 1:
        return local
    import torch
    import torch.distributed as dist

    w = world()
    sizes = [(r + 1) * total // w - r * total // w for r in range(w)]
    most = max(sizes)
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (a small, plain value), in rank order."""
    if world() == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def from_main(compute):
    """What ``compute()`` returns on rank 0, on every rank; an exception there is raised on every rank
    (the same one-line error, not a hang at the next collective)."""
    if world() == 1:
        return compute()
    import torch.distributed as dist

    box: list = [None]
    if rank() == 0:
        try:
            box[0] = ("ok", compute())
        except Exception as e:  # noqa: BLE001 - carried to the other ranks, raised again below
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        if rank() == 0:
            raise value
        raise RankError(f"rank 0 stopped: {value}") from None
    return value


def check_same(what: str, value: str) -> None:
    """Refuse to start when the ranks disagree on ``value`` (a recipe hash, the plugins' versions)."""
    values = gather_objects(value)
    if len(set(values)) > 1:
        from .errors import UsageError

        differ = [r for r, v in enumerate(values) if v != values[0]]
        if rank() != 0:  # rank 0 says it for all
            raise RankError(f"rank 0 refused to start: ranks differ in their {what}")
        raise UsageError(f"rank(s) {', '.join(map(str, differ))} started with a different {what} than rank 0; "
                         "start every rank with the same command and the same installed toolbox and plugins")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank went away (its socket closed, the
    group was aborted), as opposed to a failure of this rank's own."""
    if world() == 1:
        return False
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        s in text for s in ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe", "ProcessGroup"))


def wrap(model, *, sync_bn: bool = False):
    """``model`` in DistributedDataParallel (it all-reduces the mean gradient in backward), with its
    batch norms synchronised when ``sync_bn``; ``model`` itself in a plain process."""
    if world() == 1:
        return model
    import torch

    from .errors import UsageError

    device = next(model.parameters()).device
    if sync_bn:
        if device.type != "cuda":
            raise UsageError("parallel.sync_bn needs CUDA: torch's SyncBatchNorm runs on GPUs only; "
                             "set parallel.sync_bn=false on the CPU (each rank normalises its own slice)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


class RankError(RunError):
    """A rank stopped because another one did; the other rank's own message is the one to show."""
