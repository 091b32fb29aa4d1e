"""Optional prompt rewriting (the official "Normal" and "Master" modes), through any instruction model.

HunyuanVideo's authors rewrite user prompts with an instruction-tuned LLM
before encoding: "Normal" keeps the description plain (and translates it to
English), "Master" elaborates composition, lighting and camera work. vidcore
never calls a network by default: a `PromptRewrite` wraps whatever callable
you give it (a local model, an API client) and is applied only when set on
the backend (``backend.prompt_rewriter = PromptRewrite(fn, "Master")``).
The instruction wording below is ours, written to the same brief.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vidcore.errors import InvalidRequestError

_COMMON = (
    "Rewrite the video description given at the end. Keep every piece of information it contains, including "
    "style words and technical terms. Write the result in English, translating if needed. If lighting, "
    "atmosphere or style are missing, you may add plausible ones. Answer with the rewritten description only.")
INSTRUCTIONS = {
    "Normal": _COMMON + " If the input only names an object or a person, describe its basic look in one or two "
                        "short sentences.",
    "Master": _COMMON + " Aim for an aesthetically rich scene: describe each visual element, the composition, "
                        "light and camera in detail.",
}


def instruction(prompt: str, mode: str = "Normal") -> str:
    """The text sent to the rewriting model for ``prompt``."""
    if mode not in INSTRUCTIONS:
        raise InvalidRequestError(f"prompt rewrite mode {mode!r} is unknown; choose Normal or Master")
    return f"{INSTRUCTIONS[mode]}\n\nDescription: \"{prompt}\""


@dataclass
class PromptRewrite:
    """``PromptRewrite(generate, mode)(prompt) -> rewritten prompt``; ``generate(text) -> text`` is yours."""

    generate: Callable[[str], str]
    mode: str = "Normal"

    def __post_init__(self) -> None:
        instruction("", self.mode)  # validates the mode

    def __call__(self, prompt: str) -> str:
        out = str(self.generate(instruction(prompt, self.mode))).strip()
        return out or prompt
