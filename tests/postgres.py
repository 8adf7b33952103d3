"""A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port, for the test session."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from app import embedded

# Durability off: the cluster lives for one test session and is deleted afterwards
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
MAX_CONNECTIONS = 300  # many processes in the multi-process tests, each with its pool


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary (Debian keeps them off PATH, in /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is missing: run `make install` (apt postgresql)")
    return found[-1]


class PostgresCluster:
    """initdb into a temp folder, pg_ctl start on 127.0.0.1:<free port>, trust auth."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="orderflow-pg-"))
        self.port = embedded.free_port()
        # initdb and postgres refuse to run as root; run them as the Debian package's user
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            entry = pwd.getpwnam("postgres")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresCluster:
        """Create the cluster and start the server; returns once it accepts connections."""
        data = str(self.folder / "data")
        self._run(pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.folder}"]
        options += [f"-c max_connections={MAX_CONNECTIONS}"]
        options += [f"-c {setting}" for setting in FAST_SETTINGS]
        log = str(self.folder / "postgres.log")
        self._run(pg_bin("pg_ctl"), "-D", data, "-l", log, "-o", " ".join(options), "-w", "start")
        return self

    def stop(self) -> None:
        """Stop the server at once and delete the cluster."""
        data = str(self.folder / "data")
        try:
            self._run(pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for one database of this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "orderflow") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url(name)
