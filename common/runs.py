"""Run directories that survive crashes: atomic writes and one-line command-line errors.

Everything a run writes that another process may read (metrics, configs, exports) is written
under a temporary name in the same folder and then renamed, so a kill at any moment leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def refresh_export_command(program: str, run_dir: PathLike) -> str:
    """The command that re-evaluates a run and rewrites its `saved_model/` (`program`:
    `train_hgn.py` or `train_nhf.py`), for the messages about a missing or stale export."""
    return f"python {program} --run-dir {run_dir} --resume --eval-only --export"


def stale_export_note(program: str, run_dir: PathLike) -> str:
    """What a run resumed with `--no-export` says about the earlier `saved_model/` it keeps."""
    return (f"saved_model/ holds an earlier step's weights (--no-export); refresh it with: "
            f"{refresh_export_command(program, run_dir)}")


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN or Inf; nothing from that step was saved."""


class RunError(RuntimeError):
    """A user-facing failure with a one-line explanation (bad run dir, mismatched checkpoint...)."""


def check_resumable(saved: dict, now: dict, resumable: Sequence[str], path: PathLike, flag: str = "--resume") -> None:
    """Raises `RunError` naming every field, other than the `resumable` ones, in which the config
    `now` differs from the run's `saved` one (both as `common.config.to_dict` writes them; `path`
    is the saved file, named in the message)."""
    changed = sorted(k for k in now if k not in resumable and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise RunError(f"{flag} with a different config than {str(path)!r}: {details}")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


HISTORY_FILE = "history.json"  # a run's logged training scalars: a JSON list of {"step": ..., ...}


def load_history(run_dir: PathLike, upto: int, name: str = HISTORY_FILE) -> list:
    """The entries of `run_dir/<name>` (default history.json) with step <= `upto` (empty for a new run).

    A resumed run keeps what its checkpoint covers and re-logs the steps it redoes.
    """
    path = Path(run_dir) / name
    if not path.is_file():
        return []
    return [h for h in json.loads(path.read_text()) if h["step"] <= upto]


def spent_training_seconds(*records: Sequence[dict]) -> float:
    """The training time a resumed run has already spent: the latest `train_seconds` among the
    entries of `records` (history and test-curve lists, kept up to the restored step), 0 where
    none has one (a new run, or a run from before the field). At most one logging interval of
    training goes uncounted, so a resumed budget errs by that much on the long side."""
    return max((float(e["train_seconds"]) for entries in records for e in entries if "train_seconds" in e),
               default=0.0)


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yields a temporary sibling folder; on success it replaces `path` in one rename.

    Used for SavedModel exports: a crash mid-export leaves the previous export intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable_dir(path: PathLike, flag: str = "--run-dir") -> Path:
    """Creates `path` if needed and checks that files can be written there.

    Raises:
      RunError: naming `flag` and the folder when it cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):  # swept by the run that holds the folder
            os.unlink(probe)
    except OSError as e:
        raise RunError(f"{flag} {str(path)!r} is not writable: {e.strerror or e}") from None
    return path


# What a SIGKILL inside one of this module's writes leaves in a run folder, and nothing else:
# `tempfile`'s names (8 random characters of [a-z0-9_]) for the temporaries of `atomic_write_bytes`
# and `atomic_directory` (".<name>.XXXXXXXX.tmp") and the probe of `check_writable_dir`; and the
# previous export an `atomic_directory` killed between its two renames left as ".saved_model.old".
_TEMPORARY = re.compile(r"^\.(.+\.[a-z0-9_]{8}\.tmp|write-probe\.[a-z0-9_]{8})$")
EXPORT_DIR = "saved_model"  # where both models' runs export (`atomic_directory`)

# The folders this process holds (`claim_run_dir`), closed in a forked child (e.g. the dataset
# generator's worker pool), which would otherwise share the lock and hold it after this process dies.
_CLAIMED: set = set()


def _close_claims_in_child() -> None:
    for fd in _CLAIMED:
        with contextlib.suppress(OSError):
            os.close(fd)
    _CLAIMED.clear()


os.register_at_fork(after_in_child=_close_claims_in_child)


@contextlib.contextmanager
def claim_run_dir(run_dir: PathLike, flag: str = "--run-dir") -> Iterator[Path]:
    """Holds `run_dir` for this process: a second run on the same folder is refused instead of
    interleaving its checkpoints and files with this one's.

    The claim is an exclusive `flock` on the folder itself, which the kernel drops when the
    process ends however it ends (SIGKILL included): a crashed run never leaves the folder
    claimed, and no lock file is written, so a refused run changes no byte of it. The lock is
    local to the machine (on NFS too: Linux does not carry a folder's `flock` to the server).
    Once it holds the claim, it sweeps what an interrupted run left (`sweep_temporaries`), which
    only the holder may do: another writer's temporary would be live. On a file system that
    cannot `flock` it warns and runs without the claim and the sweep.

    Raises:
      RunError: another process holds `run_dir` (the message names its pid and command where
        Linux's /proc tells them), or the folder cannot be opened.
    """
    path = Path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise RunError(f"{flag} {str(path)!r} cannot be opened: {e.strerror or e}") from None
    owner = os.getpid()  # a forked child closed its copy of `fd` at the fork; it must not close that number again
    try:
        unsupported = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunError(f"{flag} {str(path)!r} is in use by a run that has not ended ({_lock_holder(fd)}); "
                               f"wait for it to end or stop it, then --resume, or pick another {flag}") from None
            unsupported = e.strerror or str(e)
        if unsupported:
            print(f"warning: {flag} {str(path)!r} cannot be locked ({unsupported}): nothing stops a second run on it",
                  file=sys.stderr)
        else:
            _CLAIMED.add(fd)
            sweep_temporaries(path)
        yield path
    finally:
        if os.getpid() == owner:
            _CLAIMED.discard(fd)
            os.close(fd)  # drops the flock


def _lock_holder(fd: int) -> str:
    """"pid N: its command" of the process holding a flock on the folder open as `fd`, read from
    /proc/locks and /proc/N/cmdline; "another process" where they do not tell. /proc/locks names
    the file system's device, which `stat` reports differently on btrfs subvolumes: then the one
    flock holder of that inode number is taken."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            flocks = [(int(fields[4]), fields[5]) for fields in map(str.split, f)
                      if len(fields) > 5 and fields[1] == "FLOCK"]
        pids = ([pid for pid, dev in flocks if dev == device]
                or [pid for pid, dev in flocks if dev.rsplit(":", 1)[-1] == str(st.st_ino)])
        if len(set(pids)) != 1:
            return "another process"
        with open(f"/proc/{pids[0]}/cmdline", "rb") as f:
            command = " ".join(f.read().decode("utf-8", "replace").replace("\0", " ").split())
    except (OSError, ValueError):
        return "another process"
    return f"pid {pids[0]}: {command if len(command) <= 300 else command[:297] + '...'}"


def sweep_temporaries(run_dir: PathLike) -> list:
    """Removes what a run killed inside a write left in `run_dir` (where every run writes its files
    and exports) and returns it: the hidden temporaries of `atomic_write_bytes`,
    `atomic_directory` and `check_writable_dir`, by their exact `tempfile` names. An
    `atomic_directory` export killed between its two renames left the previous export as
    `.saved_model.old` and none as `saved_model`: that one is put back, not removed. Call it only
    while holding `claim_run_dir`."""
    swept = []
    for p in sorted(Path(run_dir).iterdir()):
        if p.name == f".{EXPORT_DIR}.old" and p.is_dir() and not p.is_symlink():
            target = p.with_name(EXPORT_DIR)
            if target.exists():
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.replace(p, target)
            swept.append(p)
        elif _TEMPORARY.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            swept.append(p)
    return swept


def holds_checkpoints(checkpoint_dir: PathLike) -> bool:
    """Whether a run's checkpoint folder exists and holds anything (a new run must not reuse it)."""
    path = Path(checkpoint_dir)
    return path.is_dir() and any(path.iterdir())


def restore_newest_readable(manager, required: bool, what: str = "model") -> Optional[str]:
    """Restores the newest checkpoint of a `tf.train.CheckpointManager` that can be read.

    A checkpoint that cannot be read (a truncated or corrupted file, left by a full disk or a
    copy gone wrong) is skipped with a warning on stderr and the next older one is tried, so
    a run resumes from its last complete checkpoint.

    Args:
      manager: the run's `tf.train.CheckpointManager` (its `checkpoint` is restored in place).
      required: raise when nothing could be restored (`--resume`); otherwise return None.
      what: named in error messages ("this model's config").

    Returns:
      The restored checkpoint's path, or None when there is none and not `required`.

    Raises:
      RunError: `required` and no checkpoint exists, or none of them can be restored (the
        message names the newest one and why).
    """
    candidates = list(reversed(manager.checkpoints))
    if not candidates:
        if required:
            raise RunError(f"--resume: no checkpoint in {manager.directory!r}")
        return None
    first_error = None
    for path in candidates:
        try:
            # Every object of ours must be in the file; values in the file that are restored
            # elsewhere (e.g. NHF's learning-rate scale) are expected, not warned about at exit.
            manager.checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
            if first_error is not None:
                print(f"warning: newest checkpoint unreadable ({first_error}); resumed from {path}", file=sys.stderr)
            return path
        except Exception as e:  # any reader failure: corrupted, truncated, or from another config
            reason = " ".join(str(e).split()) or type(e).__name__
            first_error = first_error or f"{candidates[0]!r}: {type(e).__name__}: {reason[:200]}"
    raise RunError(f"no checkpoint in {manager.directory!r} can be restored for {what}; newest "
                   f"{first_error}. The files may be corrupted or from another config: start a new --run-dir")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up chatter (oneDNN, CUDA probing) sent to /dev/null.

    Those lines are written straight to file descriptor 2 before any Python logging is set up,
    so environment variables cannot silence them. Python exceptions still propagate. The
    device list is probed too (that is where the CUDA probe logs) without initialising logical
    devices, so a CPU can still be split for `tf.distribute` afterwards.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        import tensorflow as tf  # noqa: F401
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


MAX_MESSAGE = 600  # characters of an error message shown without --debug


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Runs a command-line `main(argv)`, turning errors into one line on stderr.

    With `--debug` in argv the full traceback is shown instead. Exit codes: 0 success, 1 a
    failure during the run, 2 bad arguments (argparse's convention), 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    prog = Path(sys.argv[0]).name or "command"
    try:
        return int(main(argv) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the one place that turns any failure into a short message
        if debug:
            traceback.print_exc()
        else:
            message = " ".join(str(e).split()) or type(e).__name__
            if len(message) > MAX_MESSAGE:  # e.g. a TensorFlow error that prints whole tensors
                # Keep both ends: what failed comes first, what to do about it often last.
                message = message[: MAX_MESSAGE // 2] + " ... " + message[-MAX_MESSAGE // 2:]
            print(f"{prog}: error: {message} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
