"""Where finished design points live: an SQL database (SQLite in the output folder, or any SQLAlchemy URL).

Tables keyed by the sweep's spec hash so one database (e.g. a shared PostgreSQL) can hold many sweeps:

``sweep_meta``      one row per sweep: its hash and normalised spec (JSON).
``sweep_points``    one row per design point: ``key`` (canonical JSON of its parameters), ``params``, ``status``
                    (``running`` while claimed, ``done`` once its result is in), ``owner`` (host:pid of the claimant),
                    ``result`` (JSON), ``seq`` (completion order) and timestamps (Unix seconds).
``sweep_accuracy``  one row per measured (model, compile choices) of a sweep with ``inputs:`` (accuracy.py):
                    ``key`` (``accuracy.accuracy_key``), ``result`` (JSON: flat metrics, accuracy section, error),
                    ``finished``. Created in older databases on first open.

Every batch of finished points is one transaction, committed as soon as the batch is back, so a crash loses at most
the points that were being computed. A point is claimed before it is computed; another runner sharing the database
skips points claimed by a live owner, so no point is computed twice. SQLite runs in WAL mode with
``synchronous=NORMAL``: a commit survives the process being killed (not a power cut), at a fraction of the cost of
a full fsync per commit.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from codesign.sweep.files import strict_json
from hw.errors import InputError

__all__ = ["Store", "owner_id"]


def owner_id() -> str:
    """``host:pid`` of this process (who claimed a point)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine: assume alive; its own restart reclaims its points
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class Store:
    """The points of one sweep (``spec_hash``) in the database at ``url``."""

    def __init__(self, url: str, spec_hash: str, spec_json: str, *, exclusive: bool = False,
                 label: str | None = None) -> None:
        """Open (creating tables if needed) and register the sweep. ``exclusive``: this process is the only runner
        (a locked output folder), so every ``running`` claim left in the database is an orphan of a crash.
        ``label`` names the database in messages (default ``--storage URL``)."""
        import sqlalchemy as sa
        from sqlalchemy import event, exc

        self.sa = sa
        self.label = label or f"--storage {url}"
        self.spec_hash = spec_hash
        self.owner = owner_id()
        try:
            self.engine = sa.create_engine(url, future=True)
        except Exception as err:  # bad URL, missing driver
            raise InputError(f"{self.label}: {str(err).splitlines()[0]}") from None
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        meta = sa.MetaData()
        self.meta_table = sa.Table(
            "sweep_meta", meta,
            sa.Column("spec_hash", sa.String(64), primary_key=True),
            sa.Column("spec", sa.Text, nullable=False),
            sa.Column("created", sa.Float, nullable=False),
        )
        self.points = sa.Table(
            "sweep_points", meta,
            sa.Column("spec_hash", sa.String(64), primary_key=True),
            sa.Column("key", sa.String(2000), primary_key=True),
            sa.Column("params", sa.Text, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("owner", sa.String(300), nullable=False),
            sa.Column("claimed", sa.Float, nullable=False),
            sa.Column("seq", sa.Integer),
            sa.Column("finished", sa.Float),
            sa.Column("result", sa.Text),
        )
        self.accuracy_table = sa.Table(
            "sweep_accuracy", meta,
            sa.Column("spec_hash", sa.String(64), primary_key=True),
            sa.Column("key", sa.String(2000), primary_key=True),
            sa.Column("result", sa.Text, nullable=False),
            sa.Column("finished", sa.Float, nullable=False),
        )
        try:
            meta.create_all(self.engine)
            with self.engine.begin() as conn:
                row = conn.execute(sa.select(self.meta_table.c.spec_hash).where(
                    self.meta_table.c.spec_hash == spec_hash)).first()
                if row is None:
                    conn.execute(self.meta_table.insert().values(spec_hash=spec_hash, spec=spec_json,
                                                                 created=time.time()))
            self.reclaim(all_orphans=exclusive)
        except exc.SQLAlchemyError as err:
            self.engine.dispose()
            raise InputError(f"{self.label}: {str(err).splitlines()[0]}") from None

    def reclaim(self, all_orphans: bool = False) -> int:
        """Release claims of dead owners on this host (all claims when ``all_orphans``); returns how many."""
        sa, p = self.sa, self.points
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(p.c.key, p.c.owner).where(
                (p.c.spec_hash == self.spec_hash) & (p.c.status == "running"))).all()
            dead = [key for key, owner in rows if all_orphans or not _alive_here(owner)]  # pyright: ignore[reportAssignmentType] - a Row of an untyped Table is Row[Any], not a typed tuple
            for chunk in _chunks(dead, 500):
                conn.execute(p.delete().where((p.c.spec_hash == self.spec_hash) & (p.c.key.in_(chunk))
                                              & (p.c.status == "running")))
        return len(dead)

    def done(self) -> dict[str, dict[str, Any]]:
        """Finished points: key -> {"params", "result", "seq"}, in completion order."""
        sa, p = self.sa, self.points
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(p.c.key, p.c.params, p.c.result, p.c.seq).where(
                (p.c.spec_hash == self.spec_hash) & (p.c.status == "done")).order_by(p.c.seq, p.c.key)).all()
        return {key: {"params": json.loads(params), "result": json.loads(result), "seq": seq}
                for key, params, result, seq in rows}  # pyright: ignore[reportAssignmentType] - a Row of an untyped Table is Row[Any], not a typed tuple

    def claim(self, items: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Claim points (key, params) for this owner. Returns (keys claimed, {key: finished point} for keys another
        runner finished meanwhile); keys claimed by a live runner elsewhere are in neither."""
        sa, p = self.sa, self.points
        now = time.time()
        keys = [k for k, _ in items]
        claimed: list[str] = []
        finished: dict[str, dict[str, Any]] = {}
        with self.engine.begin() as conn:
            existing = {}
            for chunk in _chunks(keys, 500):
                for key, status, owner, params, result, seq in conn.execute(  # pyright: ignore[reportAssignmentType] - a Row of an untyped Table is Row[Any], not a typed tuple
                        sa.select(p.c.key, p.c.status, p.c.owner, p.c.params, p.c.result, p.c.seq).where(
                            (p.c.spec_hash == self.spec_hash) & p.c.key.in_(chunk))):
                    existing[key] = (status, owner, params, result, seq)
            fresh = []
            for key, params in items:
                row = existing.get(key)
                if row is None:
                    fresh.append({"spec_hash": self.spec_hash, "key": key, "params": strict_json(params),
                                  "status": "running", "owner": self.owner, "claimed": now})
                    claimed.append(key)
                elif row[0] == "done":
                    finished[key] = {"params": json.loads(row[2]), "result": json.loads(row[3]), "seq": row[4]}
                elif row[1] == self.owner or not _alive_here(row[1]):
                    conn.execute(p.update().where((p.c.spec_hash == self.spec_hash) & (p.c.key == key)).values(
                        owner=self.owner, claimed=now))
                    claimed.append(key)
            if fresh:
                try:
                    with conn.begin_nested():
                        conn.execute(p.insert(), fresh)
                except sa.exc.IntegrityError:  # another runner claimed one in between: go one by one
                    claimed = [k for k in claimed if k not in {f["key"] for f in fresh}]
                    for row in fresh:
                        try:
                            with conn.begin_nested():
                                conn.execute(p.insert(), [row])
                            claimed.append(row["key"])
                        except sa.exc.IntegrityError:
                            pass
        return claimed, finished

    def finish(self, results: Iterable[tuple[str, int, dict[str, Any]]]) -> None:
        """Store finished points (key, seq, result) in one transaction."""
        sa, p = self.sa, self.points
        now = time.time()
        rows = [{"k": key, "s": seq, "r": strict_json(result), "f": now} for key, seq, result in results]
        if not rows:
            return
        # Only a claimed point becomes done: a finished point is never overwritten.
        stmt = p.update().where((p.c.spec_hash == self.spec_hash) & (p.c.key == sa.bindparam("k"))
                                & (p.c.status == "running")).values(
            status="done", seq=sa.bindparam("s"), result=sa.bindparam("r"), finished=sa.bindparam("f"))
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    def release(self, keys: Iterable[str]) -> None:
        """Drop this owner's claims on ``keys`` (points that will not be computed after all, e.g. on Ctrl-C)."""
        p = self.points
        keys = list(keys)
        with self.engine.begin() as conn:
            for chunk in _chunks(keys, 500):
                conn.execute(p.delete().where((p.c.spec_hash == self.spec_hash) & p.c.key.in_(chunk)
                                              & (p.c.status == "running") & (p.c.owner == self.owner)))

    def accuracy(self, keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Stored accuracy measurements: key -> result (all of this sweep's, or those of ``keys``)."""
        sa, a = self.sa, self.accuracy_table
        where = a.c.spec_hash == self.spec_hash
        with self.engine.connect() as conn:
            if keys is None:
                rows = conn.execute(sa.select(a.c.key, a.c.result).where(where)).all()
            else:
                rows = [r for chunk in _chunks(list(keys), 500)
                        for r in conn.execute(sa.select(a.c.key, a.c.result).where(where & a.c.key.in_(chunk)))]
        return {key: json.loads(result) for key, result in rows}  # pyright: ignore[reportAssignmentType] - a Row of an untyped Table is Row[Any], not a typed tuple

    def put_accuracy(self, key: str, result: dict[str, Any]) -> None:
        """Store one accuracy measurement; a measurement stored first (by another runner) is kept."""
        sa, a = self.sa, self.accuracy_table
        try:
            with self.engine.begin() as conn:
                conn.execute(a.insert().values(spec_hash=self.spec_hash, key=key, result=strict_json(result),
                                               finished=time.time()))
        except sa.exc.IntegrityError:
            pass

    def max_seq(self) -> int:
        """The largest completion number stored (0 when none)."""
        sa, p = self.sa, self.points
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(p.c.seq)).where(p.c.spec_hash == self.spec_hash)).scalar()
        return int(value or 0)

    def raise_input_error(self, err: BaseException) -> None:
        """Raise a one-line ``InputError`` naming the database when ``err`` is the database failing underneath a
        run (a full disk, a read-only file, a lost server); return otherwise (``err`` is then a bug to show)."""
        from sqlalchemy import exc

        if isinstance(err, exc.OperationalError | exc.InterfaceError):
            detail = str(getattr(err, "orig", None) or err).splitlines()[0]
            raise InputError(f"{self.label}: cannot store points: {detail}") from None

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
