"""Compile the C++ / CUDA sources in ``csrc/`` on first use and load them as Python modules.

Builds go to a per-user cache folder (``$XDG_CACHE_HOME/datasetgan/torch_extensions``, by default
``~/.cache/datasetgan/torch_extensions``; ``STYLEGAN2_OPS_CACHE`` overrides it), one sub-folder per
compile configuration: the folder's name carries a hash of everything in the compile command (torch's
installation and include paths, Python's headers, the compiler, flags, CPU features, CUDA toolkit and
architectures) and of the sources. Two virtual environments, machines or work trees therefore never
share a folder unless they would compile the very same thing, and never rebuild over each other.

Inside the folder, ``<name>.so`` is the installed module. A build runs under a file lock in a private
sub-folder ``build-<pid>-<token>/`` and its module is installed with one atomic rename, so a build
whose parent was killed (an orphaned ninja keeps compiling for a while) can only write into its own
private folder: it never corrupts the installed module nor a later build, and the next build removes
private folders whose process is gone.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import sysconfig
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
SOURCES = {"cpu": ["cpu_ops.cpp", "activations.h"], "cuda": ["cuda_ops.cpp", "cuda_kernels.cu", "activations.h"]}


def source_hash(kind: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES[kind]:
        digest.update(name.encode() + b"\0" + (CSRC / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def compiler() -> str:
    """The C++ compiler torch's build will run (CXX, else c++), resolved to its real file."""
    name = os.environ.get("CXX") or "c++"
    found = shutil.which(name)
    return str(Path(found).resolve()) if found else name


def compile_config(kind: str) -> dict:
    """Everything that goes into the compile and link commands, except paths inside the build folder."""
    from torch.utils import cpp_extension

    config = {
        "kind": kind,
        "python": sys.version,
        "python_include": sysconfig.get_paths()["include"],
        "torch": torch.__version__,
        "torch_path": str(Path(torch.__file__).resolve().parent),
        "torch_include": cpp_extension.include_paths(),
        "cxx": compiler(),
        "sources": source_hash(kind),
    }
    if kind == "cpu":
        config.update(cflags=cpu_flags(), ldflags=["-fopenmp"], cpu=cpu_signature())
    else:
        config.update(
            cflags=["-O3"],
            cuda_cflags=["-O3", "-lineinfo"] + gencode_flags(),
            cuda=torch.version.cuda,
            nvcc=str(find_nvcc().resolve()),
            cuda_include=cuda_include_dirs(),
            cudart=str(cudart_library()),
        )
    return config


def build_dir(kind: str) -> Path:
    """The cache folder of this compile configuration (see the module's docstring)."""
    digest = hashlib.sha256(json.dumps(compile_config(kind), sort_keys=True).encode()).hexdigest()[:16]
    tag = f"{kind}-py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}-{digest}"
    return cache_root() / tag.replace("+", "_")


def stage_sources(kind: str, where: Path) -> Path:
    """Copy the sources into the build folder so the compiled paths do not depend on the checkout."""
    src = where / "src"
    src.mkdir(parents=True, exist_ok=True)
    for name in SOURCES[kind]:
        (src / name).write_bytes((CSRC / name).read_bytes())
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
        out = subprocess.run(
            [str(nvcc), "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot run {nvcc}: {exc}") from exc
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return Path(line.split("=", 1)[1].strip()).resolve()
    return nvcc.resolve().parent.parent


def cudart_library() -> Path:
    """The CUDA runtime torch itself uses (pip's nvidia package), else the toolkit's."""
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
    return candidates[0].resolve()


def cudart_link_dir(where: Path) -> Path:
    """A folder holding ``libcudart.so`` for the linker.

    pip-installed CUDA runtimes ship only ``libcudart.so.<major>``; the linker's ``-lcudart`` wants the
    unversioned name, so we make a folder with a symlink to the runtime that torch itself uses.
    """
    link = where / "cudart"
    link.mkdir(parents=True, exist_ok=True)
    (link / "libcudart.so").symlink_to(cudart_library())
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


def stale_builds(where: Path) -> list[Path]:
    """Private build folders whose process is gone (killed, or finished without cleaning up)."""
    out = []
    for d in where.glob("build-*-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or not pid_alive(int(pid)):
            out.append(d)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def import_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_into(kind: str, name: str, private: Path, verbose: bool):
    """Compile the extension in ``private`` (a fresh folder of this process) and import it."""
    from torch.utils import cpp_extension

    config = compile_config(kind)
    src = stage_sources(kind, private)
    kwargs: dict = dict(
        name=name,
        build_directory=str(private),
        verbose=verbose,
        sources=[str(src / n) for n in SOURCES[kind] if not n.endswith(".h")],
        extra_cflags=config["cflags"],
        extra_include_paths=[str(src)],
    )
    if kind == "cpu":
        kwargs.update(extra_ldflags=config["ldflags"])
    else:
        if cpp_extension.CUDA_HOME is None:
            raise BuildError("torch found no CUDA toolkit (set CUDA_HOME)")
        kwargs.update(
            extra_cuda_cflags=config["cuda_cflags"],
            extra_include_paths=[str(src)] + config["cuda_include"],
            extra_ldflags=[f"-L{cudart_link_dir(private)}", "-lcudart"],
        )
    return cpp_extension.load(**kwargs)


@functools.cache
def load(kind: str, verbose: bool = False):
    """Build (if needed) and import the ``cpu`` or ``cuda`` extension; raises BuildError."""
    from torch.utils import cpp_extension

    if kind not in ("cpu", "cuda"):
        raise ValueError(f"no compiled backend named {kind!r}")
    if shutil.which("ninja") is None and not cpp_extension.is_ninja_available():
        raise BuildError("ninja is not installed")
    name = f"stylegan2_ops_{kind}"
    try:
        where = build_dir(kind)
        installed = where / f"{name}.so"
        where.mkdir(parents=True, exist_ok=True)
        with FileLock(str(where / "build.lock"), timeout=1800):
            if installed.is_file():
                return import_module(name, installed)
            for stale in stale_builds(where):
                shutil.rmtree(stale, ignore_errors=True)
            private = where / f"build-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                module = compile_into(kind, name, private, verbose)
                os.replace(private / f"{name}.so", installed)  # the loaded module keeps its mapping
            finally:
                shutil.rmtree(private, ignore_errors=True)
            return module
    except BuildError:
        raise
    except Exception as exc:  # compiler errors, missing toolchain, import errors
        raise BuildError(f"building the {kind} backend in {cache_root()} failed: {exc}") from exc
