"""The event database: SQLite (WAL, versioned schema, migrations, restart) and a real PostgreSQL server that
this test run starts (Debian's postgresql binaries, as a non-root user), skipped with the reason otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the serve extra is not installed (pip install -e '.[serve]')")

import sqlalchemy as sa  # noqa: E402

from statevad.errors import UserError  # noqa: E402
from statevad.serve import db as dbm  # noqa: E402
from statevad.serve.db import Database, EventRow  # noqa: E402

PG_BIN = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]


def _row(camera: str = "a", start: int = 3, score: float = 4.5) -> EventRow:
    return EventRow(
        camera,
        start,
        start + 6,
        start + 2,
        1000.0 + start,
        1001.0 + start,
        score,
        1.0,
        "a/k/thumb.jpg",
        "a/k/clip.mp4",
        [{"box": [1.0, 2.0, 3.0, 4.0], "score": score}],
    )


def _exercise(url: str) -> None:
    """Write, filter, acknowledge, reopen (a restart): everything is still there."""
    db = Database(url)
    assert db.schema_version() == dbm.SCHEMA_VERSION
    ids = [
        db.add_event(_row("a", 3, 4.5)),
        db.add_event(_row("b", 10, 9.0)),
        db.add_event(_row("a", 20, 2.0)),
    ]
    db.add_scores("a", [(1000, 10, 3.0, 1.0)])
    db.add_scores("a", [(1000, 10, 5.0, 3.0), (1001, 5, 1.0, 0.5)])  # the same second again: merged
    db.ack(ids[0], "op")
    db.close()
    db = Database(url)
    try:
        assert [e["id"] for e in db.list_events()] == ids[::-1]
        assert [e["id"] for e in db.list_events(camera="a")] == [ids[2], ids[0]]
        assert [e["id"] for e in db.list_events(min_score=4.0)] == [ids[1], ids[0]]
        assert [e["id"] for e in db.list_events(acked=True)] == [ids[0]]
        assert [e["id"] for e in db.list_events(acked=False, limit=1)] == [ids[2]]
        ev = db.get_event(ids[0])
        assert ev["acked_by"] == "op" and ev["objects"][0]["box"] == [1.0, 2.0, 3.0, 4.0]
        assert db.get_event(10**9) is None
        s = db.list_scores("a")
        assert [(r["second"], r["n"], r["max"], r["mean"]) for r in s] == [
            (1000, 20, 5.0, 2.0),
            (1001, 5, 1.0, 0.5),
        ]
        assert db.count_events() == 3
    finally:
        db.close()


def test_sqlite_wal_migrations_and_restart(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _exercise(url)
    with sa.create_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_sqlite_old_schema_is_migrated_newer_is_refused(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setattr(dbm, "SCHEMA_VERSION", 1)  # a database written by the first schema
    Database(url).close()
    monkeypatch.undo()
    db = Database(url)
    assert db.version == 1 and db.schema_version() == dbm.SCHEMA_VERSION
    with db.engine.connect() as conn:
        names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "events_camera_start" in names
    with db.engine.begin() as conn:
        conn.execute(sa.update(dbm.meta_table).values(value=str(dbm.SCHEMA_VERSION + 1)))
    db.close()
    with pytest.raises(UserError, match="newer than this statevad"):
        Database(url)
    with pytest.raises(UserError, match="not a usable database URL"):
        Database("nosuchdialect://x")


def _pg_bin() -> Path | None:
    for d in PG_BIN:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on a Unix socket in a temporary folder, run as a non-root user."""
    pytest.importorskip("psycopg", reason="psycopg (the serve extra) is not installed")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries are absent (apt-get install postgresql): PostgreSQL test skipped"
        )
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the package's own user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="statevad-pg-"))
    os.chmod(root, 0o777)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    os.chmod(sock, 0o777)
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "statevad",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-t",
                "60",
                "-l",
                str(root / "log"),
                "-o",
                f"-k {sock} -c listen_addresses='' -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL server ({exc})")
    try:
        yield f"postgresql+psycopg://statevad@/postgres?host={sock}"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_real_server(postgres_url):
    _exercise(postgres_url)
    db = Database(postgres_url)  # a third open: nothing to migrate, the version is kept
    assert db.kind == "postgresql" and db.version == dbm.SCHEMA_VERSION
    db.close()


def test_postgresql_unreachable_is_one_line(tmp_path):
    pytest.importorskip("psycopg", reason="psycopg (the serve extra) is not installed")
    with pytest.raises(UserError, match="cannot open it") as err:
        Database(f"postgresql+psycopg://u:hunter2@/db?host={tmp_path}")
    assert "hunter2" not in str(err.value)  # the password never reaches a log or an error line
