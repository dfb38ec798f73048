"""Redis for the stack's Celery mode: Debian's server, its configuration, its health.

The broker of Airflow's CeleryExecutor. It listens on the stack's host (127.0.0.1) only,
asks for the generated password (kept in its configuration file, mode 0600, never on a
command line), and appends every write to its journal (``appendonly``): queued work
survives a restart of Redis.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import quote

from mlops_lib.settings import Settings
from mlops_lib.stack.credentials import write_private
from mlops_lib.stack.debian import apt_install
from mlops_lib.stack.procs import StackError

CONFIG = """\
bind {host}
port {port}
protected-mode yes
requirepass {password}
dir {folder}
appendonly yes
appendfsync everysec
save ""
daemonize no
logfile ""
"""


def folder(settings: Settings) -> Path:
    return settings.stack_dir / "redis"


def config_file(settings: Settings) -> Path:
    return folder(settings) / "redis.conf"


def server_binary(*, log=print) -> str:
    """``redis-server`` on PATH, installing Debian's package when absent."""
    found = shutil.which("redis-server")
    if found:
        return found
    apt_install("redis-server", log=log, hint="install Redis 7 and put redis-server on PATH")
    found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server was installed but is not on PATH")
    return found


def write_config(settings: Settings) -> Path:
    """The server's configuration (private: it holds the password)."""
    data = folder(settings)
    data.mkdir(parents=True, exist_ok=True)
    text = CONFIG.format(
        host=settings.host,
        port=settings.redis_port,
        password=_quoted(settings.secret("redis_password")),
        folder=_quoted(str(data)),
    )
    write_private(config_file(settings), text)
    return config_file(settings)


def _quoted(value: str) -> str:
    """A configuration value as one argument (Redis splits lines on spaces)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def broker_url(settings: Settings) -> str:
    """Celery's broker URL (holds the password: for environments, never for logs)."""
    password = quote(settings.secret("redis_password"), safe="")
    return f"redis://:{password}@{settings.host}:{settings.redis_port}/0"


def ping(settings: Settings, password: str | None = None, timeout: float = 2.0) -> str:
    """Redis's answer to AUTH (with ``password``, the stack's by default) then PING, e.g.
    ``+PONG``; an error reply starts with ``-``; "" when nothing answers."""
    return request(settings, "PING", password=password, timeout=timeout)


def request(
    settings: Settings, *command: str, password: str | None = None, timeout: float = 2.0
) -> str:
    """The first line of Redis's answer to one command after AUTH (e.g. ``:3`` to
    ``LLEN default``); the AUTH refusal when it is refused; "" when nothing answers."""
    secret = settings.secret("redis_password") if password is None else password
    try:
        with socket.create_connection((settings.host, settings.redis_port), timeout) as conn:
            if secret:
                conn.sendall(_command("AUTH", secret))
                reply = _line(conn)
                if not reply.startswith("+"):
                    return reply
            conn.sendall(_command(*command))
            return _line(conn)
    except OSError:
        return ""


def healthy(settings: Settings) -> bool:
    return ping(settings) == "+PONG"


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = conn.recv(512)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()
