"""Errors a user can fix.

Every `VidcoreError` message is one line that says what was wrong and how to
fix it; the CLI prints it without a traceback and exits non-zero. Anything
else that escapes is a bug in vidcore or a plugin.
"""

from __future__ import annotations


class VidcoreError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class UnknownNameError(VidcoreError, KeyError):
    """A backend, sampler, schedule, memory preset, dtype or kernel name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, tuple(known)
        choices = ", ".join(sorted(self.known)) or "none registered"
        super().__init__(f"unknown {kind} {name!r}; choose one of: {choices}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class InvalidRequestError(VidcoreError, ValueError):
    """A generation setting the chosen backend cannot take."""


class CheckpointError(VidcoreError):
    """A checkpoint folder or file that is missing, incomplete, unsafe or does not match the model."""


class OfflineError(CheckpointError):
    """Files are missing and the hub cannot be reached (or offline mode is on)."""


class Cancelled(Exception):
    """Raised by a step callback to stop a run; nothing is written."""


class OutputError(VidcoreError):
    """An output that cannot be written: a read-only or full disk, permissions, a folder in the way."""


class OutputBusyError(VidcoreError):
    """An output another live vidcore process is writing (it holds the output's claim)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means the host or an accelerator ran out of memory (the fix is a leaner setting)."""
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(exc).lower()
