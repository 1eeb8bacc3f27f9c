"""Sets up the `tritonserver` binary bundled in the nvidia-pytriton wheel so it runs from
a fresh install with nothing done by hand: the server tree is copied beside the data,
the Python-backend stub for the running interpreter goes into `backends/python/`, and
the interpreter's libpython and the wheel's libraries go on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from services.embedding.config import EmbeddingConfig
from shared.config import CONTROL_KEY_HEADER

# Triton's API groups (--http-restricted-api) other than health.
HTTP_APIS_BUT_HEALTH = (
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)


class TritonUnavailable(RuntimeError):
    """The bundled server cannot run here (no wheel, or no stub for this Python)."""


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as error:
        raise TritonUnavailable("nvidia-pytriton is not installed") from error
    return Path(pytriton.__file__).resolve().parent


def bundled_server() -> Path:
    """The bundled server tree (bin/, backends/, caches/, python_backend_stubs/)."""
    tree = _pytriton_root() / "tritonserver"
    if not (tree / "bin" / "tritonserver").exists():
        raise TritonUnavailable(f"no tritonserver binary under {tree}")
    return tree


def python_stub(tree: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = tree / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonUnavailable(f"the wheel has no Python-backend stub for Python {version}")
    return stub


def libpython_dir() -> Path:
    """Where the running interpreter's shared libpython lies; the stub links against it."""
    library = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    for directory in (sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LIBPL")):
        if directory and library and (Path(directory) / str(library)).exists():
            return Path(directory)
    raise TritonUnavailable(
        f"no shared libpython ({library}) for {sys.executable}: the Python backend needs a"
        " Python built with --enable-shared"
    )


def _same_file(a: Path, b: Path) -> bool:
    if not b.exists():
        return False
    left, right = a.stat(), b.stat()
    return (left.st_size, int(left.st_mtime)) == (right.st_size, int(right.st_mtime))


def prepare(runtime_dir: Path) -> Path:
    """Copies the server tree and the stub under runtime_dir (once per wheel version) and
    returns the prepared tree."""
    source = bundled_server()
    stub = python_stub(source)
    target = runtime_dir / "tritonserver"
    binary = target / "bin" / "tritonserver"
    stub_target = target / "backends" / "python" / "triton_python_backend_stub"
    if _same_file(source / "bin" / "tritonserver", binary) and _same_file(stub, stub_target):
        return target
    staging = runtime_dir / "tritonserver.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(
        source, staging, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__")
    )
    shutil.copy2(stub, staging / "backends" / "python" / "triton_python_backend_stub")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def library_path(environ: dict[str, str]) -> str:
    wheel_libs = _pytriton_root().parent / "nvidia_pytriton.libs"
    parts = [str(wheel_libs), str(libpython_dir())]
    if environ.get("LD_LIBRARY_PATH"):
        parts.append(environ["LD_LIBRARY_PATH"])
    return os.pathsep.join(parts)


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]


def server_command(config: EmbeddingConfig, environ: dict[str, str] | None = None) -> Command:
    tree = prepare(config.runtime_dir)
    config.repository.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if environ is None else environ)
    env["LD_LIBRARY_PATH"] = library_path(env)
    # The stub's interpreter does not see this virtual environment unless told.
    env["RECSYS_TRITON_SITE_PACKAGES"] = os.pathsep.join(
        dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    )
    env["RECSYS_TRITON_TORCH_THREADS"] = str(config.torch_threads)
    argv = [
        str(tree / "bin" / "tritonserver"),
        f"--model-repository={config.repository}",
        "--model-control-mode=explicit",
        # Whatever the repository's configs name as live versions comes back after a restart.
        "--load-model=*",
        f"--backend-directory={tree / 'backends'}",
        f"--cache-directory={tree / 'caches'}",
        f"--grpc-address={config.host}",
        f"--grpc-port={config.port}",
        f"--exit-timeout-secs={max(1, int(config.grace_s))}",
        # Readiness that matters is per model version (the client asks for it); a version
        # that fails to load must not stop the server or the versions that did load.
        "--strict-readiness=false",
        "--exit-on-error=false",
        # Our configs are complete. Left on, auto-completion has the Python backend start
        # extra stubs (processes importing torch) at every load: loads took 3x as long.
        "--disable-auto-complete-config",
        f"--log-verbose={config.log_verbose}",
        # Several servers on one machine (tests, benchmarks) must not share memory regions.
        f"--backend-config=python,shm-region-prefix-name=recsys_{config.port}_{os.getpid()}_",
    ]
    restricted = f"model-repository:{CONTROL_KEY_HEADER}={config.control_key}"
    if config.control_key:
        # Loads and unloads only with the key (the trainer's); inference and health stay open.
        argv.append(f"--grpc-restricted-protocol={restricted}")
    if config.tls is not None:
        # Triton reads these at start: a rotation takes a restart (a rolling one on K8s).
        argv += [
            "--grpc-use-ssl=true",
            "--grpc-use-ssl-mutual=true",
            f"--grpc-server-cert={config.tls.cert}",
            f"--grpc-server-key={config.tls.key}",
            f"--grpc-root-cert={config.tls.ca}",
        ]
    if config.http_port:
        argv += [
            "--allow-http=true",
            f"--http-address={config.host}",
            f"--http-port={config.http_port}",
        ]
        if config.tls is not None:
            # Triton's HTTP has no TLS: with TLS on it is for probes only, everything but
            # health behind a key that nobody is given.
            closed = ",".join(HTTP_APIS_BUT_HEALTH)
            argv.append(
                f"--http-restricted-api={closed}:{CONTROL_KEY_HEADER}={secrets.token_hex(32)}"
            )
        elif config.control_key:
            argv.append(f"--http-restricted-api={restricted}")
    else:
        argv.append("--allow-http=false")
    if config.metrics_port:
        argv += [
            "--allow-metrics=true",
            f"--metrics-address={config.host}",
            f"--metrics-port={config.metrics_port}",
        ]
    else:
        argv.append("--allow-metrics=false")
    return Command(argv, env)
