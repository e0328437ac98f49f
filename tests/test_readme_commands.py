"""Every `train_hgn.py`, `train_nhf.py` and `python -m hgn.predict` command in the README parses.

Commands are read from the README's fenced code blocks (comments after `#` dropped, `[...]`
optional parts removed); each must parse with its program's own parser, so a renamed or
removed flag in the code breaks this test rather than a reader's copy-paste.

The README's flag reference (one table per program) must be what the parsers say.
"""
import argparse
import importlib
import importlib.util
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


def _dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flag_reference_is_the_parsers():
    # The README's flag tables are what `python3 dev.py flags` writes from the three parsers:
    # a flag added, renamed or re-documented in the code without that command fails here.
    dev = _dev()
    tables = dev.readme_flag_tables((ROOT / "README.md").read_text())
    assert set(tables) == set(dev.FLAG_PROGRAMS)
    for program in dev.FLAG_PROGRAMS:
        assert tables[program] == dev.flag_reference(program), \
            f"the README's flag table of {program} is out of date: run `python3 dev.py flags`"


def test_the_flag_reference_lists_every_flag():
    # Each option string of each parser is in its table, and a stale table fails the comparison.
    dev = _dev()
    for program, module in dev.FLAG_PROGRAMS.items():
        table = dev.flag_reference(program)
        parser = importlib.import_module(module).build_parser()
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help") and action.help != argparse.SUPPRESS:
                    assert f"`{flag}`" in table, (program, flag)
    stale = (ROOT / "README.md").read_text().replace("| `--n-steps` |", "| `--n-step` |")
    assert dev.readme_flag_tables(stale)["train_nhf.py"] != dev.flag_reference("train_nhf.py")
