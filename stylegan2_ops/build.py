"""Compile the C++ / CUDA sources in ``csrc/`` on first use and load them as Python modules.

Builds go to a per-user cache folder (``$XDG_CACHE_HOME/datasetgan/torch_extensions``, by default
``~/.cache/datasetgan/torch_extensions``; ``STYLEGAN2_OPS_CACHE`` overrides it), one sub-folder per
Python / torch / CPU-feature combination so a cache shared between machines never hands out a binary
built for another one, and one per source content, so work trees with different versions of the
sources never rebuild over each other. A file lock serialises builds between processes; ninja
rebuilds only when a source or a flag changed.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from filelock import FileLock

from datasetgan.errors import DatasetganError

CSRC = Path(__file__).resolve().parent / "csrc"
CACHE_ENV = "STYLEGAN2_OPS_CACHE"
# Data-centre GPUs of the last generations; override with TORCH_CUDA_ARCH_LIST.
DEFAULT_CUDA_ARCHS = "8.0;9.0"


class BuildError(DatasetganError, RuntimeError):
    """A compiled backend could not be built or loaded."""


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "datasetgan" / "torch_extensions"


def cpu_signature() -> str:
    """Short hash of the CPU model and feature flags (we compile with -march=native)."""
    text = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "model name", "Features")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# Files each backend is built from; the first ones are compiled, headers come last.
SOURCES = {"cpu": ["cpu_ops.cpp", "activations.h"],
           "cuda": ["cuda_ops.cpp", "cuda_kernels.cu", "activations.h"]}


def source_hash(kind: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES[kind]:
        digest.update(name.encode() + b"\0" + (CSRC / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_dir(kind: str) -> Path:
    """One folder per source content and toolchain: checkouts with the same sources share a build,
    and different versions (other branches, other work trees) never rebuild over each other."""
    tag = f"{kind}-py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}"
    if kind == "cpu":
        tag += f"-{cpu_signature()}"
    else:
        tag += f"-cu{torch.version.cuda}"
    return cache_root() / f"{tag}-{source_hash(kind)}".replace("+", "_")


def stage_sources(kind: str, where: Path) -> Path:
    """Copy the sources into the build folder so the compiled paths do not depend on the checkout."""
    src = where / "src"
    src.mkdir(parents=True, exist_ok=True)
    for name in SOURCES[kind]:
        data = (CSRC / name).read_bytes()
        target = src / name
        if not target.exists() or target.read_bytes() != data:
            tmp = src / f".{name}.{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return src


def cpu_flags() -> list[str]:
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
        flags.append("-march=native")
    return flags


def find_nvcc() -> Path:
    """The real nvcc (following wrapper scripts' symlinks is not possible, so ask CUDA_HOME first)."""
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env) and (Path(os.environ[env]) / "bin" / "nvcc").exists():
            return Path(os.environ[env]) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return Path("/usr/local/cuda/bin/nvcc")
    raise BuildError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")


@functools.cache
def cuda_toolkit_root() -> Path:
    """The toolkit folder nvcc runs from (nvcc may be a wrapper script, so ask nvcc itself)."""
    nvcc = find_nvcc()
    try:
        out = subprocess.run([str(nvcc), "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot run {nvcc}: {exc}") from exc
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return Path(line.split("=", 1)[1].strip()).resolve()
    return nvcc.resolve().parent.parent


def cudart_link_dir(where: Path) -> Path:
    """A folder holding ``libcudart.so`` for the linker.

    pip-installed CUDA runtimes ship only ``libcudart.so.<major>``; the linker's ``-lcudart`` wants the
    unversioned name, so we make a folder with a symlink to the runtime that torch itself uses.
    """
    candidates = []
    try:
        import nvidia  # the pip CUDA runtime packages

        for root in nvidia.__path__:
            candidates += sorted(Path(root).glob("cu*/lib/libcudart.so*"))
            candidates += sorted(Path(root).glob("cuda_runtime/lib/libcudart.so*"))
    except ImportError:
        pass
    toolkit = cuda_toolkit_root()
    candidates += sorted((toolkit / "lib64").glob("libcudart.so.*"))
    candidates += sorted((toolkit / "lib").glob("libcudart.so.*"))
    candidates = [c for c in candidates if c.resolve().exists()]
    if not candidates:
        raise BuildError("no libcudart.so* found next to torch or nvcc")
    link = where / "cudart"
    link.mkdir(parents=True, exist_ok=True)
    target = candidates[0].resolve()
    so = link / "libcudart.so"
    if not so.exists() or so.resolve() != target:
        tmp = link / f".libcudart.so.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, so)
    return link


def cuda_include_dirs() -> list[str]:
    """The toolkit's headers, for the host compiler (nvcc finds them by itself)."""
    toolkit = cuda_toolkit_root()
    for d in [toolkit / "include", *sorted(toolkit.glob("targets/*/include"))]:
        if (d / "cuda_runtime.h").exists() and (d / "crt" / "host_config.h").exists():
            return [str(d)]
    raise BuildError(f"no complete CUDA headers (cuda_runtime.h, crt/host_config.h) under {toolkit}")


def gencode_flags() -> list[str]:
    """nvcc -gencode flags for TORCH_CUDA_ARCH_LIST (default "8.0;9.0"), plus PTX of the newest
    architecture so later GPUs can JIT-compile it. Passing them explicitly stops torch from asking a
    (possibly absent) GPU for its architecture."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS
    flags, newest = [], None
    for item in archs.replace(",", ";").replace(" ", ";").split(";"):
        if not item:
            continue
        num = item.split("+")[0].replace(".", "")
        if not num.isdigit():
            raise BuildError(f"cannot read TORCH_CUDA_ARCH_LIST entry {item!r}")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if item.endswith("+PTX") or newest is None or int(num) > int(newest):
            newest = num
    flags.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
    return flags


@functools.cache
def load(kind: str, verbose: bool = False):
    """Build (if needed) and import the ``cpu`` or ``cuda`` extension; raises BuildError."""
    from torch.utils import cpp_extension

    if kind not in ("cpu", "cuda"):
        raise ValueError(f"no compiled backend named {kind!r}")
    if shutil.which("ninja") is None and not cpp_extension.is_ninja_available():
        raise BuildError("ninja is not installed")
    where = build_dir(kind)
    where.mkdir(parents=True, exist_ok=True)
    name = f"stylegan2_ops_{kind}"
    src = where / "src"
    compiled = [str(src / n) for n in SOURCES[kind] if not n.endswith(".h")]
    kwargs: dict = dict(name=name, build_directory=str(where), verbose=verbose, sources=compiled,
                        extra_include_paths=[str(src)])
    if kind == "cpu":
        kwargs.update(extra_cflags=cpu_flags(), extra_ldflags=["-fopenmp"])
    else:
        find_nvcc()
        if cpp_extension.CUDA_HOME is None:
            raise BuildError("torch found no CUDA toolkit (set CUDA_HOME)")
        kwargs.update(extra_cflags=["-O3"],
                      extra_cuda_cflags=["-O3", "-lineinfo"] + gencode_flags(),
                      extra_include_paths=[str(src)] + cuda_include_dirs(),
                      extra_ldflags=[f"-L{cudart_link_dir(where)}", "-lcudart"])
    try:
        with FileLock(str(where / "build.lock"), timeout=1800):
            stage_sources(kind, where)
            return cpp_extension.load(**kwargs)
    except Exception as exc:  # compiler errors, missing toolchain, import errors
        raise BuildError(f"building the {kind} backend in {where} failed: {exc}") from exc
