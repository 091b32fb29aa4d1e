"""Seeded noise that does not depend on batch size.

``generator`` is a `torch.Generator`, a list of them (one per sample), or
None (torch's default generator). With a list, sample ``b`` draws from its own
stream, so a batch of two gives the same samples as two runs of one with the
same generators; a single generator draws the whole batch in one call (for a
batch of one the two are identical). Noise is drawn on the generator's device,
in ``x``'s dtype, then moved to ``x``'s device, so CPU generators give the same
numbers whatever device the model runs on.
"""

from __future__ import annotations

import torch

Generator = torch.Generator | list[torch.Generator] | None


def randn_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``."""
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype).to(x.device)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    gens = list(generator)
    if len(gens) != x.shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {x.shape[0]}; pass one per sample")
    one = (1, *x.shape[1:])
    parts = [torch.randn(one, generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in gens]
    return torch.cat(parts, dim=0)
