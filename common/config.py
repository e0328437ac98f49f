"""One config mechanism for every command line: dataclasses with named presets.

A config is a frozen dataclass whose fields carry their help text in `metadata["help"]`.
`config_parser` turns it into an `argparse` parser with `--preset NAME` and one `--field-name`
flag per field; `parse_config` applies the preset first and then only the flags the user gave.

    @dataclasses.dataclass(frozen=True)
    class TrainConfig:
        steps: int = field(1000, "training steps")
        lr: float = field(1e-3, "Adam learning rate")

        def validate(self):
            positive(self, "steps", "lr")

    PRESETS = {"small": TrainConfig(steps=100), "paper": TrainConfig()}
    config, args = parse_config(TrainConfig, PRESETS, default_preset="small")

Field types understood: int, float, str, bool (`--flag/--no-flag`), Optional[...] of those
(`none` on the command line), and tuples of int/float/str (comma separated: `--widths 64,64`).
`field(..., aliases=("--lr",))` adds other spellings of a flag (old names kept working); a saved
config that uses an alias as its key still loads (`from_dict`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

C = TypeVar("C")
_UNSET = object()


def field(default: Any, help: str, **kwargs) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with help text (tuples and other immutables as defaults)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def positive(config, *names: str) -> None:
    """Raises `ValueError` naming the first of `names` whose value is not > 0."""
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        if any(v <= 0 for v in values):
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def non_negative(config, *names: str) -> None:
    """Raises `ValueError` naming the first of `names` whose value is < 0."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")


# The largest serving cap: requests carry their counts (batch, n, n_steps) as int32.
MAX_SERVING_CAP = 2 ** 31 - 1


def serving_caps(config, *names: str) -> None:
    """Raises `ValueError` naming the first of `names` (serving caps; None: automatic) that is
    not in [1, `MAX_SERVING_CAP`]."""
    positive(config, *names)
    for name in names:
        value = getattr(config, name)
        if value is not None and value > MAX_SERVING_CAP:
            raise ValueError(f"--{name.replace('_', '-')} must be <= {MAX_SERVING_CAP:,} (requests carry int32 "
                             f"counts), got {value:,}")


def one_of(config, name: str, valid: Sequence[str]) -> None:
    """Raises `ValueError` if `config.<name>` is not in `valid`, listing the valid values."""
    value = getattr(config, name)
    if value not in valid:
        raise ValueError(f"unknown --{name.replace('_', '-')} {value!r}; valid: {', '.join(valid)}")


def _strip_optional(tp) -> Tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _scalar_parser(tp, flag: str) -> Callable[[str], Any]:
    names = {int: "an integer", float: "a number", str: "a string"}
    if tp not in names:
        raise TypeError(f"config field {flag}: unsupported type {tp}")

    def convert(text: str):
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {names[tp]}, got {text!r}") from None
        if tp is float and not math.isfinite(value):  # nan, inf, -inf
            raise argparse.ArgumentTypeError(f"{flag} expects a finite number, got {text!r}")
        return value

    return convert


def _value_parser(tp, flag: str) -> Callable[[str], Any]:
    inner, optional = _strip_optional(tp)
    if typing.get_origin(inner) is tuple:
        item_type = typing.get_args(inner)[0]
        item = _scalar_parser(item_type, flag)

        def convert_tuple(text: str):
            if optional and text.lower() == "none":
                return None
            parts = [t for t in text.split(",") if t.strip()]
            return tuple(item(t.strip()) for t in parts)

        return convert_tuple
    scalar = _scalar_parser(inner, flag)
    if not optional:
        return scalar

    def convert_optional(text: str):
        if text.lower() == "none":
            return None
        try:
            return scalar(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (or none)") from None

    return convert_optional


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `prog: error: <what and why> (see --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _StorePreset(argparse.Action):
    """`--preset NAME`, remembering that it was given (its default is the default preset's name)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, "_preset_given", True)


def resume_presets(args: argparse.Namespace, presets: Mapping[str, C], saved: C) -> Mapping[str, C]:
    """The presets a resumed run's config is resolved from (`config_from_args`): its `saved`
    config, or, where `--preset` was given, the `presets` themselves; then every field that
    differs from the saved run's is refused (`common.runs.check_resumable`), as for any flag."""
    return presets if getattr(args, "_preset_given", False) else {args.preset: saved}


def config_parser(config_cls: Type[C], presets: Mapping[str, C], default_preset: str,
                  description: str = "", parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """An argparse parser with `--preset` and one flag per config field.

    Extra, non-config flags (run directory, `--resume`, ...) may be added to the result.
    """
    if default_preset not in presets:
        raise ValueError(f"default preset {default_preset!r} is not one of {sorted(presets)}")
    parser = parser or ArgumentParser(description=description,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default=default_preset, action=_StorePreset,
                        help=f"named configuration; any flag below overrides one of its fields (default: {default_preset})")
    group = parser.add_argument_group("config fields (defaults shown are the default preset's)")
    hints = typing.get_type_hints(config_cls)
    base = presets[default_preset]
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        aliases = tuple(f.metadata.get("aliases", ()))
        help_text = f.metadata.get("help", "") + (f" (alias: {', '.join(aliases)})" if aliases else "")
        default = getattr(base, f.name)
        tp = hints[f.name]
        if tp is bool:
            group.add_argument(flag, *aliases, dest=f.name, action=argparse.BooleanOptionalAction, default=_UNSET,
                               help=f"{help_text} (default: {default})")
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            group.add_argument(flag, *aliases, dest=f.name, type=_value_parser(tp, flag), default=_UNSET,
                               metavar=f.name.upper(), help=f"{help_text} (default: {shown})")
    return parser


def flag_table(parser: argparse.ArgumentParser) -> str:
    """`parser`'s arguments as a Markdown table, group by group in the order `--help` lists them:
    the flag (or positional name) and its help text, which ends in the default. The README's flag
    reference is this table for each program (`python3 dev.py flags` writes it; a test compares)."""
    lines = ["| flag | what it sets |", "|---|---|"]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines.append(f"| **{group.title}** | |")
        for action in actions:
            names = action.option_strings or [action.metavar or action.dest]
            text = " ".join((action.help or "").split()).replace("|", "\\|")
            lines.append(f"| {' '.join(f'`{name}`' for name in names)} | {text} |")
    return "\n".join(lines) + "\n"


def given(args: argparse.Namespace, name: str) -> bool:
    """Whether the config field `name` was given on the command line (not left to the preset)."""
    return getattr(args, name, _UNSET) is not _UNSET


def config_from_args(config_cls: Type[C], presets: Mapping[str, C], args: argparse.Namespace) -> C:
    """The preset named by `args.preset` with every given flag applied, validated."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
                 if getattr(args, f.name, _UNSET) is not _UNSET}
    config = dataclasses.replace(presets[args.preset], **overrides)
    if hasattr(config, "validate"):
        config.validate()
    return config


def parse_config(config_cls: Type[C], presets: Mapping[str, C], default_preset: str,
                 argv: Optional[Sequence[str]] = None, description: str = "") -> Tuple[C, argparse.Namespace]:
    """Parses `argv` into `(config, args)`; a bad value exits with status 2 and a one-line reason."""
    parser = config_parser(config_cls, presets, default_preset, description)
    args = parser.parse_args(argv)
    try:
        return config_from_args(config_cls, presets, args), args
    except ValueError as e:
        parser.error(str(e))


def to_dict(config) -> Dict[str, Any]:
    """A JSON-ready dict of the config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(config_cls: Type[C], values: Mapping[str, Any]) -> C:
    """Rebuilds a config saved by `to_dict` (lists back to tuples; unknown keys rejected).

    A key spelled as one of a field's `aliases` (a field renamed since the config was saved,
    e.g. `lr` for `learning_rate`) is read as that field.
    """
    renamed = {alias.lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(config_cls)
               for alias in f.metadata.get("aliases", ())}
    values = {renamed.get(k, k): v for k, v in values.items()}
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config fields {unknown} for {config_cls.__name__}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
