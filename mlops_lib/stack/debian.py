"""Debian packages the stack needs (PostgreSQL, Chromium for the UI test), installed with apt."""

from __future__ import annotations

import os
import shutil
import subprocess

from mlops_lib.settings import process_env
from mlops_lib.stack.procs import StackError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def apt_install(package: str, *, log=print, hint: str = "install it") -> None:
    """``apt-get install -y <package>`` (through ``sudo -n`` when not root); raises StackError.

    ``hint``: what to do instead when there is no apt-get.
    """
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(f"{package} is not installed and apt-get is not available; {hint}")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise StackError(
                f"{package} is not installed; run `sudo apt-get install -y {package}` "
                "(installing it needs root)"
            )
        prefix = [sudo, "-n"]
    log(f"installing {package} from Debian packages (apt-get install {package})...")
    env = {**process_env(), "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", package]):
        proc = subprocess.run(prefix + cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 and cmd[1] == "install":
            raise StackError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")


def find_browser() -> str | None:
    """A headless-capable Chromium on PATH, if any."""
    return next((p for b in BROWSERS if (p := shutil.which(b))), None)


def install_browser(*, log=print) -> str:
    """Find Chromium, installing Debian's ``chromium`` package when absent."""
    found = find_browser()
    if found:
        return found
    apt_install("chromium", log=log)
    found = find_browser()
    if not found:
        raise StackError("chromium was installed but is not on PATH")
    return found
