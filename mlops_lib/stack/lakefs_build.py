"""The lakeFS server binary: built from its Go module, cached per version."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from mlops_lib.settings import Settings, process_env
from mlops_lib.stack.procs import StackError

WRAPPER_DIR = Path(__file__).resolve().parents[2] / "stack" / "lakefs"

GO_MISSING = (
    "Go is not installed (no `go` on PATH), and it is needed once to build the lakeFS "
    "server from its Go module (github.com/treeverse/lakefs). Install Go >= 1.26 "
    "(https://go.dev/doc/install) and run `make setup` again, or run the platform with "
    "Docker instead: `docker compose up -d` (see README, 'docker-compose')."
)


def wrapper_version(wrapper_dir: Path = WRAPPER_DIR) -> str:
    """lakeFS version required by the wrapper module's go.mod."""
    for line in (wrapper_dir / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "require" and parts[1] == "github.com/treeverse/lakefs":
            return parts[2]
    raise StackError(f"{wrapper_dir / 'go.mod'} does not require github.com/treeverse/lakefs")


# The binaries built from the wrapper module: the server, and lakeFS's open-source ACL server
# (``contrib/auth/acl``), which gives the platform users with less than admin rights.
BINARIES = {"lakefs": ".", "lakefs-acl": "./acl"}


def cached_binary(settings: Settings, name: str = "lakefs") -> Path:
    """Machine-wide cache path of a lakeFS binary for the configured version."""
    return settings.cache_dir / "lakefs" / settings.lakefs_version / name


def build_lakefs(settings: Settings, name: str = "lakefs", *, log=print) -> Path:
    """Build a lakeFS binary with the Go toolchain into the machine-wide cache."""
    go = shutil.which("go")
    if go is None:
        raise StackError(GO_MISSING)
    version = wrapper_version()
    if version != settings.lakefs_version:
        raise StackError(
            f"MLOPS_LAKEFS_VERSION={settings.lakefs_version} but {WRAPPER_DIR}/go.mod pins "
            f"lakeFS {version}; change both together"
        )
    target = cached_binary(settings, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{name}.build-{os.getpid()}")
    env = process_env()
    # Several of lakeFS's dependencies are not in the public checksum database;
    # go.sum in the wrapper module pins every hash instead.
    env.setdefault("GOSUMDB", "off")
    env.setdefault("CGO_ENABLED", "0")
    log(f"building {name} {version} from its Go module (first time only; several minutes)...")
    started = time.monotonic()
    proc = subprocess.run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), BINARIES[name]],
        cwd=WRAPPER_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StackError(
            f"building {name} {version} failed (go build exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    tmp.replace(target)
    log(f"built {name} {version} in {time.monotonic() - started:.0f}s -> {target}")
    return target


def ensure_lakefs_binary(settings: Settings, name: str = "lakefs", *, log=print) -> Path:
    """Make ``.stack/bin/<name>`` available: from the cache, else by building it."""
    dest = settings.bin_dir / name
    cached = cached_binary(settings, name)
    if not cached.is_file():
        build_lakefs(settings, name, log=log)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        if dest.resolve() == cached.resolve():
            return dest
        dest.unlink()
    dest.symlink_to(cached)
    return dest
