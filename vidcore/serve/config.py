"""What one `vidcore serve` is asked to do, checked in one line each before anything binds or loads."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidRequestError

MIB = 2**20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    backends: tuple[str, ...]
    out: Path
    host: str = "127.0.0.1"
    port: int = 8000
    memory: str = "resident"
    dtype: str | None = None
    store: str | None = None
    api_key: str | None = None
    ckpts: dict[str, str] = field(default_factory=dict)
    #: None: one worker per visible GPU, or one on the CPU
    devices: tuple[str, ...] | None = None
    max_queue: int = 100
    max_body_bytes: int = 32 * MIB
    #: the poll interval the server suggests to the SDK (``openai-poll-after-ms``)
    poll_after_ms: int = 1000

    def check(self) -> ServeConfig:
        """Refuse settings that cannot serve safely; names are looked up in the plugin registry."""
        from ..memory import get_policy
        from ..plugins import get_backend
        from ..request import parse_device, parse_dtype

        if not self.backends:
            raise InvalidRequestError("serve needs at least one --backend")
        if len(set(self.backends)) != len(self.backends):
            raise InvalidRequestError("a --backend is given twice")
        for name in self.backends:
            get_backend(name)
        for name, folder in self.ckpts.items():
            if name not in self.backends:
                raise InvalidRequestError(f"--ckpt names backend {name!r}, which is not served; serve it with "
                                          f"--backend {name}")
            if not Path(folder).is_dir():
                raise InvalidRequestError(f"checkpoint folder {folder!r} for {name!r} does not exist")
        get_policy(self.memory, parse_dtype(self.dtype))
        for device in self.devices or ():
            parse_device(device)
        if self.api_key is not None and (not self.api_key.strip() or self.api_key != self.api_key.strip()):
            raise InvalidRequestError("the API key is empty or has spaces around it")
        if not is_loopback(self.host) and not self.api_key:
            raise InvalidRequestError(f"--host {self.host} is reachable from other machines; set an API key with "
                                      "VIDCORE_API_KEY (or --api-key) to serve there, or serve on 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise InvalidRequestError(f"--port {self.port} is not a TCP port; use 1 to 65535 (0: any free port)")
        if self.max_queue < 1:
            raise InvalidRequestError(f"--max-queue must be at least 1; got {self.max_queue}")
        if self.max_body_bytes < 1024:
            raise InvalidRequestError("--max-body-mb is too small to take any request")
        return self

    def worker_devices(self) -> tuple[str, ...]:
        import torch

        if self.devices:
            return self.devices
        if torch.cuda.is_available() and torch.cuda.device_count():
            return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
        return ("cpu",)
