"""The few collectives sequence parallelism needs, on any torch.distributed backend.

NCCL and (in torch 2.13) gloo have a native ``all_to_all_single``; a backend
that lacks it gets the same exchange as pairs of point-to-point sends and
receives (`FORCE_P2P_ALL_TO_ALL` selects that path, so tests cover it).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

#: use send/recv pairs instead of the native all-to-all (for tests; set automatically if it is missing)
FORCE_P2P_ALL_TO_ALL = False
_UNSUPPORTED = ("not supported", "unimplemented", "not implemented", "does not support")


def group_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _p2p_all_to_all(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    """all_to_all_single on equal chunks of dim 0, as one batch of sends and receives."""
    size, me = dist.get_world_size(group), dist.get_rank(group)
    send, recv = inp.chunk(size), out.chunk(size)
    recv[me].copy_(send[me])
    ops = []
    for i in range(size):
        if i != me:
            peer = dist.get_global_rank(group, i)
            ops.append(dist.P2POp(dist.isend, send[i].contiguous(), peer, group))
            ops.append(dist.P2POp(dist.irecv, recv[i], peer, group))
    for req in dist.batch_isend_irecv(ops):
        req.wait()


def all_to_all_single(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    """``out[i] = inp of rank i's chunk for me`` over equal chunks of dim 0 (native when available)."""
    global FORCE_P2P_ALL_TO_ALL
    if not FORCE_P2P_ALL_TO_ALL:
        try:
            dist.all_to_all_single(out, inp, group=group)
            return
        except (RuntimeError, NotImplementedError) as exc:
            if not any(s in str(exc).lower() for s in _UNSUPPORTED):
                raise
            FORCE_P2P_ALL_TO_ALL = True
    _p2p_all_to_all(out, inp.contiguous(), group)


def all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    """Split ``x`` in equal chunks along ``scatter_dim``, send chunk i to rank i, concatenate what
    arrives along ``gather_dim`` in rank order (the Ulysses exchange between token and head splits)."""
    size = group_size(group)
    if size == 1:
        return x
    nd = x.dim()
    scatter_dim, gather_dim = scatter_dim % nd, gather_dim % nd
    inp = x.unflatten(scatter_dim, (size, -1)).movedim(scatter_dim, 0).contiguous()
    out = torch.empty_like(inp)
    all_to_all_single(out, inp, group)
    # out: (size, *x.shape with scatter_dim divided); rank-major along gather_dim
    return out.movedim(0, gather_dim).flatten(gather_dim, gather_dim + 1)


def all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Concatenate every rank's ``x`` (all the same shape) along ``dim`` in rank order."""
    size = group_size(group)
    if size == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=dim)


class RingShift:
    """Pass tensors one step around a ring of global ranks (send to the next, receive from the previous)."""

    def __init__(self, ranks: list[int], group):
        self.group = group
        me = ranks.index(dist.get_rank())
        self.next, self.prev = ranks[(me + 1) % len(ranks)], ranks[(me - 1) % len(ranks)]

    def start(self, tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], tuple]:
        """Begin sending ``tensors`` on; returns the buffers being received and a handle for `wait`."""
        send = [t.contiguous() for t in tensors]
        recv = [torch.empty_like(t) for t in send]
        ops = []
        for s, r in zip(send, recv):
            ops.append(dist.P2POp(dist.isend, s, self.next, self.group))
            ops.append(dist.P2POp(dist.irecv, r, self.prev, self.group))
        return recv, (dist.batch_isend_irecv(ops), send)  # the send buffers live until the wait

    @staticmethod
    def wait(handle: tuple) -> None:
        for req in handle[0]:
            req.wait()
