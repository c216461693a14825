"""The command line's surface: every command's help, flags named by core hints, the click boundary."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nb2prod.cli import main

PACKAGE = Path(__file__).resolve().parents[2] / "nb2prod"
COMMANDS = sorted(main.commands)


def test_every_command_is_registered_on_the_console_script_group() -> None:
    assert COMMANDS == [
        "demo",
        "export",
        "feedback",
        "history",
        "monitor",
        "promote",
        "reproduce",
        "retrain",
        "rollback",
        "run",
        "score",
        "serve",
        "sweep",
        "trace",
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {command}" in result.output or f"Usage: nb2prod {command}" in result.output


def _flags(command: click.Command | None = None) -> set[str]:
    """The long options of one command (of every command without ``command``)."""
    found: set[str] = set()
    for cmd in [command] if command else list(main.commands.values()):
        for param in cmd.params:
            if isinstance(param, click.Option):
                found.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return found


def _magic_flags(sub: str | None = None) -> set[str]:
    """The options of one ``%nb2prod`` subcommand (of every one without ``sub``)."""
    from nb2prod.magics import _parsers

    parsers = _parsers()
    chosen = [parsers[sub]] if sub in parsers else [] if sub else list(parsers.values())
    return {o for parser in chosen for action in parser._actions for o in action.option_strings}


_FLAG = r"(?<![\w-])--[a-z][a-z-]*"
_COMMAND = re.compile(r"(%?)nb2prod (\w+)([^,;]*)")


def _unknown_flags(text: str) -> list[str]:
    """Flags of ``text`` the command (or magic) it names does not have; unattributed ones must exist somewhere."""
    unknown = []
    for magic, sub, rest in _COMMAND.findall(text):
        known = _magic_flags(sub) if magic else _flags(main.commands[sub]) if sub in main.commands else set()
        unknown += [f"{magic}nb2prod {sub} {flag}" for flag in re.findall(_FLAG, rest) if flag not in known]
    loose = _COMMAND.sub("", text)
    anywhere = _flags() | _magic_flags()
    return unknown + [flag for flag in re.findall(_FLAG, loose) if flag not in anywhere]


def _hint_texts(root: Path) -> list[tuple[str, str]]:
    """The text of every ``hint=`` argument under ``root`` (f-strings as their literal parts)."""
    out: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "hint":
                parts = [
                    n.value
                    for n in ast.walk(node.value)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ]
                out.append((f"{path.relative_to(root.parent)}:{node.value.lineno}", " ".join(parts)))
    return out


def test_error_hints_name_only_flags_that_exist() -> None:
    hints = _hint_texts(PACKAGE)
    assert hints, "no hints found: the scan is broken"
    unknown = [(where, flag) for where, text in hints for flag in _unknown_flags(text)]
    assert unknown == []
    assert _unknown_flags("nb2prod monitor NAME --store X") == ["nb2prod monitor --store"]
    assert _unknown_flags("give --canary-version V") == ["--canary-version"]
    assert _unknown_flags("%nb2prod data test --role test, or --holdout F") == []


def test_only_the_cli_package_imports_click() -> None:
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "click" or n.startswith("click.") for n in names):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert importers and all(p.startswith("cli/") for p in importers), importers
