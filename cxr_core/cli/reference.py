"""docs/cli.md, written from the argparse parser itself so that it cannot drift from the commands.

    python -m cxr_core.cli.reference            # rewrite docs/cli.md
    python -m cxr_core.cli.reference --check    # exit 1 when docs/cli.md differs from the parser

tests/test_docs.py runs the check: a new command or flag fails it until the file is rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import PROJECT_ROOT

CLI_DOC = PROJECT_ROOT / "docs" / "cli.md"
PROG = "python -m cxr_core"
INTRO = """# Command line reference

Everything the dashboard shows can also be had from a terminal: `{prog} COMMAND`. Each command's `--help`
says the same as this page, which is generated from the parser (`python -m cxr_core.cli.reference`), so it
lists every command and flag there is. Errors a person can fix print one line to stderr and exit 2.

Without `--data`, commands use `$CXR_DATA_DIR`, else the synthetic demo set; without `--runs`, the run store
is `$CXR_RUNS_DIR`, else `./runs`. `{prog} --verbose COMMAND ...` shows TensorFlow's own start-up lines.
"""


def _value(action) -> str:
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.metavar or action.dest.upper()


def _invocation(action) -> str:
    """How a person writes the argument: `--epochs N`, `{kaggle,...}`, `FILE ...`."""
    if not action.option_strings:
        name = action.metavar or action.dest
        return f"{name} ..." if action.nargs in ("+", "*") else name
    flags = ", ".join(action.option_strings)
    return flags if action.nargs == 0 else f"{flags} {_value(action)}"


def _usage(name: str, parser: argparse.ArgumentParser) -> str:
    parts = []
    for action in _arguments(parser):
        text = _invocation(action).split(", ")[-1] if action.option_strings else _invocation(action)
        parts.append(text if action.required or not action.option_strings else f"[{text}]")
    return " ".join([PROG, name, *parts])


def _arguments(parser: argparse.ArgumentParser) -> list:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]


def _help(action) -> str:
    text = (action.help or "").replace("%%", "%")
    if action.option_strings and action.nargs != 0 and action.default not in (None, False) and "default" not in text:
        text = f"{text} (default: {action.default})".strip()
    if action.required and action.option_strings:
        text = f"Required: {text}".strip()
    return text.replace("|", "\\|")


def commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand, in the order `--help` lists them."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    return [(name, helps.get(name) or "", p) for name, p in sub.choices.items()]


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole of docs/cli.md for `parser` (default: the project's)."""
    if parser is None:
        from . import parser as project_parser

        parser = project_parser()
    found = commands(parser)
    lines = [INTRO.format(prog=PROG), "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {text} |" for name, text, _ in found]
    for name, text, sub in found:
        lines += ["", f"## {name}", "", text[:1].upper() + text[1:] + ".", "", "```", _usage(name, sub), "```", ""]
        arguments = _arguments(sub)
        if arguments:
            lines += ["| argument | meaning |", "|---|---|"]
            lines += [f"| `{_invocation(a)}` | {_help(a)} |" for a in arguments]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write docs/cli.md from the command line's parser.")
    p.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md differs from the parser")
    p.add_argument("--out", type=Path, default=CLI_DOC, help="the file to write or check (default: docs/cli.md)")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} differs from the parser; rewrite it with `python -m cxr_core.cli.reference`",
                  file=sys.stderr)
            return 1
        return 0
    from ..store import atomic_write_bytes

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
