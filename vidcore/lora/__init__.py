"""LoRA adapters for any backend (PEFT/diffusers, kohya/ComfyUI, musubi, LightX2V files; merged or on the fly)."""

from .apply import LoraHandle, apply_lora, apply_lora_to, apply_plan, remove_lora_from
from .attach import LoraSpec, check_loras, load_into, lora_components
from .formats import LoraLayer, LoraPlan, ParamDelta, Rows, parse_lora, read_lora_file

__all__ = ["LoraHandle", "LoraLayer", "LoraPlan", "LoraSpec", "ParamDelta", "Rows", "apply_lora", "apply_lora_to",
           "apply_plan", "check_loras", "load_into", "lora_components", "parse_lora", "read_lora_file",
           "remove_lora_from"]
