"""`Scheduler`: choose a schedule by name, validate its options once, build it per step count."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InvalidRequestError, UnknownNameError
from .schedules import SCHEDULES, Schedule


class Scheduler:
    """``Scheduler("karras", rho=7)(steps) -> Schedule``.

    Options are checked when the scheduler is made (before any heavy work),
    so a typo fails with one line naming the accepted options.
    """

    def __init__(self, name: str, **options: Any) -> None:
        if name not in SCHEDULES:
            raise UnknownNameError("schedule", name, list(SCHEDULES))
        self.name, self.options = name, dict(options)
        self._fn = SCHEDULES[name]
        params = inspect.signature(self._fn).parameters
        accepted = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
        bad = sorted(set(options) - set(accepted))
        if bad:
            raise InvalidRequestError(
                f"schedule {name!r} has no option {', '.join(map(repr, bad))}; "
                f"accepted options: {', '.join(accepted) or 'none'}"
            )

    @staticmethod
    def names() -> list[str]:
        return sorted(SCHEDULES)

    def __call__(self, steps: int) -> Schedule:
        if int(steps) != steps or steps < 1:
            raise InvalidRequestError(f"steps must be a positive integer, got {steps!r}")
        try:
            schedule = self._fn(int(steps), **self.options)
        except InvalidRequestError:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"schedule {self.name!r} rejected its options {self.options}: {exc}") from exc
        schedule.name, schedule.options = self.name, dict(self.options)
        return schedule

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Scheduler({self.name!r}{', ' if opts else ''}{opts})"
