"""`Scheduler`: choose a registered schedule by name, validate its options once, build it per step count."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import InvalidRequestError
from .schedules import Schedule

ScheduleFn = Callable[..., Schedule]


class Scheduler:
    """``Scheduler("karras", rho=7)(steps) -> Schedule``.

    Names come from the one registry (the core's schedules and those of the
    ``register_schedules`` hook). Options are checked when the scheduler is
    made (before any heavy work), so a typo fails with one line naming the
    accepted options.
    """

    def __init__(self, name: str, **options: Any) -> None:
        from .. import plugins

        self._fn = plugins.lookup("schedule", name)
        self.name, self.options = name, dict(options)
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
        from .. import plugins

        return plugins.names("schedule")

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


def register_schedule(name: str) -> Callable[[ScheduleFn], ScheduleFn]:
    """Decorator: ``@register_schedule("mine")`` registers ``fn(steps, *, **options) -> Schedule`` in the one
    registry, for scripts and notebooks (a package uses the ``register_schedules`` hook)."""
    from .. import plugins

    return plugins.registering("schedule", name)
