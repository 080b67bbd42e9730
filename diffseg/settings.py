"""``--config FILE`` and ``--set KEY=VALUE``: every option of a command from a file or a list.

A command's settings are its options: the keys of a config file (JSON or YAML) and of
``--set`` are the long option names, with or without the dashes (``size``, ``kl-threshold``,
``keyframe_every``, ``memory``), and the values what the option takes (``--set
keyframe-every=auto``, ``{"size": 256, "refine": true, "kl-threshold": [1.1, 1.1, 1.1]}``).
A file may group its keys in sections of one level (``segmenter:``, ``tracker:``); the
section names are for the reader. ``diffseg run`` also takes the options of ``video`` and
``volume`` with a prefix (``--set video.memory=10``, ``volume.window: brain``), for its
videos and volumes. Precedence: the option's default < the config file < the
options typed on the command line < ``--set``. An unknown key, a value the option refuses or
an unreadable file is one error line naming it.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from diffseg_core.errors import InputError

#: options that are not settings: output control and the settings themselves
NOT_SETTINGS = {"help", "quiet", "verbose", "json", "config", "set"}


def add_settings_args(group: "argparse._ArgumentGroup") -> None:
    """The two options, for the common parent parser (SUPPRESS: a copy given before the
    subcommand is not reset by the subcommand's)."""
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="settings from a JSON or YAML file: {option: value} (see docs/core.md)")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=argparse.SUPPRESS,
                       help="one setting (repeatable): --set size=256 --set keyframe-every=auto")


def read_config_file(path: "str | Path") -> dict[str, Any]:
    """The ``{option: value}`` of a JSON or YAML file, sections of one level flattened."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {p}: cannot read it ({exc})") from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - json and yaml raise their own types
        raise InputError(f"--config {p}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                         f"({str(exc).splitlines()[0]})") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"--config {p}: expected a mapping of option: value; got {type(doc).__name__}")
    flat: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):  # a section: "section.key" (see `apply_settings`)
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[str(k)] = v
    return flat


def parse_set(items: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE (e.g. --set size=256)")
        out.append((key.strip(), value.strip()))
    return out


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option name (no dashes) -> action, for the settable options of ``parser``."""
    out: dict[str, argparse.Action] = {}
    for a in parser._actions:  # argparse has no public list of its actions
        longs = [s for s in a.option_strings if s.startswith("--")]
        if not longs or a.dest in NOT_SETTINGS or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        for s in longs:
            out[s[2:]] = a
    return out


#: a validation message's subject: ``TrackerConfig.keyframe_every must ...``, ``size must ...``
_SUBJECT = re.compile(r"\b(?:[A-Z]\w*Config\.)?([a-z_][a-z0-9_]*)(?= must\b)")


def name_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """A config validation message as the command line user sees it: the field it names
    becomes the option that sets it (``TrackerConfig.keyframe_every must be ...`` ->
    ``--keyframe-every must be ...``) when the command has one."""
    flags: dict[str, str] = {}
    rooted: dict[tuple[str, str], str] = {}
    for name, a in _options(parser).items():  # generated options: dest ``<root>__<path>``
        field = a.dest.split("__")[-1]
        rooted.setdefault((a.dest.split("__")[0], field), f"--{name}")
        if name == field.replace("_", "-"):  # a bare field name: the option spelt like it first
            flags[field] = f"--{name}"
        else:
            flags.setdefault(field, f"--{name}")

    def flag(m: "re.Match") -> str:
        cls = re.match(r"([A-Z]\w*)Config\.", m.group(0))
        root = cls.group(1).lower() if cls else None
        return rooted.get((root, m.group(1)), flags.get(m.group(1), m.group(0))) if root else \
            flags.get(m.group(1), m.group(0))

    return _SUBJECT.sub(flag, message)


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _convert(action: argparse.Action, key: str, value: Any) -> Any:
    """``value`` (a string from --set, any JSON/YAML value from a file) as the option takes it."""
    where = f"setting {key}={value!r}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            value = value.lower() in _TRUE
        if not isinstance(value, bool):
            raise InputError(f"{where}: --{key} is on or off: give true or false")
        if isinstance(action, argparse._StoreConstAction) and not isinstance(action, (
                argparse._StoreTrueAction, argparse._StoreFalseAction)):  # a generated switch
            if isinstance(action.const, bool):
                return action.const if value else not action.const
            return action.const if value else action.default  # off: the preset's value
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(value, bool) or value is None:
        value = str(value).lower() if isinstance(value, bool) else "none"
    if isinstance(value, list):
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            return [_convert_one(action, key, v, where) for v in value]
        value = ",".join(str(v) for v in value)
    return _convert_one(action, key, value, where)


def _convert_one(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    try:
        out = action.type(str(value)) if action.type is not None else str(value)  # as argparse would
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from exc
    if action.choices is not None and out not in action.choices:
        raise InputError(f"{where}: --{key} takes one of {', '.join(map(str, action.choices))}")
    return out


def defaults_of(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """A namespace holding every option's default (what parsing no option would give)."""
    return argparse.Namespace(**{a.dest: a.default for a in parser._actions if a.dest != argparse.SUPPRESS})


def apply_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str,
                   sections: "dict[str, argparse.ArgumentParser] | None" = None) -> dict[str, argparse.Namespace]:
    """Apply ``args.config`` and ``args.set`` to ``args`` (see the module docstring).

    Args:
        sections: ``{prefix: parser}``: keys ``prefix.option`` are options of that other
            command (``diffseg run``'s ``video.memory``, ``volume.window``).

    Returns:
        ``{prefix: namespace}``: for each prefix used, that command's defaults with its
        settings applied.
    """
    config, sets = getattr(args, "config", None), getattr(args, "set", None)
    if not config and not sets:
        return {}
    sections = sections or {}
    found: dict[str, argparse.Namespace] = {}
    tables: dict[int, dict[str, argparse.Action]] = {}  # option table per parser

    def target(key: str) -> tuple[str, argparse.Action, argparse.Namespace, argparse.ArgumentParser, str]:
        prefix, dot, rest = key.strip().partition(".")
        if dot and prefix in sections:
            p, cmd = sections[prefix], f"{command}: {prefix}"
            ns = found.setdefault(prefix, defaults_of(p))
            key = rest
        else:  # a section name is only for the reader
            p, cmd, ns = parser, command, args
            key = rest if dot else key
        options = tables.setdefault(id(p), _options(p))
        name = key.strip().lstrip("-")
        for cand in (name, name.replace("_", "-")):
            if cand in options:
                return cand, options[cand], ns, p, cmd
        near = difflib.get_close_matches(name.replace("_", "-"), options, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else f" (`diffseg {command} --help` lists them)"
        more = f"; options of other commands take a prefix: {', '.join(f'{s}.' for s in sections)}" if sections \
            and not dot else ""
        raise InputError(f"setting {key!r}: `diffseg {cmd}` has no option --{name}{hint}{more}")

    if config:
        for key, value in read_config_file(config).items():
            name, act, ns, p, _ = target(key)
            if getattr(ns, act.dest, None) == p.get_default(act.dest):  # not typed on the command line
                setattr(ns, act.dest, _convert(act, name, value))
    for key, value in parse_set(sets or ()):
        name, act, ns, _, _ = target(key)
        setattr(ns, act.dest, _convert(act, name, value))
    return found
