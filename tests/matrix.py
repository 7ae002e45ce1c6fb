#!/usr/bin/env python3
"""CPython x SQLite compatibility matrix for sqlmigrate (issue 6).

Runs the whole unittest suite (``python -m unittest discover -s tests -t .``
from the repository root, as the README's ``python -m unittest``) once per
(Python, SQLite) pair and prints a table of pass / fail / skip counts.

    python3 tests/matrix.py                       # full matrix
    python3 tests/matrix.py --ci                  # the CI preset (see CI_PAIRS)
    python3 tests/matrix.py --python 3.6,3.13 --sqlite 3.7.17,3.52.0
    python3 tests/matrix.py --markdown matrix.md --json matrix.json
    python3 tests/matrix.py --build-only          # just fill the library cache
    python3 tests/matrix.py --list --ci           # show the pairs, run nothing

Pythons: pyenv's $(pyenv root)/versions/<X.Y.Z>/bin/python; an absent one is
skipped with a note.  SQLite: "system" (whatever the Python loads by itself) or
a libsqlite3.so.0 built from the official autoconf tarball that the npm
package ``sqlite3`` ships in ``deps/`` (fetched with ``npm pack``), cached in
~/.cache/sqlmigrate-matrix/<version>/ (SQLMIGRATE_MATRIX_CACHE overrides) and
loaded through LD_LIBRARY_PATH.  tests/matrix_site/matrix_hook.py (loaded at
start-up through a .pth file in a private user site, PYTHONUSERBASE) turns on
lazy symbol binding, so that Pythons compiled against a
newer SQLite can load an old one, and records which library each process
really used; a pair whose processes ran any other SQLite is reported as
WRONG-LIB, never as a result.

Exit status: 0 all selected pairs passed; 1 some pair failed (tests failed,
crashed, timed out, or ran the wrong library); 2 the matrix could not be set up
(npm unreachable, build failure, no Python found, bad arguments).

Standard library only; runs on Python 3.6+.
"""
from __future__ import print_function

import argparse
import concurrent.futures
import ctypes
import datetime
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SITE_DIR = os.path.join(HERE, "matrix_site")

PYTHONS = ["3.6.15", "3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.11.7",
           "3.12.1", "3.13.0"]

# version -> (npm package version of "sqlite3", autoconf tarball in its deps/,
#             sha256 of that tarball)
SQLITES = {
    "3.7.17": ("2.1.15", "sqlite-autoconf-3071700.tar.gz",
               "8ff46d0baa9e64c0815544e829e985f1161c096aa6344c8f430791dbeadc2baf"),
    "3.15.0": ("3.1.13", "sqlite-autoconf-3150000.tar.gz",
               "77162da9b4a0336d7e77d5252b690662850f62b47c12d9125f74ab9de78ded27"),
    "3.24.0": ("4.0.2", "sqlite-autoconf-3240000.tar.gz",
               "d9d14e88c6fb6d68de9ca0d1f9797477d82fc3aed613558f87ffbdbbc5ceb74a"),
    "3.26.0": ("4.0.6", "sqlite-autoconf-3260000.tar.gz",
               "5daa6a3fb7d1e8c767cd59c4ded8da6e4b00c61d3b466d0685e35c4dd6d7bf5d"),
    "3.31.1": ("5.0.0", "sqlite-autoconf-3310100.tar.gz",
               "62284efebc05a76f909c580ffa5c008a7d22a1287285d68b7825a2b6b51949ae"),
    "3.34.0": ("5.0.2", "sqlite-autoconf-3340000.tar.gz",
               "bf6db7fae37d51754737747aaaf413b4d6b3b5fbacd52bdb2d0d6e5b2edd9aee"),
    "3.39.2": ("5.0.11", "sqlite-autoconf-3390200.tar.gz",
               "852be8a6183a17ba47cee0bbff7400b7aa5affd283bf3beefc34fcd088a239de"),
    "3.44.2": ("5.1.7", "sqlite-autoconf-3440200.tar.gz",
               "1c6719a148bc41cf0f2bbbe3926d7ce3f5ca09d878f1246fcc20767b175bb407"),
    "3.52.0": ("6.0.1", "sqlite-autoconf-3520000.tar.gz",
               "f6b50b0c103392af32a8be15b2b9d25959de9a00a70c3979128aafeaa5338b3f"),
}
SYSTEM = "system"
SQLITE_ORDER = sorted(SQLITES, key=lambda v: tuple(int(x) for x in v.split("."))) + [SYSTEM]

# Compile options: what a distribution build (and the autoconf configure
# defaults) turns on, so that e.g. the JSON1 functions exist on 3.9-3.37 as they
# do on real hosts.  Options unknown to an old version are ignored by it (3.7.17
# has no JSON1 and no FTS5, as on CentOS 7).
CFLAGS = ["-O2", "-shared", "-fPIC",
          "-DSQLITE_THREADSAFE=1",
          "-DSQLITE_ENABLE_COLUMN_METADATA",
          "-DSQLITE_ENABLE_FTS3", "-DSQLITE_ENABLE_FTS4", "-DSQLITE_ENABLE_FTS5",
          "-DSQLITE_ENABLE_RTREE",
          "-DSQLITE_ENABLE_JSON1",
          "-DSQLITE_ENABLE_DESERIALIZE",
          "-DSQLITE_ENABLE_MATH_FUNCTIONS"]
LDLIBS = ["-lpthread", "-ldl", "-lm"]
BUILD_ID = hashlib.sha256(" ".join(CFLAGS + LDLIBS).encode()).hexdigest()[:12]

# Real hosts still in service: (label, python, sqlite it ships, nearest built).
HOSTS = [
    ("CentOS 7", "3.6", "3.7.17", "3.7.17"),
    ("Ubuntu 18.04", "3.6", "3.22.0", "3.24.0"),
    ("RHEL 8", "3.6", "3.26.0", "3.26.0"),
    ("Debian 11", "3.9", "3.34.1", "3.34.0"),
    ("Ubuntu 22.04", "3.10", "3.37.2", "3.39.2"),
    ("Debian 12", "3.11", "3.40.1", SYSTEM),
    ("Ubuntu 24.04", "3.12", "3.45.1", "3.44.2"),
]

STATUS_OK = "ok"
STATUS_FAIL = "fail"          # the suite ran and reported failures/errors
STATUS_CRASH = "crash"        # no unittest summary (abort, symbol lookup error...)
STATUS_TIMEOUT = "timeout"
STATUS_WRONG_LIB = "wrong-lib"
STATUS_LOAD_FAIL = "load-fail"  # `import sqlite3` itself failed
STATUS_ABSENT = "absent"      # the Python is not installed here (a note, not a failure)
# CPython itself refuses this SQLite at import ("SQLite 3.15.2 or higher
# required", Python 3.13): no host can have the pair, so it is a note, not a failure.
STATUS_UNSUPPORTED = "unsupported"
# A process died on "symbol lookup error": see tests/matrix_site/matrix_hook.py.
STATUS_SYMBOL = "symbol-crash"
SYMBOL_ERROR = re.compile(r"symbol lookup error: .*?undefined symbol: (sqlite3_\w+)")
NOT_FAILURES = (STATUS_OK, STATUS_ABSENT, STATUS_UNSUPPORTED)
UNSUPPORTED_RE = re.compile(r"ImportError: (?:sqlite3: )?(SQLite [0-9.]+ or higher required)")


class SetupError(Exception):
    """The matrix cannot be set up: reported loudly, exit status 2."""


_print_lock = threading.Lock()


def say(*parts):
    with _print_lock:
        print(*parts)
        sys.stdout.flush()


def vkey(version):
    return tuple(int(x) for x in version.split("."))


# --------------------------------------------------------------------------
# Pythons

def pyenv_root():
    root = os.environ.get("PYENV_ROOT")
    if root:
        return root
    try:
        out = subprocess.check_output(["pyenv", "root"], stderr=subprocess.DEVNULL,
                                      universal_newlines=True).strip()
        if out:
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    return os.path.expanduser("~/.pyenv")


def python_path(full_version):
    return os.path.join(pyenv_root(), "versions", full_version, "bin", "python")


def resolve_pythons(spec):
    """'3.6,3.13' or '3.6.15' -> full versions from PYTHONS."""
    if not spec or spec == "all":
        return list(PYTHONS)
    chosen = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        matches = [v for v in PYTHONS if v == item or v.startswith(item + ".")]
        if not matches:
            raise SetupError("unknown Python %r; known: %s" % (item, ", ".join(PYTHONS)))
        for m in matches:
            if m not in chosen:
                chosen.append(m)
    return sorted(chosen, key=vkey)


def resolve_sqlites(spec):
    if not spec or spec == "all":
        return list(SQLITE_ORDER)
    chosen = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if item not in SQLITES and item != SYSTEM:
            raise SetupError("unknown SQLite %r; known: %s"
                             % (item, ", ".join(SQLITE_ORDER)))
        if item not in chosen:
            chosen.append(item)
    return [v for v in SQLITE_ORDER if v in chosen]


def short(pyver):
    return ".".join(pyver.split(".")[:2])


# The pairs .ci/run's plain suites already run (the default python3, 3.6 and
# 3.13, each on the system SQLite): the --ci preset leaves them out.
CI_SUITE_PAIRS = (("3.6.15", SYSTEM), ("3.11.7", SYSTEM), ("3.13.0", SYSTEM))


def ci_pairs():
    """Every Python on the system SQLite, every SQLite on the oldest and the
    newest Python, and the real host pairs; less CI_SUITE_PAIRS."""
    pairs = list(CI_SUITE_PAIRS)

    def add(p, s):
        if (p, s) not in pairs:
            pairs.append((p, s))
    for p in PYTHONS:
        add(p, SYSTEM)
    for p in (PYTHONS[0], PYTHONS[-1]):
        for s in SQLITE_ORDER:
            add(p, s)
    for _label, py, _shipped, built in HOSTS:
        add(resolve_pythons(py)[0], built)
    return pairs[len(CI_SUITE_PAIRS):]


def host_labels(pyver, sqlite):
    return [label for label, py, _shipped, built in HOSTS
            if short(pyver) == py and sqlite == built]


# --------------------------------------------------------------------------
# SQLite libraries

def cache_root(args):
    return (args.cache_dir or os.environ.get("SQLMIGRATE_MATRIX_CACHE")
            or os.path.join(os.path.expanduser("~"), ".cache", "sqlmigrate-matrix"))


def lib_dir(root, version):
    return os.path.join(root, version)


def libversion(path):
    """sqlite3_libversion() of a shared library, via ctypes."""
    lib = ctypes.CDLL(os.path.abspath(path))
    lib.sqlite3_libversion.restype = ctypes.c_char_p
    return lib.sqlite3_libversion().decode()


def cached_lib(root, version):
    """Path of a usable cached build of `version`, or None."""
    d = lib_dir(root, version)
    so = os.path.join(d, "libsqlite3.so.0")
    info = os.path.join(d, "BUILD-INFO.json")
    try:
        with open(info) as f:
            meta = json.load(f)
    except (IOError, OSError, ValueError):
        return None
    if meta.get("build_id") != BUILD_ID or meta.get("version") != version:
        return None
    if not os.path.isfile(so):
        return None
    return so


_NPM_FAILED = threading.Event()


def fetch_autoconf(version, dest_dir, workdir):
    """The autoconf tarball of `version`: from the cache, else `npm pack`."""
    pkg, name, sha = SQLITES[version]
    kept = os.path.join(dest_dir, name)
    if os.path.isfile(kept):
        with open(kept, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() == sha:
            return data
    if _NPM_FAILED.is_set():
        raise SetupError("not fetched: npm already failed for another version")
    npm = shutil.which("npm")
    if not npm:
        raise SetupError("npm is not installed: cannot fetch SQLite %s "
                         "(npm package sqlite3@%s)" % (version, pkg))
    # Few, short retries: an unreachable registry fails in about a minute,
    # not after npm's default back-off of several minutes per package.
    cmd = [npm, "pack", "sqlite3@%s" % pkg, "--loglevel=error", "--no-audit", "--no-fund",
           "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
           "--fetch-retry-maxtimeout=10000", "--fetch-timeout=120000"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        _NPM_FAILED.set()
        raise SetupError("`%s` timed out after 600 s (is the npm registry reachable?)"
                         % " ".join(cmd))
    tgzs = [f for f in os.listdir(workdir) if f.endswith(".tgz")]
    if proc.returncode != 0 or not tgzs:
        _NPM_FAILED.set()
        raise SetupError("`%s` failed (exit %s); is the npm registry reachable?\n%s"
                         % (" ".join(cmd), proc.returncode, tail(out, 15)))
    member = "package/deps/" + name
    with tarfile.open(os.path.join(workdir, tgzs[0])) as outer:
        try:
            data = outer.extractfile(member).read()
        except (KeyError, AttributeError):
            raise SetupError("sqlite3@%s has no %s" % (pkg, member))
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise SetupError("%s from sqlite3@%s: sha256 %s, expected %s"
                         % (name, pkg, got, sha))
    os.makedirs(dest_dir, exist_ok=True)
    tmp = kept + ".tmp%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, kept)
    return data


def build_lib(root, version):
    """Build (or find cached) libsqlite3.so.0 for `version`.
    Returns (path, seconds, 'cached'|'built')."""
    t0 = time.time()
    so = cached_lib(root, version)
    if so:
        return so, time.time() - t0, "cached"
    dest = lib_dir(root, version)
    work = tempfile.mkdtemp(prefix="build-%s-" % version, dir=root)
    try:
        data = fetch_autoconf(version, dest, work)
        t_fetch = time.time() - t0
        with tarfile.open(fileobj=io.BytesIO(data)) as inner:
            wanted = {}
            for m in inner.getmembers():
                base = os.path.basename(m.name)
                if base in ("sqlite3.c", "sqlite3.h") and m.isfile():
                    wanted[base] = inner.extractfile(m).read()
        if set(wanted) != {"sqlite3.c", "sqlite3.h"}:
            raise SetupError("%s lacks sqlite3.c/sqlite3.h" % SQLITES[version][1])
        for base, content in wanted.items():
            with open(os.path.join(work, base), "wb") as f:
                f.write(content)
        m = re.search(br'#define SQLITE_VERSION\s+"([0-9.]+)"', wanted["sqlite3.h"])
        if not m or m.group(1).decode() != version:
            raise SetupError("%s is not SQLite %s" % (SQLITES[version][1], version))
        cc = os.environ.get("CC", "gcc")
        out_so = os.path.join(work, "libsqlite3.so.0")
        cmd = [cc] + CFLAGS + ["sqlite3.c", "-o", out_so] + LDLIBS
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SetupError("compiling SQLite %s failed:\n$ %s\n%s"
                             % (version, " ".join(cmd), tail(out, 30)))
        got = libversion(out_so)
        if got != version:
            raise SetupError("built library reports %s, expected %s" % (got, version))
        os.makedirs(dest, exist_ok=True)
        final = os.path.join(dest, "libsqlite3.so.0")
        os.replace(out_so, final)
        meta = {"version": version, "build_id": BUILD_ID,
                "npm_package": "sqlite3@%s" % SQLITES[version][0],
                "tarball": SQLITES[version][1], "sha256": SQLITES[version][2],
                "command": " ".join(cmd), "compiler": compiler_version(cc),
                "fetch_seconds": round(t_fetch, 1),
                "build_seconds": round(time.time() - t0 - t_fetch, 1),
                "built_at": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
        tmp = os.path.join(dest, "BUILD-INFO.json.tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tmp, os.path.join(dest, "BUILD-INFO.json"))
        return final, time.time() - t0, "built"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compiler_version(cc):
    try:
        return subprocess.check_output([cc, "--version"], universal_newlines=True,
                                       stderr=subprocess.STDOUT).splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def build_all(root, versions, jobs):
    """Build the needed libraries, `jobs` at a time.  Raises SetupError."""
    os.makedirs(root, exist_ok=True)
    results = {}
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futs = dict((ex.submit(build_lib, root, v), v) for v in versions)
        for fut in concurrent.futures.as_completed(futs):
            v = futs[fut]
            try:
                path, secs, how = fut.result()
            except SetupError as exc:
                errors.append("SQLite %s: %s" % (v, exc))
                say("[build] SQLite %-7s FAILED" % v)
                continue
            results[v] = {"path": path, "seconds": round(secs, 1), "how": how}
            if how == "built":
                say("[build] SQLite %-7s built in %5.1fs -> %s" % (v, secs, path))
    if errors:
        raise SetupError("could not provide every SQLite library:\n  "
                         + "\n  ".join(errors))
    cached = sorted((v for v in results if results[v]["how"] == "cached"), key=vkey)
    if cached:
        say("[build] cached in %s: %s" % (root, ", ".join(cached)))
    return results


# --------------------------------------------------------------------------
# Running one pair

PROBE = r"""
import sqlite3, sys
lib = "?"
try:
    with open("/proc/self/maps") as f:
        for line in f:
            if "libsqlite3" in line:
                lib = line.split(None, 5)[-1].strip()
                break
except (IOError, OSError):
    pass
sys.stdout.write("%s\t%s\n" % (sqlite3.sqlite_version, lib))
"""

SUMMARY_RAN = re.compile(r"^Ran (\d+) tests? in ([0-9.]+)s", re.M)
SUMMARY_END = re.compile(r"^(OK|FAILED|NO TESTS RAN)(?: \((.*)\))?\s*$", re.M)
SKIP_LINE = re.compile(r"\.\.\. skipped '(.*)'\s*$", re.M)
FAILED_TEST = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (\S+) \(([^)]*)\)", re.M)


def tail(text, n):
    lines = (text or "").rstrip().splitlines()
    return "\n".join(lines[-n:])


def parse_unittest(output, pyver=None):
    """Counts from unittest's closing lines; None if there are none.

    "ran" always includes skipped tests: CPython 3.12.1 alone left skipped
    tests out of "Ran N tests" (gh-106584, reverted in 3.12.2), so for it
    they are added back."""
    ran = list(SUMMARY_RAN.finditer(output))
    if not ran:
        return None
    last = ran[-1]
    end = SUMMARY_END.search(output, last.end())
    counts = {"ran": int(last.group(1)), "failures": 0, "errors": 0, "skipped": 0,
              "expected_failures": 0, "unexpected_successes": 0,
              "verdict": end.group(1) if end else None,
              "suite_seconds": float(last.group(2))}
    if end and end.group(2):
        for part in end.group(2).split(","):
            if "=" in part:
                k, v = part.strip().split("=", 1)
                k = k.strip().replace(" ", "_")
                if k in counts:
                    counts[k] = int(v)
    if pyver == "3.12.1":
        counts["ran"] += counts["skipped"]
    counts["passed"] = (counts["ran"] - counts["failures"] - counts["errors"]
                        - counts["skipped"] - counts["expected_failures"]
                        - counts["unexpected_successes"])
    reasons = {}
    for m in SKIP_LINE.finditer(output[:last.start()]):
        reasons[m.group(1)] = reasons.get(m.group(1), 0) + 1
    counts["skip_reasons"] = reasons
    failed = []
    for m in FAILED_TEST.finditer(output[:last.start()]):
        name = "%s (%s)" % (m.group(2), m.group(3))
        entry = "%s: %s" % (m.group(1), name)
        if entry not in failed:
            failed.append(entry)
    counts["failed_tests"] = failed
    return counts


def copy_tree(dst):
    """A private copy of the work tree: parallel pairs share no files."""
    def ignore(d, names):
        skip = {".git", "build", "dist", ".venv", "__pycache__", ".mypy_cache",
                ".pytest_cache"}
        return [n for n in names if n in skip or n.endswith((".pyc", ".db",
                                                               ".db-wal", ".db-shm",
                                                               ".db-journal"))]
    shutil.copytree(REPO, dst, symlinks=True, ignore=ignore)


def user_base(scratch):
    """A user site for every Python of the matrix, with the hook's .pth."""
    base = os.path.join(scratch, "userbase")
    pth = "%s\nimport matrix_hook\n" % SITE_DIR
    for pyver in PYTHONS:
        sp = os.path.join(base, "lib", "python%s" % short(pyver), "site-packages")
        os.makedirs(sp, exist_ok=True)
        with open(os.path.join(sp, "sqlmigrate-matrix.pth"), "w") as f:
            f.write(pth)
    return base


def pair_env(pyexe, libdir, record_file, tmpdir, pair_name):
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE",
                "PYTHONSAFEPATH", "PYENV_VERSION"):
        env.pop(var, None)
    # The start-up hook comes from a private user site, not PYTHONPATH, so it
    # survives tests that set their own PYTHONPATH (see matrix_hook.py).
    env["PYTHONUSERBASE"] = user_base(os.path.dirname(record_file))
    # A test that starts `python` by name gets this pair's Python.
    env["PATH"] = os.path.dirname(pyexe) + os.pathsep + env.get("PATH", "")
    ld = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir:
        ld = [libdir] + ld
    if ld:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(ld)
    else:
        env.pop("LD_LIBRARY_PATH", None)
    # Tests may look at this to know they run inside a matrix pair, e.g. to
    # leave out a Python other than sys.executable (it would get this SQLite).
    env["SQLMIGRATE_MATRIX"] = pair_name
    env["SQLMIGRATE_MATRIX_RECORD"] = record_file
    env["SQLMIGRATE_MATRIX_LAZY"] = "1"
    env["TMPDIR"] = tmpdir
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def run_pair(pyver, sqlite, libs, cache, args, logdir):
    """Run the suite for one pair; returns a result dict."""
    res = {"python": pyver, "sqlite": sqlite, "hosts": host_labels(pyver, sqlite),
           "status": None, "sqlite_loaded": None, "lib_path": None, "seconds": None,
           "note": ""}
    pyexe = python_path(pyver)
    res["python_exe"] = pyexe
    if not os.path.isfile(pyexe):
        res["status"] = STATUS_ABSENT
        res["note"] = "Python %s not installed at %s" % (pyver, pyexe)
        return res
    libdir = os.path.dirname(libs[sqlite]["path"]) if sqlite != SYSTEM else None
    slug = "py%s-sqlite-%s" % (pyver, sqlite)
    log_path = os.path.join(logdir, slug + ".log")
    res["log"] = os.path.relpath(log_path, REPO) if log_path.startswith(REPO) else log_path
    scratch = tempfile.mkdtemp(prefix="matrix-%s-" % slug)
    t0 = time.time()
    try:
        work = os.path.join(scratch, "repo")
        copy_tree(work)
        tmpdir = os.path.join(scratch, "tmp")
        os.mkdir(tmpdir)
        record = os.path.join(scratch, "sqlite-record.tsv")
        env = pair_env(pyexe, libdir, record, tmpdir, "%s/%s" % (pyver, sqlite))

        # 1. Which SQLite does this exact environment load?
        probe = subprocess.Popen([pyexe, "-c", PROBE], cwd=work, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 universal_newlines=True)
        pout, _ = probe.communicate(timeout=120)
        if probe.returncode != 0:
            m = UNSUPPORTED_RE.search(pout)
            if m:
                res["status"] = STATUS_UNSUPPORTED
                res["note"] = "CPython %s: %s" % (pyver, m.group(1))
            else:
                res["status"] = STATUS_LOAD_FAIL
                res["note"] = tail(pout, 3).replace("\n", " | ")
            with open(log_path, "w") as f:
                f.write(pout)
            return res
        loaded, lib_path = pout.strip().splitlines()[-1].split("\t", 1)
        res["sqlite_loaded"], res["lib_path"] = loaded, lib_path
        bad = lib_problem(sqlite, loaded, lib_path, cache, libs)
        if bad:
            res["status"] = STATUS_WRONG_LIB
            res["note"] = "probe: " + bad
            return res
        # The probe itself recorded a line; start the evidence file afresh.
        if os.path.exists(record):
            os.remove(record)

        # 2. The suite.
        cmd = [pyexe, "-m", "unittest", "discover", "-s", "tests", "-t", ".", "-v"]
        with open(log_path, "w") as logf:
            logf.write("# %s\n# LD_LIBRARY_PATH=%s\n# PYTHONUSERBASE=%s\n# sqlite %s from %s\n\n"
                       % (" ".join(cmd), env.get("LD_LIBRARY_PATH", ""),
                          env["PYTHONUSERBASE"], loaded, lib_path))
            logf.flush()
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                proc.wait(timeout=args.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(proc)
                proc.wait()
            finally:
                kill_group(proc)  # stragglers the tests left behind
        res["seconds"] = round(time.time() - t0, 1)
        res["returncode"] = proc.returncode
        with open(log_path, errors="replace") as f:
            output = f.read()
        counts = parse_unittest(output, pyver)
        if counts:
            res.update(counts)

        # 3. Did every process that used sqlite3 use the intended library?
        seen = read_record(record)
        res["processes_checked"] = len(seen)
        wrong = []
        for ver, path in sorted(set(seen)):
            problem = lib_problem(sqlite, ver, path, cache, libs,
                                  expect_version=loaded)
            if problem:
                wrong.append(problem)
        if timed_out:
            res["status"] = STATUS_TIMEOUT
            res["note"] = "killed after %ss" % args.timeout
        elif wrong:
            res["status"] = STATUS_WRONG_LIB
            res["note"] = "; ".join(wrong)
        elif SYMBOL_ERROR.search(output):
            # Lazy binding let a Python built for a newer SQLite load this one,
            # and then CPython's _sqlite3 called a function it lacks.
            res["status"] = STATUS_SYMBOL
            syms = sorted(set(SYMBOL_ERROR.findall(output)))
            res["note"] = ("process aborted: CPython's _sqlite3 called %s, absent "
                           "from SQLite %s (%s)" % (", ".join(syms), sqlite,
                                                   "after the summary" if counts
                                                   else "no unittest summary"))
        elif counts is None:
            res["status"] = STATUS_CRASH
            res["note"] = "exit %s, no unittest summary: %s" % (
                proc.returncode, tail(output, 3).replace("\n", " | "))
        elif counts["verdict"] == "OK" and proc.returncode != 0:
            res["status"] = STATUS_CRASH
            res["note"] = "exit %s after an OK summary: %s" % (
                proc.returncode, tail(output, 2).replace("\n", " | "))
        elif (proc.returncode == 0 and counts["verdict"] == "OK"
              and counts["ran"] > 0):
            res["status"] = STATUS_OK
        else:
            res["status"] = STATUS_FAIL
            if counts["ran"] == 0:
                res["note"] = "no tests ran"
        if not seen and res["status"] == STATUS_OK and counts["ran"] > 0:
            res["note"] = "no process reported its SQLite at exit"
        return res
    except Exception as exc:  # report, never lose the other pairs
        res["status"] = STATUS_CRASH
        res["note"] = "runner error: %r" % (exc,)
        return res
    finally:
        if res["seconds"] is None:
            res["seconds"] = round(time.time() - t0, 1)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            res["scratch"] = scratch


def read_record(path):
    seen = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    seen.append((parts[1], parts[2]))
    except (IOError, OSError):
        pass
    return seen


def lib_problem(sqlite, loaded, lib_path, cache, libs, expect_version=None):
    """Why (loaded, lib_path) is not the intended library, or ''."""
    cache_real = os.path.realpath(cache)
    in_cache = lib_path not in ("?", "") and \
        os.path.realpath(lib_path).startswith(cache_real + os.sep)
    if sqlite == SYSTEM:
        if in_cache:
            return "system pair loaded a matrix build %s" % lib_path
        if expect_version and loaded != expect_version:
            return "SQLite %s from %s (expected system %s)" % (loaded, lib_path,
                                                                expect_version)
        return ""
    if loaded != sqlite:
        return "SQLite %s from %s (expected %s)" % (loaded, lib_path, sqlite)
    if lib_path not in ("?", "") and \
            os.path.realpath(lib_path) != os.path.realpath(libs[sqlite]["path"]):
        return "SQLite from %s (expected %s)" % (lib_path, libs[sqlite]["path"])
    return ""


# --------------------------------------------------------------------------
# Symbols a Python's _sqlite3 needs that an old library lacks

_NM_CACHE = {}


def _nm(args):
    key = tuple(args)
    if key not in _NM_CACHE:
        _NM_CACHE[key] = subprocess.check_output(args, universal_newlines=True,
                                                 stderr=subprocess.DEVNULL)
    return _NM_CACHE[key]


def missing_symbols(pyexe, so_path):
    """sqlite3_* symbols _sqlite3 imports that `so_path` does not export,
    or None when nm/_sqlite3 can't be found."""
    nm = shutil.which("nm")
    if not nm or not os.path.isfile(pyexe):
        return None
    try:
        ext = _nm([pyexe, "-S", "-c", "import importlib.util as u;"
                   "print(u.find_spec('_sqlite3').origin)"]).strip()
        need = _nm([nm, "-D", "--undefined-only", ext])
        have = _nm([nm, "-D", "--defined-only", so_path])
    except (OSError, subprocess.CalledProcessError):
        return None
    needed = set(l.split()[-1] for l in need.splitlines()
                 if l.split() and l.split()[-1].startswith("sqlite3_"))
    exported = set(l.split()[-1] for l in have.splitlines() if l.split())
    return sorted(needed - exported)


# --------------------------------------------------------------------------
# Reporting

def cell(res, markdown=False):
    if res is None:
        return ""
    st = res["status"]
    if st == STATUS_ABSENT:
        return "n/a"
    if st == STATUS_UNSUPPORTED:
        m = re.search(r"SQLite ([0-9.]+)", res.get("note", ""))
        return "unsupported (needs %s+)" % m.group(1) if m else "unsupported"
    if st == STATUS_OK:
        text = "%d" % res["passed"]
        if res.get("skipped"):
            text += " (%d skip)" % res["skipped"]
        return text
    if st == STATUS_FAIL and res.get("ran") is not None:
        bits = [b for b in (
            "%dF" % res["failures"] if res["failures"] else "",
            "%dE" % res["errors"] if res["errors"] else "",
            "%dU" % res["unexpected_successes"] if res["unexpected_successes"] else "",
            "0 run" if not res["ran"] else "") if b]
        text = " ".join(["FAIL"] + bits)
        if res.get("skipped"):
            text += " (%d skip)" % res["skipped"]
    elif st == STATUS_SYMBOL:
        text = "CRASH: " + ", ".join(sorted(set(
            re.findall(r"sqlite3_\w+", res.get("note", "")))))
    else:
        text = st.upper()
    return "**%s**" % text if markdown else text


def py_label(pyver):
    return "Python %s" % pyver


def sqlite_label(sqlite, results):
    if sqlite != SYSTEM:
        return sqlite
    loaded = sorted(set(r["sqlite_loaded"] for r in results
                        if r["sqlite"] == SYSTEM and r.get("sqlite_loaded")))
    return "system %s" % "/".join(loaded) if loaded else "system"


def table_rows(results, pythons, sqlites):
    by = dict(((r["python"], r["sqlite"]), r) for r in results)
    header = ["Python \\ SQLite"] + [sqlite_label(s, results) for s in sqlites]
    rows = []
    for p in pythons:
        rows.append([p] + [by.get((p, s)) for s in sqlites])
    return header, rows


def text_table(results, pythons, sqlites):
    header, rows = table_rows(results, pythons, sqlites)
    grid = [header] + [[r[0]] + [cell(c) or "-" for c in r[1:]] for r in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(header))]
    lines = []
    for n, row in enumerate(grid):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results, pythons, sqlites, meta):
    header, rows = table_rows(results, pythons, sqlites)
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        out.append("| %s | %s |" % (r[0], " | ".join(cell(c, True) or "–"
                                                     for c in r[1:])))
    out.append("")
    out.append("Cells: tests passed (skipped ones in brackets); FAIL nF/nE = "
               "failures/errors; CRASH: fn = CPython's _sqlite3 called fn, which "
               "that SQLite lacks (process aborted); "
               "unsupported = CPython refuses this SQLite at import; "
               "n/a = Python not installed; – = pair not run. "
               "Generated by `python3 tests/matrix.py` on %s (%s)."
               % (meta["date"], meta["platform"]))
    hosts = [r for r in results if r.get("hosts")]
    if hosts:
        out.append("")
        out.append("| Host | Python | SQLite shipped | tested with | result |")
        out.append("|---|---|---|---|---|")
        for label, py, shipped, built in HOSTS:
            r = [x for x in hosts if label in x["hosts"]]
            if r:
                r = r[0]
                tested = (r.get("sqlite_loaded") or built) if built == SYSTEM else built
                out.append("| %s | %s | %s | %s | %s |" % (
                    label, r["python"], shipped, tested, cell(r, True)))
    return "\n".join(out) + "\n"


def print_summary(results, pythons, sqlites, builds, wall):
    say("")
    say(text_table(results, pythons, sqlites))
    say("")
    say("Cells: passed (skipped); FAIL nF/nE = failures/errors; "
        "CRASH: fn = CPython's _sqlite3 called fn, missing from that SQLite; "
        "unsupported = CPython refuses the SQLite; n/a = Python absent; - = not run.")
    hosts = [r for r in results if r.get("hosts")]
    if hosts:
        say("")
        say("Real hosts:")
        for label, py, shipped, built in HOSTS:
            for r in hosts:
                if label in r["hosts"]:
                    note = "" if built == SYSTEM or built == shipped else \
                        " (ships %s; nearest built)" % shipped
                    say("  %-13s Python %-7s SQLite %s%s: %s" % (
                        label, r["python"], r.get("sqlite_loaded") or built, note,
                        cell(r) or r["status"]))
    absent = sorted(set(r["python"] for r in results if r["status"] == STATUS_ABSENT),
                    key=vkey)
    for p in absent:
        say("NOTE: Python %s is absent on this host (%s); its pairs were skipped."
            % (p, python_path(p)))
    unsupported = [r for r in results if r["status"] == STATUS_UNSUPPORTED]
    if unsupported:
        say("")
        say("Pairs CPython itself refuses (not counted as failures):")
        for r in unsupported:
            say("  Python %s x SQLite %s: %s" % (r["python"], r["sqlite"], r["note"]))
    bad = [r for r in results if r["status"] not in NOT_FAILURES]
    if bad:
        say("")
        say("Failed pairs:")
        for r in bad:
            say("  Python %s x SQLite %s: %s %s" % (r["python"], r["sqlite"],
                                                   r["status"].upper(), r.get("note", "")))
            for t in r.get("failed_tests", [])[:15]:
                say("      " + t)
            if r.get("log"):
                say("      log: %s" % r["log"])
    reasons = {}
    for r in results:
        for reason, n in (r.get("skip_reasons") or {}).items():
            reasons.setdefault(reason, set()).add("%s/%s" % (short(r["python"]),
                                                            r["sqlite"]))
    if reasons:
        say("")
        say("Skip reasons (pairs):")
        for reason in sorted(reasons):
            pairs = sorted(reasons[reason])
            shown = ", ".join(pairs[:6]) + (" ..." if len(pairs) > 6 else "")
            say("  %s  [%d pairs: %s]" % (reason, len(pairs), shown))
    timed = [r for r in results if r.get("seconds") and r["status"] != STATUS_ABSENT]
    say("")
    if timed:
        secs = [r["seconds"] for r in timed]
        say("Per-pair wall time: min %.1fs, median %.1fs, max %.1fs over %d pairs"
            % (min(secs), sorted(secs)[len(secs) // 2], max(secs), len(secs)))
    built = [(v, b["seconds"]) for v, b in sorted(builds.items(), key=lambda x: vkey(x[0]))
             if b["how"] == "built"]
    if built:
        say("Library builds: " + ", ".join("%s %.0fs" % vb for vb in built))
    ok = sum(1 for r in results if r["status"] == STATUS_OK)
    n_absent = sum(1 for r in results if r["status"] == STATUS_ABSENT)
    say("Matrix: %d pairs passed, %d failed, %d unsupported by CPython, "
        "%d not run (Python absent); wall time %.1fs"
        % (ok, len(bad), len(unsupported), n_absent, wall))


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Run sqlmigrate's test suite for each (Python, SQLite) pair.",
        epilog="Pythons: %s.  SQLite: %s." % (", ".join(PYTHONS), ", ".join(SQLITE_ORDER)))
    ap.add_argument("--python", help="comma-separated Pythons (3.6 or 3.6.15); "
                    "default all")
    ap.add_argument("--sqlite", help="comma-separated SQLite versions or 'system'; "
                    "default all")
    ap.add_argument("--ci", action="store_true",
                    help="the CI preset: every Python on the system SQLite, every "
                    "SQLite on the oldest and newest Python, and the real host pairs "
                    "(narrowed further by --python/--sqlite)")
    ap.add_argument("-j", "--jobs", type=int, default=2,
                    help="pairs (and library builds) run at once; default 2")
    ap.add_argument("--timeout", type=int, default=1200,
                    help="seconds one pair's suite may take; default 1200")
    ap.add_argument("--markdown", metavar="FILE", help="write a Markdown table")
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "build", "matrix"),
                    help="logs and results.json go here; default build/matrix")
    ap.add_argument("--cache-dir", help="library cache; default "
                    "$SQLMIGRATE_MATRIX_CACHE or ~/.cache/sqlmigrate-matrix")
    ap.add_argument("--build-only", action="store_true",
                    help="build the selected libraries, run no test")
    ap.add_argument("--list", action="store_true", help="print the pairs and exit")
    ap.add_argument("--keep", action="store_true",
                    help="keep each pair's scratch copy of the repository")
    return ap.parse_args(argv)


def select_pairs(args):
    pythons = resolve_pythons(args.python)
    sqlites = resolve_sqlites(args.sqlite)
    if args.ci:
        pairs = [(p, s) for p, s in ci_pairs() if p in pythons and s in sqlites]
    else:
        pairs = [(p, s) for p in pythons for s in sqlites]
    return pairs


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        pairs = select_pairs(args)
    except SetupError as exc:
        print("matrix: %s" % exc, file=sys.stderr)
        return 2
    if not pairs:
        print("matrix: no pair selected", file=sys.stderr)
        return 2
    pythons = sorted(set(p for p, _ in pairs), key=vkey)
    sqlites = [s for s in SQLITE_ORDER if s in set(s for _, s in pairs)]
    if args.list:
        for p, s in pairs:
            labels = host_labels(p, s)
            present = "" if os.path.isfile(python_path(p)) else "   [absent]"
            print("%-8s %-7s%s%s" % (p, s, "   " + ", ".join(labels) if labels else "",
                                     present))
        print("%d pairs" % len(pairs))
        return 0

    t_start = time.time()
    cache = cache_root(args)
    needed = [s for s in sqlites if s != SYSTEM]
    say("matrix: %d pairs (%d Pythons x %d SQLite), %d at a time; cache %s"
        % (len(pairs), len(pythons), len(sqlites), args.jobs, cache))
    try:
        builds = build_all(cache, needed, args.jobs)
    except SetupError as exc:
        say("")
        say("MATRIX SETUP FAILED: %s" % exc)
        say("No pair was run.  Exit status 2.")
        return 2
    t_built = time.time()
    if args.build_only:
        say("matrix: libraries ready in %.1fs" % (t_built - t_start))
        return 0

    present = [p for p in pythons if os.path.isfile(python_path(p))]
    if not present:
        say("MATRIX SETUP FAILED: none of the Pythons is installed under %s"
            % os.path.join(pyenv_root(), "versions"))
        return 2
    logdir = os.path.join(os.path.abspath(args.out_dir), "logs")
    os.makedirs(logdir, exist_ok=True)
    for p in pythons:
        if p not in present:
            say("NOTE: Python %s absent (%s): its pairs are skipped"
                % (p, python_path(p)))

    results = []
    done = [0]

    def one(pair):
        r = run_pair(pair[0], pair[1], builds, cache, args, logdir)
        with _print_lock:
            done[0] += 1
            n = done[0]
        if r["status"] != STATUS_ABSENT:
            say("[%2d/%d] Python %-7s x SQLite %-7s %-9s %-22s %6.1fs%s" % (
                n, len(pairs), r["python"], r["sqlite"], r["status"].upper(),
                cell(r), r["seconds"] or 0, ("  " + r["note"]) if r.get("note") else ""))
        return r

    # Longest-expected first would be nicer; the order is Python-major so that
    # both workers are busy until the end.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        futs = [ex.submit(one, pair) for pair in pairs]
        for fut in futs:
            results.append(fut.result())
    wall = time.time() - t_start

    # Symbols the Pythons' _sqlite3 need that the old libraries lack.
    symbols = {}
    for p in present:
        for s in needed:
            miss = missing_symbols(python_path(p), builds[s]["path"])
            if miss:
                symbols["%s/%s" % (p, s)] = miss
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d"),
            "platform": "%s %s, %s" % (platform.system(), platform.machine(),
                                       platform.platform(terse=True)),
            "build_id": BUILD_ID, "cflags": CFLAGS, "cache": cache,
            "jobs": args.jobs, "wall_seconds": round(wall, 1),
            "build_seconds": round(t_built - t_start, 1),
            "preset": "ci" if args.ci else "custom" if (args.python or args.sqlite)
            else "full"}
    print_summary(results, pythons, sqlites, builds, wall)
    if symbols:
        say("")
        say("Lazy binding: functions each installed Python's _sqlite3 imports that "
            "a built SQLite lacks (a call to one aborts the process):")
        groups = {}
        for key, miss in symbols.items():
            groups.setdefault(tuple(miss), []).append(key)
        for miss, keys in sorted(groups.items(), key=lambda x: sorted(x[1])[0]):
            say("  %s: %s" % (", ".join(sorted(keys, key=lambda k: (vkey(k.split('/')[1]),
                                                                    vkey(k.split('/')[0])))),
                              " ".join(miss)))
    doc = {"meta": meta, "pythons": pythons, "sqlites": sqlites,
           "hosts": [dict(zip(("label", "python", "sqlite_shipped", "sqlite_tested"), h))
                     for h in HOSTS],
           "builds": builds, "missing_symbols": symbols, "results": results}
    targets = [os.path.join(os.path.abspath(args.out_dir), "results.json")]
    if args.json:
        targets.append(args.json)
    for t in targets:
        with open(t, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(results, pythons, sqlites, meta))
        say("Markdown table written to %s" % args.markdown)
    say("Results: %s" % ", ".join(targets))
    failed = [r for r in results if r["status"] not in NOT_FAILURES]
    say(closing_line(results))
    return 1 if failed else 0


def closing_line(results):
    """Tests summed over all pairs, as 'matrix: N passed, N failed, N skipped'.
    A pair that failed without a count (crash, timeout, wrong library, load
    failure) counts as one failed test, so 0 failed means every pair passed."""
    passed = failed = skipped = 0
    for r in results:
        if r["status"] in (STATUS_ABSENT, STATUS_UNSUPPORTED):
            continue
        if r.get("ran") is not None:
            passed += r["passed"]
            skipped += r["skipped"]
            failed += r["failures"] + r["errors"] + r["unexpected_successes"]
        if r["status"] not in NOT_FAILURES and (
                r.get("ran") is None or r["status"] != STATUS_FAIL
                or not (r["failures"] + r["errors"] + r["unexpected_successes"])):
            failed += 1
    return "matrix: %d passed, %d failed, %d skipped" % (passed, failed, skipped)


if __name__ == "__main__":
    sys.exit(main())
