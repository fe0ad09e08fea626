"""The event database: SQLite (one file, WAL) by default, PostgreSQL given a URL; one schema, versioned.

SQLAlchemy Core keeps one set of queries for both. The schema version lives in the ``meta`` table; opening a
database applies the missing migrations in order (each in its own transaction) and refuses a database written
by a newer statevad, which would otherwise be half-understood.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statevad.errors import UserError

meta = sa.MetaData()

meta_table = sa.Table("meta", meta, sa.Column("key", sa.String(64), primary_key=True),
                      sa.Column("value", sa.Text, nullable=False))

events = sa.Table(
    "events", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("start_frame", sa.BigInteger, nullable=False),
    sa.Column("end_frame", sa.BigInteger, nullable=False),
    sa.Column("peak_frame", sa.BigInteger, nullable=False),
    sa.Column("start_time", sa.Float, nullable=False),  # unix seconds (wall clock of the frame's arrival)
    sa.Column("end_time", sa.Float, nullable=False),
    sa.Column("peak_score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("thumb", sa.Text),  # paths relative to the media folder
    sa.Column("clip", sa.Text),
    sa.Column("objects", sa.Text, nullable=False),  # JSON: [{"box": [x1,y1,x2,y2], "score": z, "crop": path}]
    sa.Column("acked_by", sa.String(128)),
    sa.Column("acked_at", sa.Float),
    sa.Column("created", sa.Float, nullable=False),
)

scores = sa.Table(
    "scores", meta,
    sa.Column("camera", sa.String(64), primary_key=True),
    sa.Column("second", sa.BigInteger, primary_key=True),  # unix second
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("max", sa.Float, nullable=False),
    sa.Column("mean", sa.Float, nullable=False),
)


def _v1(conn: Connection) -> None:
    for table in (events, scores):
        table.create(conn)


def _v2(conn: Connection) -> None:
    # The dashboard lists one camera's newest events: without these, every refresh scans the table.
    # Plain DDL (both dialects): an sa.Index would attach itself to the shared Table object.
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS events_camera_start ON events (camera, start_time)"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS events_start ON events (start_time)"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class EventRow:
    camera: str
    start_frame: int
    end_frame: int
    peak_frame: int
    start_time: float
    end_time: float
    peak_score: float
    threshold: float
    thumb: str | None
    clip: str | None
    objects: list[dict[str, Any]]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (the API) never block the camera writers
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Database:
    """The service's store. Thread-safe: every method takes its own connection from the pool."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise UserError(f"--database {_redact(url)}: not a usable database URL ({exc}); expected "
                            "sqlite:///path.db or postgresql+psycopg://user@host/db") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self.version = self.migrate()
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise UserError(f"database {_redact(url)}: cannot open it ({str(exc.orig).strip()}); check the "
                            "URL, the server and its credentials") from None

    @property
    def kind(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found before."""
        with self.engine.begin() as conn:
            meta_table.create(conn, checkfirst=True)
            found = self._version(conn)
        if found > SCHEMA_VERSION:
            raise UserError(f"database {_redact(self.url)} has schema version {found}, newer than this "
                            f"statevad's {SCHEMA_VERSION}: upgrade statevad, or give another --database")
        for v in range(found, SCHEMA_VERSION):
            with self.engine.begin() as conn:  # one transaction per step: a failed step leaves v intact
                MIGRATIONS[v](conn)
                self._set_version(conn, v + 1)
        return found

    @staticmethod
    def _version(conn: Connection) -> int:
        row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
        return int(row[0]) if row else 0

    @staticmethod
    def _set_version(conn: Connection, v: int) -> None:
        conn.execute(sa.delete(meta_table).where(meta_table.c.key == "schema_version"))
        conn.execute(sa.insert(meta_table).values(key="schema_version", value=str(v)))

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return self._version(conn)

    # -- events ---------------------------------------------------------------------------------
    def add_event(self, ev: EventRow) -> int:
        values = {**ev.__dict__, "objects": json.dumps(ev.objects), "created": time.time()}
        with self.engine.begin() as conn:
            return int(conn.execute(sa.insert(events).values(**values)).inserted_primary_key[0])

    def list_events(self, *, camera: str | None = None, acked: bool | None = None,
                    min_score: float | None = None, since: float | None = None, until: float | None = None,
                    limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        q = sa.select(events)
        if camera is not None:
            q = q.where(events.c.camera == camera)
        if acked is not None:
            q = q.where(events.c.acked_at.is_not(None) if acked else events.c.acked_at.is_(None))
        if min_score is not None:
            q = q.where(events.c.peak_score >= min_score)
        if since is not None:
            q = q.where(events.c.end_time >= since)
        if until is not None:
            q = q.where(events.c.start_time <= until)
        q = q.order_by(events.c.start_time.desc(), events.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_event_dict(r._mapping) for r in conn.execute(q)]

    def get_event(self, event_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
        return None if row is None else _event_dict(row._mapping)

    def ack(self, event_id: int, by: str) -> dict[str, Any] | None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(events).where(events.c.id == event_id)
                         .values(acked_by=by, acked_at=time.time()))
        return self.get_event(event_id)

    def count_events(self, camera: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(events)
        if camera is not None:
            q = q.where(events.c.camera == camera)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    # -- per-second summaries ---------------------------------------------------------------------
    def add_scores(self, camera: str, rows: list[tuple[int, int, float, float]]) -> None:
        """``(second, n, max, mean)`` rows; a second written twice (a restart within it) is merged."""
        if not rows:
            return
        with self.engine.begin() as conn:
            for second, n, mx, mean in rows:
                key = (scores.c.camera == camera) & (scores.c.second == second)
                old = conn.execute(sa.select(scores.c.n, scores.c.max, scores.c.mean).where(key)).first()
                if old is None:
                    conn.execute(sa.insert(scores).values(camera=camera, second=second, n=n, max=mx,
                                                          mean=mean))
                    continue
                total = old.n + n
                conn.execute(sa.update(scores).where(key).values(
                    n=total, max=max(old.max, mx), mean=(old.mean * old.n + mean * n) / total))

    def list_scores(self, camera: str, since: float | None = None, until: float | None = None,
                    limit: int = 3600) -> list[dict[str, Any]]:
        q = sa.select(scores.c.second, scores.c.n, scores.c.max, scores.c.mean)
        q = q.where(scores.c.camera == camera)
        if since is not None:
            q = q.where(scores.c.second >= int(since))
        if until is not None:
            q = q.where(scores.c.second <= int(until))
        q = q.order_by(scores.c.second.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        return rows[::-1]

    def close(self) -> None:
        self.engine.dispose()


def _event_dict(m: Any) -> dict[str, Any]:
    d = dict(m)
    d["objects"] = json.loads(d["objects"] or "[]")
    d["acked"] = d["acked_at"] is not None
    return d


def _redact(url: str) -> str:
    """The URL without its password (it would end up in logs and error lines)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparsable URL)"
