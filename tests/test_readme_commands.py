"""Every `train_hgn.py`, `train_nhf.py` and `python -m hgn.predict` command in the README parses.

Commands are read from the README's fenced code blocks (comments after `#` dropped, `[...]`
optional parts removed); each must parse with its program's own parser, so a renamed or
removed flag in the code breaks this test rather than a reader's copy-paste.
"""
import re
import shlex
from pathlib import Path

import pytest

from hgn import cli as hgn_cli
from hgn import predict as hgn_predict
from nhf import cli as nhf_cli

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"train_hgn.py": hgn_cli.build_parser, "train_nhf.py": nhf_cli.build_parser,
           "-m hgn.predict": hgn_predict.build_parser}


def _commands():
    found, inside = [], False
    for raw in (ROOT / "README.md").read_text().splitlines():
        if raw.startswith("```"):
            inside = not inside
            continue
        if inside:
            line = raw
            line = re.sub(r"\[[^\]]*\]", "", line.split("  #")[0].split(" # ")[0]).strip()
            for program in PARSERS:
                prefix = f"python {program} "
                if line.startswith(prefix) or line == prefix.strip():
                    found.append((program, shlex.split(line[len(prefix):]) if line != prefix.strip() else []))
    return found


COMMANDS = _commands()


def test_the_readme_has_commands_of_every_program():
    assert {program for program, _ in COMMANDS} == set(PARSERS), COMMANDS


@pytest.mark.parametrize("program, argv", COMMANDS, ids=[" ".join([p, *a])[:60] for p, a in COMMANDS])
def test_readme_command_parses(program, argv):
    parser = PARSERS[program]()
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 0
        return
    parser.parse_args(argv)  # a bad flag exits with status 2 and fails the test


def test_a_bad_flag_fails_to_parse():
    with pytest.raises(SystemExit) as exit_info:
        PARSERS["train_hgn.py"]().parse_args(["--dataset", "pendulum", "--no-such-flag"])
    assert exit_info.value.code == 2
