"""LoRA adapters for any backend's linear layers (diffusers/PEFT and kohya files; merged or on the fly)."""

from .apply import LoraHandle, apply_lora, apply_lora_to
from .formats import LoraLayer, parse_lora, read_lora_file

__all__ = ["LoraHandle", "LoraLayer", "apply_lora", "apply_lora_to", "parse_lora", "read_lora_file"]
