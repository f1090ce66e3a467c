"""README and docs/ say what the code does: every file they name exists, every config they run loads.

A command in a Markdown code block or inline code that runs ``hpcml run [FILE] [--set K=V ...]``
is parsed and its configuration built exactly as ``hpcml run`` would (unknown keys, wrong
types and bad choices fail here instead of in a user's shell); ``hpcml bench NAME`` and
``hpcml config show X`` must name things that exist; repository paths
(``examples/``, ``jobscripts/``, ``tests/``, ``docs/``) must exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hpcml.bench import BENCHMARKS
from hpcml.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH_RE = re.compile(r"(?<![\w./-])((?:examples|jobscripts|tests|docs)/[\w./-]*\w)")
RUN_RE = re.compile(r"hpcml run((?: +[^\s`|#;&>]+)*)")


def _text(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_repository_paths_exist(doc):
    missing = sorted({m for m in PATH_RE.findall(_text(doc)) if not (ROOT / m).exists() and "*" not in m})
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def _run_commands(doc: Path) -> list[list[str]]:
    out = []
    for m in RUN_RE.finditer(_text(doc)):
        raw = m.group(1).strip()
        if "..." in raw or "[" in raw.split("--set")[0]:
            continue  # a synopsis such as `hpcml run [CONFIG.toml] ...`
        try:
            out.append(shlex.split(raw))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_run_configs_load(doc):
    for words in _run_commands(doc):
        if "--hipft" in words:
            continue  # a namelist of the user's; the HipFT tests cover the option
        config, sets, i = None, [], 0
        while i < len(words):
            if words[i] == "--set" and i + 1 < len(words):
                sets.append(words[i + 1])
                i += 2
            elif words[i].endswith(".toml"):
                config = words[i]
                i += 1
            else:
                i += 1
        path = ROOT / config if config else None
        assert path is None or path.is_file(), f"{doc.name}: hpcml run {config}: no such file"
        load_config(path, sets)  # raises ConfigError naming the bad key


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_benchmarks_exist(doc):
    names = set(re.findall(r"hpcml bench (\w+)", _text(doc)))
    unknown = sorted(names - set(BENCHMARKS) - {"NAME"})
    assert not unknown, f"{doc.name} names benchmarks that do not exist: {unknown}"
