"""What a backend's checkpoint must contain, and whether a folder does: `vidcore inspect` / `vidcore verify`.

Both build the model on the ``meta`` device (no memory, any size) and read
only safetensors headers and ``.pth`` metadata, so a 100 GB checkpoint is
checked in seconds and before any loading starts. Checkpoint names are
compared after ``backend.key_map``, exactly as `load_component` will see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import (
    Mismatch,
    compare,
    expected_tensors,
    find_component_files,
    map_names,
    read_header,
    tied_names,
)
from .errors import CheckpointError

if TYPE_CHECKING:
    from .backend import Backend


def manifest(backend: Backend) -> dict[str, dict[str, dict[str, Any]]]:
    """Every state-dict tensor of every component at full size: ``{component: {name: {shape, dtype}}}``."""
    modules = backend.build("meta")
    return {
        comp: {name: {"shape": list(info.shape), "dtype": info.dtype} for name, info in expected_tensors(m).items()}
        for comp, m in modules.items()
    }


@dataclass
class ComponentReport:
    """One component's files and tensors against its meta-built module."""

    files: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    tensors: int = 0
    mismatch: Mismatch | None = None  # None when files were missing or unreadable (not compared)

    @property
    def ok(self) -> bool:
        return not self.missing_files and not self.unreadable and (self.mismatch is None or self.mismatch.ok)


@dataclass
class VerifyReport:
    """The result of `verify`: ``.ok``, ``.lines()`` for people, ``.to_json()`` for tools."""

    backend: str
    ckpt_dir: Path
    components: dict[str, ComponentReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # folder-level problems
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.components.values())

    # per-kind views, {component: [...]}, only components that have some
    @property
    def missing_files(self) -> dict[str, list[str]]:
        return {k: c.missing_files for k, c in self.components.items() if c.missing_files}

    @property
    def unreadable(self) -> dict[str, list[str]]:
        return {k: c.unreadable for k, c in self.components.items() if c.unreadable}

    @property
    def missing(self) -> dict[str, list[str]]:
        return {k: c.mismatch.missing for k, c in self.components.items() if c.mismatch and c.mismatch.missing}

    @property
    def unexpected(self) -> dict[str, list[str]]:
        return {k: c.mismatch.unexpected for k, c in self.components.items()
                if c.mismatch and c.mismatch.unexpected}

    @property
    def mis_shaped(self) -> dict[str, list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
        return {k: c.mismatch.mis_shaped for k, c in self.components.items()
                if c.mismatch and c.mismatch.mis_shaped}

    def _hint(self) -> str:
        if self.problems or self.missing_files or self.unreadable:
            return f"fetch the files with `vidcore download {self.backend} --dir {self.ckpt_dir}`"
        return "the folder holds weights of a different model or variant; check the backend name"

    def lines(self) -> list[str]:
        """A human-readable report: one line per component, then one per problem."""
        out = [f"checkpoint {self.ckpt_dir} for {self.backend}"]
        out += [f"  {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        for comp, c in self.components.items():
            state = "OK" if c.ok else "PROBLEMS"
            out.append(f"{comp}: {state} ({len(c.files)} file(s), {c.tensors} tensors)")
            out += [f"  missing file      {f}" for f in c.missing_files]
            out += [f"  unreadable        {u}" for u in c.unreadable]
            if c.mismatch is not None:
                out += [f"  missing tensor    {n}" for n in c.mismatch.missing]
                out += [f"  unexpected tensor {n}" for n in c.mismatch.unexpected]
                out += [f"  mis-shaped tensor {n}: checkpoint {list(ck)} vs model {list(md)}"
                        for n, ck, md in c.mismatch.mis_shaped]
        out.append("OK" if self.ok else f"FAILED: {self._hint()}")
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything in the report."""
        comps = {}
        for comp, c in self.components.items():
            m = c.mismatch or Mismatch()
            comps[comp] = {
                "ok": c.ok, "files": c.files, "tensors": c.tensors, "missing_files": c.missing_files,
                "unreadable": c.unreadable, "compared": c.mismatch is not None, "missing": m.missing,
                "unexpected": m.unexpected,
                "mis_shaped": [{"name": n, "checkpoint": list(ck), "model": list(md)} for n, ck, md in m.mis_shaped],
            }
        return {"backend": self.backend, "dir": str(self.ckpt_dir), "ok": self.ok, "problems": self.problems,
                "notes": self.notes, "components": comps}

    def summary(self) -> str:
        """One line naming every problem kind per component (first few names)."""
        parts = list(self.problems)
        for comp, c in self.components.items():
            if c.missing_files:
                parts.append(f"{comp} lacks file(s) {', '.join(c.missing_files[:3])}"
                             + (", ..." if len(c.missing_files) > 3 else ""))
            if c.unreadable:
                parts.append(f"{comp}: {c.unreadable[0]}")
            if c.mismatch is not None and not c.mismatch.ok:
                parts.append(f"{comp} tensors: {c.mismatch.summary()}")
        return "; ".join(p.replace("\n", " ") for p in parts)

    def raise_if_bad(self) -> None:
        """Raise `CheckpointError` with a one-line summary unless the folder is complete and matches."""
        if not self.ok:
            raise CheckpointError(f"checkpoint {self.ckpt_dir} is not usable for {self.backend}: {self.summary()}; "
                                  f"{self._hint()} (details: `vidcore verify {self.backend} {self.ckpt_dir}`)")


def verify(backend: Backend, ckpt_dir: Path) -> VerifyReport:
    """Check a checkpoint folder against the backend's meta-built components, reading headers only."""
    ckpt_dir = Path(ckpt_dir)
    report = VerifyReport(backend.name, ckpt_dir)
    layout = backend.layout
    if layout is None:
        report.notes.append(f"backend {backend.name!r} declares no checkpoint layout; nothing to check")
        return report
    if not ckpt_dir.is_dir():
        report.problems.append(f"folder {ckpt_dir} does not exist")
        return report
    for pattern in layout.extra:  # tokenizers, configs: reported, but the backend judges what it needs
        if not any(p.is_file() for p in ckpt_dir.glob(pattern)):
            report.notes.append(f"no file matches {pattern!r} (listed by the backend beside its weights)")
    for comp, module in backend.build("meta").items():
        rep = report.components[comp] = ComponentReport()
        expected = expected_tensors(module)
        if comp not in layout.files:
            if expected:
                rep.unreadable.append(f"the backend's layout lists no files for {comp} ({len(expected)} tensors)")
            continue
        try:
            found_files, rep.missing_files = find_component_files(layout, ckpt_dir, comp)
        except CheckpointError as e:  # an unreadable shard index
            rep.unreadable.append(str(e))
            continue
        rep.files = [p.relative_to(ckpt_dir).as_posix() for p in found_files]
        infos = {}
        for path in found_files:
            try:
                infos.update(read_header(path))
            except CheckpointError as e:
                rep.unreadable.append(str(e))
        rep.tensors = len(infos)
        if rep.missing_files or rep.unreadable:
            continue
        try:
            mapping = map_names(layout, comp, list(infos), backend.key_map, name=backend.name)
        except CheckpointError as e:
            rep.unreadable.append(str(e))
            continue
        rep.mismatch = compare(expected, {dst: infos[src] for src, dst in mapping.items()}, tied_names(module))
    return report
