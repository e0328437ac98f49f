#!/usr/bin/env python3
"""One entry point for setting up and running the project.

    python3 dev.py demo    # create/reuse .venv, then a short HGN run on pendulum and NHF on mixture
    python3 dev.py test    # create/reuse .venv, then the whole test suite
    python3 dev.py flags   # rewrite the README's flag reference from the programs' parsers

The virtual environment lives in `.venv/` inside the checkout. It is (re)installed from
`requirements.txt` whenever that file or `pyproject.toml` changes; otherwise it is reused.
Extra arguments after the command go to pytest (for `test`; `-n 0` runs the tests in one process).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".requirements.sha256"
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _digest() -> str:
    h = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def _run(cmd: list, **kwargs) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kwargs)


def ensure_venv() -> None:
    if sys.version_info[:2] != (3, 11):
        print(f"warning: this project is pinned and tested on Python 3.11; you run {sys.version.split()[0]}",
              file=sys.stderr)
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = _digest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    steps = [
        [PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
        [PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", "."],
    ]
    for cmd in steps:
        if _run(cmd) != 0:
            sys.exit(f"dev.py: installing dependencies failed ({' '.join(map(str, cmd[2:]))})")
    STAMP.write_text(digest)


# The README's flag reference: one table per program, between these markers, from its parser.
FLAG_PROGRAMS = {"train_hgn.py": "hgn.cli", "train_nhf.py": "nhf.cli", "python -m hgn.predict": "hgn.predict"}
FLAGS_BEGIN, FLAGS_END = "<!-- flags of {} (python3 dev.py flags writes this table) -->", "<!-- end of flags -->"


def flag_reference(program: str) -> str:
    """The Markdown flag table of `program` (a key of FLAG_PROGRAMS), from its own parser."""
    import importlib

    from common.config import flag_table

    return flag_table(importlib.import_module(FLAG_PROGRAMS[program]).build_parser())


def readme_flag_tables(text: str) -> dict:
    """`{program: table}` as the README `text` holds them between the markers."""
    found = {}
    for program in FLAG_PROGRAMS:
        begin = FLAGS_BEGIN.format(program)
        if begin in text:
            found[program] = text.split(begin, 1)[1].split(FLAGS_END, 1)[0].strip("\n") + "\n"
    return found


def write_flag_tables(path: Path) -> None:
    text = path.read_text()
    for program in FLAG_PROGRAMS:
        begin = FLAGS_BEGIN.format(program)
        if begin not in text:
            raise SystemExit(f"{path}: no {begin!r} marker; add one (and {FLAGS_END!r}) where the table goes")
        head, rest = text.split(begin, 1)
        text = head + begin + "\n\n" + flag_reference(program) + "\n" + FLAGS_END + rest.split(FLAGS_END, 1)[1]
    path.write_text(text)
    print(f"wrote the flag tables of {', '.join(FLAG_PROGRAMS)} into {path}")


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def main(argv: list) -> int:
    if argv[:1] == ["_write_flags"]:  # run by `flags` with the environment's interpreter
        sys.path.insert(0, str(ROOT))
        write_flag_tables(ROOT / "README.md")
        return 0
    if not argv or argv[0] not in ("demo", "test", "setup", "flags"):
        print(__doc__.strip())
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    if command == "setup":
        return 0
    if command == "flags":
        return _run([PY, str(Path(__file__).resolve()), "_write_flags"], env=_env())
    if command == "test":
        # Two processes, each taking whole files (module fixtures train their runs once): graph
        # tracing is single-threaded, so two overlap well on 2 cores (measured: 15 min 16 s
        # against 20 min 58 s in one process). `-n 0` after `test` runs in one process.
        return _run([PY, "-m", "pytest", "tests", "-n", "2", "--dist", "loadfile", *rest], env=_env())
    # demo: the two main jobs on small embedded defaults, into runs/demo-*.
    for cmd in ([PY, "train_hgn.py", "--dataset", "pendulum", "--run-dir", "runs/demo-hgn", *rest],
                [PY, "train_nhf.py", "--target", "mixture", "--preset", "small", "--run-dir", "runs/demo-nhf", *rest]):
        if not (ROOT / cmd[1]).exists():
            print(f"skipping {cmd[1]}: not in this checkout yet")
            continue
        rc = _run(cmd, env=_env())
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
