"""Command-line options of the segmenter, shared by `image`, `video`, `volume` and `run`."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import NamingConfig, SegmenterConfig
from .errors import InputError

#: The captioner of ``--caption`` (BLIP base, as the original DiffSeg's semantic mode).
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass
class CommandResult:
    """What a subcommand did, reported the same way by every command: ``line`` (one human
    sentence) on stderr, ``doc`` (JSON-able) on stdout with ``--json``, ``code`` the exit code.

    Attributes:
        line: ``"diffseg video: 24 frames, 5 tracks in 3.8 s -> out"``.
        doc: the machine summary (counts, paths, seconds).
        code: 0 ok, 2 when something failed (``line`` then says what).
    """

    line: str
    doc: dict = field(default_factory=dict)
    code: int = 0


def add_segmenter_args(parser: argparse.ArgumentParser) -> None:
    """Add every `SegmenterConfig` option (generated: `add_options`) plus the vocabulary's
    other sources (``--vocab-file``, ``--caption``, ``--captioner``) to ``parser``."""
    add_options(parser, SegmenterConfig(), "segmenter (DiffSeg)", "segmenter")
    n = next(g for g in parser._action_groups if g.title.startswith("names"))
    n.add_argument("--vocab-file", metavar="FILE", help="the words, one per line ('#' comments)")
    n.add_argument("--caption", action="store_true",
                   help="add the nouns of a caption of the image (video: first frame; volume: middle slice) "
                        "to the vocabulary (needs --captioner's weights)")
    n.add_argument("--captioner", default=DEFAULT_CAPTIONER, metavar="MODEL",
                   help="BLIP captioning model for --caption: hub id or local folder [%(default)s]")


def segmenter_config_from_args(args: argparse.Namespace,
                               caption_image: "Callable[[], Any] | None" = None) -> SegmenterConfig:
    """Build a validated `SegmenterConfig` from parsed `add_segmenter_args` options.

    Args:
        caption_image: with ``--caption``, gives the uint8 RGB image whose caption's nouns
            join the vocabulary (a video's first frame, a volume's middle slice); None where
            a command cannot caption (then ``--caption`` is an error).
    """
    cfg = options_config(args, SegmenterConfig(), "segmenter")
    extra: tuple[str, ...] = ()
    if getattr(args, "caption", False):
        if caption_image is None:
            raise InputError("--caption is not available with this command (each input would need its own "
                             "vocabulary): give the words with --vocab or --vocab-file")
        from .caption import Captioner

        extra = Captioner(args.captioner, cfg.device).nouns(caption_image())
    return dataclasses.replace(cfg, naming=naming_config_from_args(args, extra, cfg.naming))


def naming_config_from_args(args: argparse.Namespace, extra: "tuple[str, ...]" = (),
                            base: "NamingConfig | None" = None) -> NamingConfig:
    """``base`` (default: the ``--vocab`` / voting options given) with the words of
    ``--vocab-file`` and ``extra`` (e.g. a caption's nouns) added; no words: no names."""
    from .naming import parse_vocabulary, read_vocabulary

    base = base if base is not None else options_config(args, SegmenterConfig(), "segmenter").naming
    words = list(base.vocabulary)
    if getattr(args, "vocab_file", None):
        words += read_vocabulary(args.vocab_file)
    words += list(extra)
    return dataclasses.replace(base, vocabulary=parse_vocabulary(words) if words else ())


def _attribute_help(cls: type) -> dict[str, str]:
    """``{field: first sentence}`` from the ``Attributes:`` section of ``cls``'s docstring."""
    import inspect
    import re

    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            name, text = m.group(1), m.group(2)
            out[name] = text
        elif name and line.startswith("        "):
            out[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return {k: _first_sentence(v.replace("``", "")) for k, v in out.items()}


def _first_sentence(text: str) -> str:
    """Up to the first ``.`` or ``;`` followed by a space outside parentheses."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch in ".;" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i]
    return text.rstrip(".;")


class _Unset:
    """The default of every generated option: "not given" (None is a value some options
    take: ``--background none``, ``--axis auto``)."""

    def __repr__(self) -> str:
        return "unset"


UNSET = _Unset()


def add_options(parser: argparse.ArgumentParser, preset: Any, title: str, root: str, *,
                skip: "tuple[str, ...]" = ()) -> None:
    """One command-line option per field of a config dataclass, declared by the dataclass.

    Every field of ``preset`` (an instance: its values are the defaults shown) becomes an
    option, nested config dataclasses included (one argument group each): the flag is
    ``--field-name`` unless the field's metadata says otherwise (``cli(flag=...)``, see
    `diffseg_core.config.cli`), the help is the first sentence of the field's entry in the
    class docstring's ``Attributes:``, choices come from ``Literal`` hints, the type from the
    hint or ``cli(type=...)``; a bool becomes a switch to the value it does not have in the
    preset (``--refine``; ``--no-montage``). A field marked ``cli(False)`` or named in
    ``skip`` (its dotted path, e.g. ``"capture.layers"``) gets no option.

    Options left out keep the preset's value: every option defaults to `UNSET` and
    `options_config` applies only those given. Dests are ``<root>__<path>`` (``__`` between
    levels), so that two configs of one command cannot collide.
    """
    _add_options(parser, preset, title, f"{root}__", "", frozenset(skip))


def _add_options(parser: argparse.ArgumentParser, obj: Any, title: str, dest: str, path: str,
                 skip: frozenset) -> None:
    import dataclasses
    import typing

    cls = type(obj)
    helps = _attribute_help(cls)
    hints = typing.get_type_hints(cls, include_extras=False)
    group = None
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli", {})
        key = path + f.name
        if meta is False or key in skip:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _add_options(parser, value, meta.get("title", f"{title}: {f.name}"), f"{dest}{f.name}__", key + ".", skip)
            continue
        if group is None:
            group = parser.add_argument_group(title)
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        shown = value if not isinstance(value, tuple) else ",".join(str(v) for v in value) or "none"
        kw: dict[str, Any] = {"default": UNSET, "dest": dest + f.name,
                              "help": f"{meta.get('help', helps.get(f.name, ''))} [{shown}]".replace("%", "%%")}
        hint = hints[f.name]
        if "const" in meta:
            kw.update(action="store_const", const=meta["const"])
        elif hint is bool:
            if flag == "--" + f.name.replace("_", "-") and value:
                flag = "--no-" + f.name.replace("_", "-")
            kw.update(action="store_const", const=not value)
            kw["help"] = kw["help"].rsplit(" [", 1)[0]
            if value and "help" not in meta:
                kw["help"] = "turn off: " + kw["help"]
        elif "type" in meta:
            kw.update(type=argparse_type(meta["type"]), metavar=meta.get("metavar", f.name.upper()))
        elif typing.get_origin(hint) is typing.Literal:
            kw["choices"] = typing.get_args(hint)
        else:
            base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            kw.update(type=base[0] if base[0] in (int, float, str) else str, metavar=meta.get("metavar", f.name.upper()))
        group.add_argument(flag, *meta.get("aliases", ()), **kw)


def argparse_type(parse: Any) -> Any:
    """``parse`` as an argparse type: its own error message (not argparse's generic one)."""
    def typed(text: str) -> Any:
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = getattr(parse, "__name__", "value")
    return typed


def options_config(args: argparse.Namespace, preset: Any, root: str) -> Any:
    """``preset`` with the options of `add_options` given on the command line (or through
    ``--set`` / ``--config``) applied; validated by the dataclasses (InputError)."""
    import dataclasses

    def build(obj: Any, dest: str) -> Any:
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                new = build(value, f"{dest}{f.name}__")
                if new is not value:
                    changes[f.name] = new
            else:
                given = getattr(args, dest + f.name, UNSET)
                if given is not UNSET:
                    changes[f.name] = tuple(given) if isinstance(value, tuple) and isinstance(given, list) else given
        return dataclasses.replace(obj, **changes) if changes else obj

    try:
        return build(preset, f"{root}__")
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc
