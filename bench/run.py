#!/usr/bin/env python3
"""sqlmigrate benchmarks (issue 7): speed and memory as ratios to a raw-sqlite3 floor.

    python bench/run.py                  # default sizes, sqlmigrate + floors (a few minutes)
    python bench/run.py --peers          # also yoyo-migrations, alembic, sqlite-utils
    python bench/run.py --heavy --peers  # the full table (10M rows, 1000 migrations, 2000 tables)
    python bench/run.py --only W1,W5     # a subset

Benchmarks are not tests: nothing here asserts.  The run prints one Markdown table
with the ratio of every measurement to its floor and marks a missed target "MISSED",
and writes bench/results/results.json and bench/results/results.md.

The sqlmigrate and floor parts use the standard library only.  The peers are
installed by this script into a throwaway venv (bench/.venv) with pip and run with
that venv's interpreter; they are never a dependency of sqlmigrate.

Whole-process timings use hyperfine when it is on PATH, else repeated
time.perf_counter() runs.  In-process timings and peak RSS are taken in a fresh
worker subprocess (this file run as `run.py _worker KIND JSON`), one per W3 run,
so every RSS figure belongs to one run.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
CACHE = RESULTS / "cache"          # generated W3/W4 template databases, reused
VENV = BENCH / ".venv"            # bare/ for sqlmigrate and the floors, peers/ for the peers
PEER_PACKAGES = ["yoyo-migrations", "alembic", "sqlalchemy", "sqlite-utils"]
PY = sys.executable                # replaced in main() by the bare venv's python


# --------------------------------------------------------------------------- helpers

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def summary(samples):
    """Median, min and max of a list of seconds (or any numbers)."""
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "n": len(samples), "samples": samples}


def time_process(cmd, runs, warmup=2, prepare=None, cwd=None, env=None):
    """Wall time of a whole process, with hyperfine if installed.

    `cmd` is an argument list; `prepare` an argument list run before each timed run.
    Returns summary() in seconds."""
    full_env = dict(os.environ, **(env or {}))
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            hf = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup),
                  "--runs", str(runs), "--export-json", out.name]
            if prepare:
                hf += ["--prepare", shlex.join(prepare)]
            hf += ["--", shlex.join(cmd)]
            p = subprocess.run(hf, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            if p.returncode:
                raise RuntimeError("hyperfine failed on %s:\n%s" % (shlex.join(cmd), p.stderr))
            return summary(json.load(open(out.name))["results"][0]["times"])
    samples = []
    for i in range(warmup + runs):
        if prepare:
            subprocess.run(prepare, check=True, cwd=cwd, env=full_env)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=cwd, env=full_env,
                       stdout=subprocess.DEVNULL)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return summary(samples)


def time_group(entries, rounds=4, warmup=1):
    """Whole-process timings of several commands, interleaved: `rounds` rounds, each
    running every command in turn, so that drift in the machine's load (a shared
    machine) hits floor and subject alike.

    `entries`: {name: dict(cmd=[...], runs=N, cwd=..., prepare=[...])}.
    Returns {name: summary()} over the pooled samples."""
    pooled = {name: [] for name in entries}
    for r in range(rounds):
        for name, e in entries.items():
            per_round = -(-e["runs"] // rounds)
            s = time_process(e["cmd"], per_round, warmup=warmup if r == 0 else 0,
                             prepare=e.get("prepare"), cwd=e.get("cwd"))
            pooled[name] += s["samples"]
    return {name: summary(samples) for name, samples in pooled.items()}


def worker(kind, python=PY, env=None, **params):
    """Run `run.py _worker KIND` in a fresh process; return its JSON answer."""
    proc = subprocess.run([python, str(Path(__file__).resolve()), "_worker", kind,
                           json.dumps(params)],
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError("worker %s failed:\n%s" % (kind, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def sqlite_url(path):
    return "sqlite:///" + str(path)


# ------------------------------------------------------------------ sqlmigrate probe

class Target:
    """Where sqlmigrate.py is and which of the benchmarked API it has."""

    def __init__(self, path):
        self.path = Path(path).resolve()
        self.dir = self.path.parent
        self.env = {"PYTHONPATH": str(self.dir)}
        self.api = set()
        if self.path.exists():
            code = ("import sqlmigrate; print(' '.join(n for n in "
                    "('migrate', 'Migrator', 'drop_column', 'reconcile', 'main') "
                    "if hasattr(sqlmigrate, n)))")
            p = subprocess.run([PY, "-c", code], capture_output=True, text=True,
                               cwd=str(self.dir))
            if p.returncode == 0:
                self.api = set(p.stdout.split())
            else:
                log("sqlmigrate.py does not import: " + p.stderr.strip().splitlines()[-1])

    def missing(self, *names):
        """A reason to skip, or None when every name exists."""
        if not self.path.exists():
            return "no sqlmigrate.py at %s yet" % self.path
        lacking = [n for n in names if n not in self.api]
        if lacking:
            return "sqlmigrate has no %s yet" % ", ".join(lacking)
        return None


# ------------------------------------------------------------------------ fixtures

def write_sqlmigrate_dir(d, n):
    """n one-statement .sql migrations in sqlmigrate's format (SPEC section 2)."""
    d.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n)))
    for i in range(1, n + 1):
        (d / ("%0*d-create-table-%d.sql" % (width, i, i))).write_text(
            "-- migrate:up\nCREATE TABLE t_%d (id INTEGER PRIMARY KEY, v TEXT);\n\n"
            "-- migrate:down\nDROP TABLE t_%d;\n" % (i, i))
    return d


def write_yoyo_dir(d, n):
    d.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (d / ("%04d_create_table_%d.sql" % (i, i))).write_text(
            "CREATE TABLE t_%d (id INTEGER PRIMARY KEY, v TEXT);\n" % i)
        (d / ("%04d_create_table_%d.rollback.sql" % (i, i))).write_text(
            "DROP TABLE t_%d;\n" % i)
    return d


ALEMBIC_ENV = '''\
from alembic import context
from sqlalchemy import create_engine, pool

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    # one transaction per migration, like sqlmigrate and the floor
    context.configure(connection=connection, target_metadata=None,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
'''


def write_alembic_project(d, n, db):
    """A minimal Alembic project (ini, env.py, n chained revisions); returns the ini."""
    versions = d / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (d / "env.py").write_text(ALEMBIC_ENV)
    for i in range(1, n + 1):
        down = repr("r%04d" % (i - 1)) if i > 1 else "None"
        (versions / ("r%04d_create_table_%d.py" % (i, i))).write_text(
            "from alembic import op\n\nrevision = 'r%04d'\ndown_revision = %s\n"
            "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n"
            "    op.execute('CREATE TABLE t_%d (id INTEGER PRIMARY KEY, v TEXT)')\n\n\n"
            "def downgrade():\n    op.execute('DROP TABLE t_%d')\n" % (i, down, i, i))
    ini = d / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %s\nsqlalchemy.url = %s\n"
                   % (d, sqlite_url(db)))
    return ini


FLOOR_STATUS = '''\
"""W1 floor: open the DB, list the directory, read the version."""
import os, sqlite3, sys
db, d = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db)
files = sorted(f for f in os.listdir(d) if f.endswith((".py", ".sql")))
row = conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()
conn.close()
print("version", row[0], "files", len(files))
'''

# W1 reference, not a target: the floor's work as the design asks a CLI to be,
# a module run with -m that parses its arguments with argparse.  What this
# costs over the floor no sqlmigrate change can win back.
FLOOR_STATUS_ARGPARSE = '''\
"""W1 reference: the floor's work, run with -m, arguments read by argparse."""
import argparse, os, sqlite3
parser = argparse.ArgumentParser(prog="floor")
parser.add_argument("--db")
parser.add_argument("--dir")
parser.add_argument("command", choices=["status"])
args = parser.parse_args()
conn = sqlite3.connect(args.db)
files = sorted(f for f in os.listdir(args.dir) if f.endswith((".py", ".sql")))
row = conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()
conn.close()
print("version", row[0], "files", len(files))
'''

FLOOR_APPLY = '''\
"""W2 floor: one BEGIN/COMMIT per migration plus a bookkeeping row."""
import os, sqlite3, sys
db, d = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value TEXT)")
for name in sorted(os.listdir(d)):
    if not name.endswith(".sql"):
        continue
    with open(os.path.join(d, name), encoding="utf-8") as f:
        up = f.read().split("-- migrate:down")[0]
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(up)
    conn.execute("INSERT OR REPLACE INTO metadata VALUES ('schema_version', ?)",
                 (str(int(name.split("-")[0])),))
    conn.execute("COMMIT")
conn.close()
'''


def write_script(workdir, name, text):
    p = workdir / name
    p.write_text(text)
    return p


def applied_100(workdir, target):
    """A migrations dir of 100 files and a DB at version 100 (W1, W5).

    Applied by sqlmigrate itself when it can; otherwise a DB that follows the
    metadata/schema_version convention, which is all the floor reads."""
    d = write_sqlmigrate_dir(workdir / "w1-migrations", 100)
    db = workdir / "w1.db"
    if db.exists():
        return db, d, True
    if not target.missing("migrate"):
        subprocess.run([PY, "-c", "import sqlmigrate, sys; sqlmigrate.migrate(sys.argv[1], sys.argv[2])",
                        str(db), str(d)], check=True, cwd=str(target.dir))
        return db, d, True
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO metadata VALUES ('schema_version', '100')")
    for i in range(1, 101):
        conn.execute("CREATE TABLE t_%d (id INTEGER PRIMARY KEY, v TEXT)" % i)
    conn.close()
    return db, d, False


# ------------------------------------------------------------------- peer venv

def ensure_bare():
    """A venv with nothing in it (bench/.venv/bare), built from this interpreter.

    sqlmigrate and the floors run with it, so that .pth files in the base
    interpreter's site-packages (which may import anything at every start-up)
    neither slow nor pre-import for the processes being measured.  It is the
    interpreter a user gets from `python -m venv`."""
    bare = VENV / "bare"
    py = bare / "bin" / "python"
    if not py.exists():
        log("creating the bare venv %s" % bare)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    return str(py)


def ensure_peers():
    """Create bench/.venv/peers with the peer tools; return its python."""
    venv = VENV / "peers"
    py = venv / "bin" / "python"
    check = "import yoyo, alembic, sqlalchemy, sqlite_utils"
    if py.exists() and subprocess.run([str(py), "-c", check],
                                      capture_output=True).returncode == 0:
        return py
    log("installing peers into %s: %s" % (venv, " ".join(PEER_PACKAGES)))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q"] + PEER_PACKAGES, check=True)
    return py


def peer_versions(py):
    code = ("import importlib.metadata as m; print({p: m.version(p) for p in %r})"
            % PEER_PACKAGES)
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------ result rows

class Results:
    def __init__(self):
        self.rows = []

    def add(self, workload, case, tool, value, unit="ms", lo=None, hi=None,
            ratio=None, target=None, ok=None, note=""):
        row = dict(workload=workload, case=case, tool=tool, value=value, unit=unit,
                   min=lo, max=hi, ratio=ratio, target=target or "", note=note,
                   result="" if ok is None else ("ok" if ok else "MISSED"))
        self.rows.append(row)
        log("  %-4s %-28s %-34s %s" % (workload, case, tool, fmt_value(row)))
        return row

    def skip(self, workload, case, tool, reason, target=""):
        self.rows.append(dict(workload=workload, case=case, tool=tool, value=None,
                              unit="", min=None, max=None, ratio=None, target=target,
                              note=reason, result="skipped"))
        log("  %-4s %-28s %-34s SKIPPED: %s" % (workload, case, tool, reason))

    def timing(self, workload, case, tool, s, floor=None, limit=None, target=None,
               note="", scale=1000.0, unit="ms", ok=None):
        """Add a row from summary() `s` (seconds); ratio against `floor`'s median;
        `limit` is the highest allowed ratio; `ok` overrides the verdict."""
        ratio = s["median"] / floor["median"] if floor else None
        if ok is None and limit is not None and ratio is not None:
            ok = ratio <= limit
        return self.add(workload, case, tool, s["median"] * scale, unit,
                        s["min"] * scale, s["max"] * scale, ratio, target, ok, note)


def fmt_num(x):
    if x is None:
        return ""
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


def fmt_value(row):
    if row["value"] is None:
        return ""
    s = "%s %s" % (fmt_num(row["value"]), row["unit"])
    if row["ratio"] is not None:
        s += "  %.2fx" % row["ratio"]
    if row["result"]:
        s += "  " + row["result"]
    return s


def markdown(rows):
    out = ["| workload | case | tool | median | min–max | × floor | target | result | notes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        val = "" if r["value"] is None else "%s %s" % (fmt_num(r["value"]), r["unit"])
        rng = "" if r["min"] is None else "%s–%s" % (fmt_num(r["min"]), fmt_num(r["max"]))
        ratio = "" if r["ratio"] is None else "%.2f" % r["ratio"]
        result = "**MISSED**" if r["result"] == "MISSED" else r["result"]
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["workload"], r["case"], r["tool"], val, rng, ratio, r["target"],
            result, r["note"]))
    return "\n".join(out)


# ----------------------------------------------------------------------------- W1

def w1_status(res, target, workdir, peers_py, runs):
    """`status` with 100 applied migrations, whole process."""
    log("W1: status, 100 applied migrations, whole process")
    db, d, by_sqlmigrate = applied_100(workdir, target)
    floor_script = write_script(workdir, "floor_status.py", FLOOR_STATUS)
    case = "100 applied"
    entries = {"floor": dict(cmd=[PY, str(floor_script), str(db), str(d)], runs=runs,
                             cwd=str(workdir))}
    subjects = ("python -m sqlmigrate status", "python sqlmigrate.py status")
    why = target.missing("main")
    args = ["--db", str(db), "--dir", str(d), "status"]
    write_script(workdir, "floor_status_argparse.py", FLOOR_STATUS_ARGPARSE)
    reference = "reference: floor's work, -m + argparse"
    entries[reference] = dict(cmd=[PY, "-m", "floor_status_argparse"] + args, runs=runs,
                              cwd=str(workdir))
    if not why:
        probe = subprocess.run([PY, "sqlmigrate.py"] + args, cwd=str(target.dir),
                               capture_output=True, text=True)
        if probe.returncode != 0:
            why = "status exits %d: %s" % (
                probe.returncode, (probe.stderr.strip().splitlines() or [""])[-1][:80])
    if not why:
        # cwd is sqlmigrate.py's directory: how a user runs a vendored copy
        entries[subjects[0]] = dict(cmd=[PY, "-m", "sqlmigrate"] + args, runs=runs,
                                    cwd=str(target.dir))
        entries[subjects[1]] = dict(cmd=[PY, "sqlmigrate.py"] + args, runs=runs,
                                    cwd=str(target.dir))
    if peers_py:
        bindir = peers_py.parent
        yd = write_yoyo_dir(workdir / "w1-yoyo", 100)
        ydb = workdir / "w1-yoyo.db"
        yoyo = [str(bindir / "yoyo")]
        subprocess.run(yoyo + ["apply", "--batch", "--no-config-file", "--database",
                               sqlite_url(ydb), str(yd)], check=True, capture_output=True)
        entries["yoyo list"] = dict(cmd=yoyo + ["list", "--batch", "--no-config-file",
                                                "--database", sqlite_url(ydb), str(yd)],
                                    runs=max(4, runs // 3))
        adb = workdir / "w1-alembic.db"
        ini = write_alembic_project(workdir / "w1-alembic", 100, adb)
        alembic = [str(bindir / "alembic"), "-c", str(ini)]
        subprocess.run(alembic + ["upgrade", "head"], check=True, capture_output=True)
        entries["alembic current"] = dict(cmd=alembic + ["current"], runs=max(4, runs // 3))
    t = time_group(entries, warmup=2)
    floor = t.pop("floor")
    res.timing("W1", case, "floor: sqlite3 script", floor,
               note="" if by_sqlmigrate else "DB made by hand, not by sqlmigrate")
    res.timing("W1", case, reference, t.pop(reference), floor,
               note="the least a -m argparse CLI costs")
    if why:
        for tool in subjects:
            res.skip("W1", case, tool, why)
    else:
        res.timing("W1", case, subjects[0], t.pop(subjects[0]), floor, 1.5, "≤ 1.5×",
                   note="bytecode cache in place")
        res.timing("W1", case, subjects[1], t.pop(subjects[1]), floor, 2.0, "≤ 2×",
                   note="compiled on every start (no bytecode cache)")
    for name, s in t.items():
        res.timing("W1", case, name, s, floor)


# ----------------------------------------------------------------------------- W2

def marginal(big, small, n_big, n_small):
    """Per-migration cost between two run sizes, from medians; the min–max range
    comes from each big-run sample against the small run's median."""
    per = [(t - small["median"]) / (n_big - n_small) for t in big["samples"]]
    s = summary(per)
    s["median"] = (big["median"] - small["median"]) / (n_big - n_small)
    return s


def w2_apply(res, target, workdir, peers_py, sizes, runs):
    """Apply N one-statement migrations to a new file DB, whole process."""
    log("W2: apply N migrations to a new DB (marginal cost per migration)")
    n0 = 10
    floor_script = write_script(workdir, "floor_apply.py", FLOOR_APPLY)
    tools = {}   # name -> function(n) -> (cmd, db, cwd)

    def fresh(name, n):
        return workdir / ("w2-%s-%d.db" % (name, n))

    def floor_cmd(n):
        d = write_sqlmigrate_dir(workdir / ("w2-migrations-%d" % n), n)
        db = fresh("floor", n)
        return [PY, str(floor_script), str(db), str(d)], db, str(workdir)
    tools["floor: sqlite3, BEGIN/COMMIT each"] = floor_cmd

    why = target.missing("main")
    if not why:
        def sqlmigrate_cmd(n):
            d = write_sqlmigrate_dir(workdir / ("w2-migrations-%d" % n), n)
            db = fresh("sqlmigrate", n)
            return ([PY, "-m", "sqlmigrate", "--db", str(db), "--dir", str(d), "-q", "up"],
                    db, str(target.dir))
        tools["python -m sqlmigrate up"] = sqlmigrate_cmd

    if peers_py:
        bindir = peers_py.parent

        def yoyo_cmd(n):
            d = write_yoyo_dir(workdir / ("w2-yoyo-%d" % n), n)
            db = fresh("yoyo", n)
            return ([str(bindir / "yoyo"), "apply", "--batch", "--no-config-file",
                     "--database", sqlite_url(db), str(d)], db, str(workdir))
        tools["yoyo apply --batch"] = yoyo_cmd

        def alembic_cmd(n):
            db = fresh("alembic", n)
            ini = write_alembic_project(workdir / ("w2-alembic-%d" % n), n, db)
            return [str(bindir / "alembic"), "-c", str(ini), "upgrade", "head"], db, str(workdir)
        tools["alembic upgrade head"] = alembic_cmd

    entries = {}
    for name, make in tools.items():
        for n in [n0] + sizes:
            cmd, db, cwd = make(n)
            entries[(name, n)] = dict(cmd=cmd, cwd=cwd, prepare=["rm", "-f", str(db)],
                                      runs=2 * runs if n <= 100 else max(2, runs // 2), db=db)
    t = time_group(entries, rounds=2 if max(sizes) > 100 else 3)
    for (name, n), e in entries.items():
        if name.startswith("python -m sqlmigrate"):
            check = sqlite3.connect(str(e["db"]))
            v = check.execute("SELECT value FROM metadata WHERE key='schema_version'").fetchone()
            check.close()
            if not v or int(v[0]) != n:
                log("  warning: sqlmigrate left schema_version %r after %d migrations" % (v, n))
    floor_marg = {}
    for name in tools:
        for n in sizes:
            m = marginal(t[(name, n)], t[(name, n0)], n, n0)
            case = "N=%d, per migration" % n
            note = "whole run %s ms" % fmt_num(t[(name, n)]["median"] * 1000)
            if name.startswith("floor"):
                floor_marg[n] = m
                res.timing("W2", case, name, m, note=note)
            elif name.startswith("python -m sqlmigrate"):
                res.timing("W2", case, name, m, floor_marg[n], 1.1, "≤ 1.1×", note=note)
            else:
                res.timing("W2", case, name, m, floor_marg[n], note=note)
    if why:
        for n in sizes:
            res.skip("W2", "N=%d, per migration" % n, "python -m sqlmigrate up", why)


# ----------------------------------------------------------------------------- W3

W3_TABLE = {
    # native: `email` is plain, so ALTER TABLE DROP COLUMN (SQLite >= 3.35) applies.
    "native": "email TEXT",
    # copy: `email` is UNIQUE, which ALTER TABLE DROP COLUMN refuses: a rebuild is needed.
    "copy": "email TEXT UNIQUE",
}
W3_INDEX = "CREATE INDEX t_name ON t(name)"
W3_TRIGGER = ("CREATE TRIGGER t_score_check BEFORE UPDATE OF score ON t "
              "BEGIN SELECT RAISE(ABORT, 'negative score') WHERE NEW.score < 0; END")
W3_NEW = ("CREATE TABLE \"t_new\" (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
          "score REAL DEFAULT 0, created_at TEXT)")


def w3_template(case, rows):
    """A cached DB with table t (5 columns, an index, a trigger) of `rows` rows."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / ("w3-%s-%d.db" % (case, rows))
    if path.exists():
        return path
    log("  building %s (%d rows)..." % (path.name, rows))
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, %s, "
                 "score REAL DEFAULT 0, created_at TEXT)" % W3_TABLE[case])
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
        "INSERT INTO t SELECT x, 'name-' || (x * 7919 % 1000003), "
        "'user' || x || '@example.com', (x % 1000) / 10.0, "
        "'2024-01-01 00:00:' || (x % 60) FROM c", (rows,))
    conn.execute("COMMIT")
    conn.execute(W3_INDEX)
    conn.execute(W3_TRIGGER)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    tmp.rename(path)
    return path


def w3_floor_sql(conn):
    """The 12-step procedure of SQLite's ALTER TABLE page, in one transaction."""
    conn.execute("BEGIN")
    saved = [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 't' AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL")]
    conn.execute(W3_NEW)
    conn.execute("INSERT INTO t_new (id, name, score, created_at) "
                 "SELECT id, name, score, created_at FROM t")
    conn.execute("DROP TABLE t")
    conn.execute("ALTER TABLE t_new RENAME TO t")
    for sql in saved:
        conn.execute(sql)
    conn.execute("PRAGMA foreign_key_check")
    conn.execute("COMMIT")


def w3_run_one(db, tool):
    """Worker body: drop column `email` of t with `tool`; time, peak RSS, survivors."""
    if tool == "sqlmigrate":
        import sqlmigrate
    elif tool == "sqlite-utils":
        import sqlite_utils
    elif tool == "alembic":
        from alembic.migration import MigrationContext
        from alembic.operations import Operations
        from sqlalchemy import create_engine
    t0 = time.perf_counter()
    if tool == "floor":
        conn = sqlite3.connect(db, isolation_level=None)
        w3_floor_sql(conn)
        conn.close()
    elif tool == "native":
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("ALTER TABLE t DROP COLUMN email")
        conn.close()
    elif tool == "sqlmigrate":
        sqlmigrate.drop_column(db, "t", "email")
    elif tool == "sqlite-utils":
        sqlite_utils.Database(db)["t"].transform(drop={"email"})
    elif tool == "alembic":
        engine = create_engine(sqlite_url(db))
        with engine.begin() as connection:
            with Operations(MigrationContext.configure(connection)).batch_alter_table("t") as b:
                b.drop_column("email")
        engine.dispose()
    elapsed = time.perf_counter() - t0
    conn = sqlite3.connect(db)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 't'")}
    count = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    conn.close()
    return {"seconds": elapsed, "rss_mib": peak_rss_mib(), "columns": cols, "rows": count,
            "index": "t_name" in names, "trigger": "t_score_check" in names}


W3_NAMES = {"floor": "floor: 12-step SQL, one transaction",
            "native": "native ALTER TABLE DROP COLUMN",
            "sqlmigrate": "sqlmigrate.drop_column",
            "sqlite-utils": "sqlite-utils transform",
            "alembic": "alembic batch_alter_table"}


def w3_drop_column(res, target, workdir, peers_py, sizes, runs):
    """Drop a column of a big table; each run in its own process for its peak RSS,
    the tools taking turns run by run."""
    log("W3: drop a column (5 columns, an index, a trigger)")
    skip = target.missing("drop_column")
    for rows in sizes:
        for case in ("native", "copy"):
            template = w3_template(case, rows)
            label = "%s rows, %s path" % (human(rows), case)
            tools = ["floor", "native", "sqlmigrate"] if case == "native" else ["floor", "sqlmigrate"]
            if peers_py and case == "native":
                tools += ["sqlite-utils", "alembic"]
            tools = [t for t in tools if wanted(t)]
            answers = {tool: [] for tool in tools}
            errors = {}
            if skip:
                errors["sqlmigrate"] = skip
            for _ in range(runs):
                for tool in tools:
                    if tool in errors:
                        continue
                    db = workdir / "w3.db"
                    shutil.copyfile(str(template), str(db))
                    py = str(peers_py) if tool in ("sqlite-utils", "alembic") else PY
                    env = target.env if tool == "sqlmigrate" else None
                    try:
                        answers[tool].append(worker("w3", python=py, env=env, db=str(db), tool=tool))
                    except RuntimeError as e:
                        errors[tool] = str(e).strip().splitlines()[-1][:120]
                    db.unlink()
            floor = floor_rss = None
            for tool in tools:
                name = W3_NAMES[tool]
                if tool in errors:
                    if tool == "sqlmigrate" and (skip or "not implemented" in errors[tool]):
                        res.skip("W3", label, name, errors[tool])
                    else:
                        res.add("W3", label, name, None, ok=False if tool == "sqlmigrate" else None,
                                note="failed: " + errors[tool])
                    continue
                s = summary([a["seconds"] for a in answers[tool]])
                peak = max(a["rss_mib"] for a in answers[tool])
                last = answers[tool][-1]
                correct = last["rows"] == rows and "email" not in last["columns"]
                facts = [] if correct else ["WRONG RESULT (rows %d, columns %s)"
                                            % (last["rows"], last["columns"])]
                facts.append("index %s" % ("kept" if last["index"] else "LOST"))
                facts.append("trigger %s" % ("kept" if last["trigger"] else "LOST"))
                note = "peak RSS %.0f MiB; %s" % (peak, ", ".join(facts))
                if tool == "floor":
                    floor, floor_rss = s, peak
                    res.timing("W3", label, name, s, note=note, scale=1.0, unit="s")
                elif tool == "sqlmigrate":
                    limit = 0.5 if case == "native" else 1.05
                    good = (s["median"] <= limit * floor["median"] and peak <= floor_rss + 10
                            and last["index"] and last["trigger"] and correct)
                    res.timing("W3", label, name, s, floor, limit,
                               "≤ %s×; RSS ≤ floor + 10 MiB; index, trigger kept" % limit,
                               note="%s; RSS floor %+.1f MiB" % (note, peak - floor_rss),
                               scale=1.0, unit="s", ok=good)
                else:
                    if tool in ("sqlite-utils", "alembic"):
                        note += " (RSS includes the peer's imports)"
                    res.timing("W3", label, name, s, floor, note=note, scale=1.0, unit="s")


TOOLS = None   # --tools: the W3/W4 tools to run (the floor always runs)


def wanted(tool):
    return tool == "floor" or TOOLS is None or tool in TOOLS


def human(n):
    return "%dM" % (n // 1000000) if n >= 1000000 and n % 1000000 == 0 else \
        ("%dk" % (n // 1000) if n >= 1000 and n % 1000 == 0 else str(n))


# ----------------------------------------------------------------------------- W4

def w4_template(tables):
    """A cached DB of `tables` tables t0000.. with 20 columns each (id + c01..c19)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / ("w4-%d.db" % tables)
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    conn.execute("BEGIN")
    for name, cols in w4_declared(tables, add=False).items():
        conn.execute("CREATE TABLE %s (%s)" % (name, ", ".join("%s %s" % kv for kv in cols.items())))
    conn.execute("COMMIT")
    conn.close()
    tmp.rename(path)
    return path


def w4_declared(tables, add):
    """The declared schema: every existing column, plus `c20` when `add`."""
    out = {}
    for t in range(tables):
        cols = {"id": "INTEGER PRIMARY KEY"}
        for c in range(1, 20):
            cols["c%02d" % c] = "TEXT" if c % 2 else "INTEGER DEFAULT 0"
        if add:
            cols["c20"] = "INTEGER DEFAULT 0 NOT NULL"
        out["t%04d" % t] = cols
    return out


def w4_floor(conn, declared):
    """pragma_table_info join, then bare ALTER TABLEs in one transaction."""
    have = {}
    for table, col in conn.execute(
            "SELECT m.name, p.name FROM sqlite_master AS m "
            "JOIN pragma_table_info(m.name) AS p WHERE m.type = 'table'"):
        have.setdefault(table.lower(), set()).add(col.lower())
    todo = [(t, c, d) for t, cols in declared.items() if t.lower() in have
            for c, d in cols.items() if c.lower() not in have[t.lower()]]
    if todo:
        conn.execute("BEGIN")
        for t, c, d in todo:
            conn.execute('ALTER TABLE "%s" ADD COLUMN "%s" %s' % (t, c, d))
        conn.execute("COMMIT")
    return len(todo)


def w4_run(tables, mode, tool, runs, workdir):
    """Worker body: `runs` timed reconciles, each on a fresh copy of the template."""
    if tool == "sqlmigrate":
        import sqlmigrate
    elif tool == "sqlite-utils":
        import sqlite_utils
    samples = []
    changes = None
    # one untimed run on a 5-table copy first, so that first-call costs
    # (regex compilation, lazy imports) are not charged to the timed runs
    for i in range(runs + 1):
        size = 5 if i == 0 else tables
        template = w4_template(size)
        declared = w4_declared(size, add=(mode == "add"))
        db = os.path.join(workdir, "w4-%s.db" % tool)
        shutil.copyfile(str(template), db)
        conn = sqlite3.connect(db, isolation_level=None if tool == "floor" else "")
        t0 = time.perf_counter()
        if tool == "floor":
            changes = w4_floor(conn, declared)
        elif tool == "sqlmigrate":
            changes = len(sqlmigrate.reconcile(conn, columns=declared, indexes={}) or [])
        elif tool == "sqlite-utils":
            d = sqlite_utils.Database(conn)
            for t, cols in declared.items():
                d[t].add_missing_columns([{c: (0 if "INT" in decl else "")
                                           for c, decl in cols.items()}])
            changes = None
        if i:
            samples.append(time.perf_counter() - t0)
        conn.close()
        check = sqlite3.connect(db)
        added = check.execute("SELECT count(*) FROM sqlite_master AS m "
                              "JOIN pragma_table_info(m.name) AS p "
                              "WHERE m.type = 'table' AND p.name = 'c20'").fetchone()[0]
        check.close()
        os.unlink(db)
    return {"samples": samples, "changes": changes, "added": added}


W4_NAMES = {"floor": "floor: pragma_table_info + ALTER",
            "sqlmigrate": "sqlmigrate.reconcile",
            "sqlite-utils": "sqlite-utils add_missing_columns"}


def w4_reconcile(res, target, workdir, peers_py, sizes, runs):
    """Reconcile many tables; in-process, the tools taking turns round by round."""
    log("W4: reconcile N tables of 20 columns")
    skip = target.missing("reconcile")
    w4_template(5)
    for tables in sizes:
        w4_template(tables)
        for mode, limit in (("check", 1.2), ("add", 1.1)):
            label = "%d tables, %s" % (tables, "check, nothing to add" if mode == "check"
                                       else "add 1 column each")
            tools = ["floor", "sqlmigrate"] + (["sqlite-utils"] if peers_py else [])
            tools = [t for t in tools if wanted(t)]
            rounds = runs if tables <= 200 else max(2, runs // 2)
            if tables > 200 and mode == "add":
                rounds = 1      # ~1.5 min a run on 2000 tables: each ALTER reloads the schema
            samples = {tool: [] for tool in tools}
            added = {}
            errors = {"sqlmigrate": skip} if skip else {}
            for r in range(rounds):
                for tool in tools:
                    if tool in errors or (tool == "sqlite-utils" and r and tables > 200
                                          and mode == "add"):
                        continue
                    py = str(peers_py) if tool == "sqlite-utils" else PY
                    try:
                        a = worker("w4", python=py,
                                   env=target.env if tool == "sqlmigrate" else None,
                                   tables=tables, mode=mode, tool=tool, runs=1,
                                   workdir=str(workdir))
                    except RuntimeError as e:
                        errors[tool] = str(e).strip().splitlines()[-1][:120]
                        continue
                    samples[tool] += a["samples"]
                    added[tool] = a["added"]
            floor = None
            for tool in tools:
                name = W4_NAMES[tool]
                if tool in errors:
                    if tool == "sqlmigrate" and (skip or "not implemented" in errors[tool]):
                        res.skip("W4", label, name, errors[tool], "≤ %s×" % limit)
                    else:
                        res.add("W4", label, name, None,
                                ok=False if tool == "sqlmigrate" else None,
                                note="failed: " + errors[tool])
                    continue
                expect = tables if mode == "add" else 0
                note = "" if added[tool] == expect else \
                    "WRONG RESULT: %d of %d tables got c20" % (added[tool], expect)
                s = summary(samples[tool])
                if tool == "floor":
                    floor = s
                    res.timing("W4", label, name, s, note=note)
                elif tool == "sqlmigrate":
                    res.timing("W4", label, name, s, floor, limit, "≤ %s×" % limit, note=note,
                               ok=False if note else None)
                else:
                    res.timing("W4", label, name, s, floor, note=note)


# ----------------------------------------------------------------------------- W5

W5_PROGRAM = {
    # Run with `python -c` in a fresh process: nothing imported before the timer
    # starts except what the interpreter itself loads at start-up.
    "floor": """\
import sys, time
t0 = time.perf_counter()
import sqlite3, logging
t1 = time.perf_counter()
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT value FROM metadata WHERE key = 'schema_version'").fetchone()
conn.close()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
""",
    "sqlmigrate": """\
import sys, time
t0 = time.perf_counter()
import sqlmigrate
t1 = time.perf_counter()
sqlmigrate.migrate(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
""",
}


def w5_sample(tool, db, d, target):
    env = dict(os.environ, **target.env) if tool == "sqlmigrate" else None
    out = subprocess.run([PY, "-c", W5_PROGRAM[tool], str(db), str(d)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return {"import": float(out[0]), "call": float(out[1])}


def w5_startup(res, target, workdir, runs):
    log("W5: start-up, in-process (fresh process per sample)")
    db, d, _ = applied_100(workdir, target)
    tools = ["floor"] + ([] if target.missing("migrate") else ["sqlmigrate"])
    answers = {tool: [] for tool in tools}
    for tool in tools:
        w5_sample(tool, db, d, target)   # warm the bytecode cache
    for _ in range(runs):
        for tool in tools:
            answers[tool].append(w5_sample(tool, db, d, target))
    out = {tool: {k: summary([a[k] for a in answers[tool]]) for k in ("import", "call")}
           for tool in tools}
    f = out["floor"]
    res.timing("W5", "import", "floor: import sqlite3, logging", f["import"])
    res.timing("W5", "100 applied, no-op", "floor: connect + one SELECT", f["call"])
    why = target.missing("migrate")
    if why:
        res.skip("W5", "import", "import sqlmigrate", why, "≤ 1.15×")
        res.skip("W5", "100 applied, no-op", "sqlmigrate.migrate()", why, "≤ 2 ms")
        return
    s = out["sqlmigrate"]
    res.timing("W5", "import", "import sqlmigrate", s["import"], f["import"], 1.15, "≤ 1.15×")
    res.timing("W5", "100 applied, no-op", "sqlmigrate.migrate()", s["call"], f["call"],
               target="≤ 2 ms", note="first call in a fresh process",
               ok=s["call"]["median"] <= 0.002)


# --------------------------------------------------------------------------- main

def machine_info(peers_py):
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(open("/proc/meminfo").readline().split()[1])
        mem = "%.0f GiB" % (kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    info = {"machine": "%s, %d cores, %s" % (cpu, os.cpu_count() or 0, mem),
            "os": platform.platform(),
            "python": platform.python_version() + " (sqlmigrate and floors in a bare venv)",
            "sqlite": sqlite3.sqlite_version,
            "timer": "hyperfine " + subprocess.run(["hyperfine", "--version"], capture_output=True,
                                                   text=True).stdout.split()[-1]
            if shutil.which("hyperfine") else "time.perf_counter",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if peers_py:
        info["peers"] = peer_versions(peers_py)
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heavy", action="store_true",
                    help="add the big sizes: W2 N=1000, W3 10M rows, W4 2000 tables")
    ap.add_argument("--peers", action="store_true",
                    help="also measure yoyo-migrations, alembic and sqlite-utils "
                         "(installed into bench/.venv with pip)")
    ap.add_argument("--only", default="W1,W2,W3,W4,W5", help="comma-separated workloads")
    ap.add_argument("--sqlmigrate", default=str(ROOT / "sqlmigrate.py"),
                    help="the sqlmigrate.py to measure (default: the repository's)")
    ap.add_argument("--runs", type=int, default=0, help="override every run count")
    ap.add_argument("--tools", default=None,
                    help="W3/W4 only: comma-separated tools besides the floor "
                         "(sqlmigrate, native, sqlite-utils, alembic)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--combine", metavar="NAME,...",
                    help="run nothing: merge bench/results/NAME.json files into one table "
                         "(a later file's row replaces an earlier one, unless it was skipped)")
    ap.add_argument("--out", default="results",
                    help="write bench/results/OUT.json and OUT.md (default: results)")
    args = ap.parse_args(argv)
    only = {w.strip().upper() for w in args.only.split(",")}
    if args.combine:
        return combine(args.combine.split(","), args.out)

    global PY, TOOLS
    PY = ensure_bare()
    TOOLS = set(args.tools.split(",")) if args.tools else None
    # A bytecode cache is part of what `python -m sqlmigrate` is measured with.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    target = Target(args.sqlmigrate)
    peers_py = ensure_peers() if args.peers else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sqlmigrate-bench-", dir=str(RESULTS)))
    info = machine_info(peers_py)
    info["sqlmigrate"] = str(target.path) + ("" if target.path.exists() else " (missing)")
    info["command"] = "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log("machine: %(machine)s; Python %(python)s; SQLite %(sqlite)s; %(timer)s" % info)
    res = Results()
    n = args.runs or None
    try:
        if "W1" in only:
            w1_status(res, target, workdir, peers_py, n or 20)
        if "W2" in only:
            w2_apply(res, target, workdir, peers_py, [100, 1000] if args.heavy else [100], n or 5)
        if "W3" in only:
            w3_drop_column(res, target, workdir, peers_py,
                           [1000000, 10000000] if args.heavy else [1000000], n or (3 if args.heavy else 5))
        if "W4" in only:
            w4_reconcile(res, target, workdir, peers_py,
                         [200, 2000] if args.heavy else [200], n or 5)
        if "W5" in only:
            w5_startup(res, target, workdir, n or 30)
    finally:
        if not args.keep:
            shutil.rmtree(str(workdir), ignore_errors=True)

    header = ("Machine: %(machine)s. %(os)s. Python %(python)s, SQLite %(sqlite)s, "
              "timings by %(timer)s, %(date)s." % info)
    if "peers" in info:
        header += " Peers: %s." % info["peers"]
    table = markdown(res.rows)
    missed = [r for r in res.rows if r["result"] == "MISSED"]
    footer = ("Targets missed: %d (%s)." % (len(missed), "; ".join(
        "%s %s %s" % (r["workload"], r["case"], r["tool"]) for r in missed))
        if missed else "Every measured target met.")
    md = "%s\n\nCommand: `%s`\n\n%s\n\n%s\n" % (header, info["command"], table, footer)
    (RESULTS / (args.out + ".md")).write_text(md)
    (RESULTS / (args.out + ".json")).write_text(
        json.dumps({"info": info, "rows": res.rows}, indent=1))
    print(md)
    log("wrote %s.md and %s.json" % (RESULTS / args.out, RESULTS / args.out))
    return 0


def combine(names, out):
    """One table from several runs (say the default run, --heavy, and a --tools rerun)."""
    merged, infos, floors = {}, [], {}
    for name in names:
        data = json.load(open(RESULTS / (name + ".json")))
        infos.append((name, data["info"]))
        for row in data["rows"]:
            key = (row["workload"], row["case"], row["tool"])
            if row["result"] == "skipped" and key in merged:
                continue
            merged[key] = dict(row, source=name)
            if row["tool"].startswith("floor") and row["value"] is not None:
                floors[(name, row["workload"], row["case"])] = row
    for key, row in merged.items():
        floor = [r for k, r in merged.items() if k[:2] == key[:2] and k[2].startswith("floor")]
        if row["ratio"] is not None and floor and floor[0]["source"] != row["source"]:
            own = floors.get((row["source"],) + key[:2])
            row["note"] = ("× its own run's floor, %s %s (run %s). " % (
                fmt_num(own["value"]), own["unit"], row["source"]) if own else "") + row["note"]
    def size(case):
        head = case.split()[0].replace("N=", "").rstrip(",")
        return int(head[:-1]) * {"k": 10 ** 3, "M": 10 ** 6}[head[-1]] \
            if head[-1:] in ("k", "M") and head[:-1].isdigit() else \
            (int(head) if head.isdigit() else 0)
    order = {k: i for i, k in enumerate(merged)}
    rows = sorted(merged.values(), key=lambda r: (r["workload"], size(r["case"]),
                                                  order[(r["workload"], r["case"], r["tool"])]))
    i = infos[-1][1]
    lines = ["Machine: %s. Python %s, SQLite %s, timings by %s." % (
        i["machine"], i["python"], i["sqlite"], i["timer"]), "",
             "Runs: " + "; ".join("`%s` (%s)" % (i["command"], i["date"]) for _, i in infos),
             "", markdown(rows), ""]
    missed = [r for r in rows if r["result"] == "MISSED"]
    lines.append("Targets missed: %d." % len(missed) if missed else "Every measured target met.")
    md = "\n".join(lines) + "\n"
    (RESULTS / (out + ".md")).write_text(md)
    print(md)
    return 0


def worker_main(kind, params):
    p = json.loads(params)
    if kind == "w3":
        out = w3_run_one(p["db"], p["tool"])
    elif kind == "w4":
        out = w4_run(p["tables"], p["mode"], p["tool"], p["runs"], p["workdir"])
    else:
        raise SystemExit("unknown worker " + kind)
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
