"""A real PostgreSQL server for tests: Debian's binaries, a temporary data directory, a free loopback port.

Debian's ``initdb`` refuses to run as root (CI runs as root), so as root the server runs as the ``postgres``
user that the ``postgresql`` package creates. Trust authentication on 127.0.0.1 only; ``make postgres-deps``
(called by .ci/run) installs the package where no ``initdb`` is found.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Postgres:
    bindir: Path
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The server, as `tuneops up --database` takes it."""
        return f"postgresql://{self.user}@{self.host}:{self.port}"

    def tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A client program (createdb, psql, pg_dump ...) against this server."""
        return subprocess.run([str(self.bindir / name), "-h", self.host, "-p", str(self.port), "-U", self.user,
                               *args], capture_output=True, text=True, timeout=120, check=True)


def find_bindir() -> Path | None:
    """The folder of Debian's server binaries (the newest version), or of an initdb on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def postgres_server(port: int, databases: tuple[str, ...] = ()) -> Iterator[Postgres]:
    """initdb + start in a temporary directory, create ``databases``; stop and delete everything after."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found: `make postgres-deps` (apt-get install postgresql)")
    # /tmp itself, not pytest's 0700 root-owned folders: the postgres user must reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="tuneops-pg-"))
    data, log = base / "data", base / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*argv: str) -> None:
        proc = subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}{tail}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "120", "start")
    server = Postgres(bindir, port)
    try:
        for name in databases:
            server.tool("createdb", name)
        yield server
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
