"""DESIGN §1, the house: imports only point down, and the pure layers load no I/O library.

protocol <- replies <- platform <- engine, with store beside them; api and cli on top; the simulator is the other
side of the wire and shares only the codec. The static half reads every import statement under src/ (relative
ones resolved, `TYPE_CHECKING` ones included: a type is a dependency too); the runtime half imports the pure
layers in a fresh interpreter and looks at what ended up loaded. protocol/'s own stricter allow-list of standard
modules is in tests/unit/protocol/test_protocol_public_api.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import xianyu_autoreply

PACKAGE = "xianyu_autoreply"
SRC = Path(xianyu_autoreply.__file__).parent

# Top-level modules anything below api/cli may lean on: settings, the outbound URL policy, the loop choice, logging.
FOUNDATION = {"config", "outbound", "runtime", "log"}
# What each part may import of ours besides itself. "" is the package root (`__version__`).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "replies": {"protocol"},
    "simulator": {"protocol"},
    "platform": {"protocol", "replies", "config", "outbound"},
    "store": {"protocol", "replies", "config"},
    "engine": {"protocol", "replies", "platform", "store", "", *FOUNDATION},
    **{name: FOUNDATION - {name} for name in FOUNDATION},
}
PURE = ("protocol", "replies")
IO_LIBRARIES = ("httpx", "openai", "websockets", "sqlalchemy", "aiosqlite", "asyncpg", "apprise")
# The pure layers may not even name these; `asyncio` too: they take data in and hand decisions out.
PURE_FORBIDDEN = {*IO_LIBRARIES, "asyncio", "aiohttp", "socket", "ssl", "subprocess", "tenacity"}


def _part(path: Path) -> str:
    """The part of the house a source file belongs to: its top folder, or the module name for a top-level file."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path, text: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `path` (or in `text` as if it were at `path`);
    `from .. import x` yields the module `x` would be."""
    rel = path.relative_to(SRC).with_suffix("")
    package = [PACKAGE, *rel.parts[:-1]]  # what `from .` means, in a module and in an __init__ alike
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                yield node.lineno, node.module or ""
                continue
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                yield node.lineno, ".".join([*base, node.module])
            else:
                yield from ((node.lineno, ".".join([*base, alias.name])) for alias in node.names)


def _ours(module: str) -> str | None:
    """The part of the house `module` is in ("" for the package root), or None when it is not ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1 or not ((SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").is_file()):
        return ""  # the package itself, or a name its __init__ defines (`__version__`)
    return parts[1]


SOURCES = sorted(SRC.rglob("*.py"))


def test_the_checker_sees_the_whole_house() -> None:
    parts = {_part(path) for path in SOURCES}
    assert set(ALLOWED) - {""} <= parts | {""}
    assert {"api", "cli", "demo"} <= parts  # the top: not restricted here, but nothing below may import them


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_only_point_down(part: str) -> None:
    wrong = []
    for path in SOURCES:
        if _part(path) != part:
            continue
        for line, module in _imports(path):
            target = _ours(module)
            if target is not None and target != part and target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not wrong, f"{part} may import only {sorted(ALLOWED[part]) or 'nothing of ours'}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("part", PURE)
def test_the_pure_layers_name_no_io_library(part: str) -> None:
    wrong = []
    for path in sorted((SRC / part).rglob("*.py")):
        for line, module in _imports(path):
            if module.split(".")[0] in PURE_FORBIDDEN:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_resolves_imports_as_python_does() -> None:
    # Everything above rests on this resolution; a mistake here would let every upward import through.
    upward = "from ..platform.ai import AIReplier\nfrom . import bargain\nfrom .. import __version__, engine\n"
    found = [(_ours(m), m) for _, m in _imports(SRC / "replies" / "x.py", upward)]
    assert found == [
        ("platform", f"{PACKAGE}.platform.ai"),
        ("replies", f"{PACKAGE}.replies.bargain"),
        ("", f"{PACKAGE}.__version__"),
        ("engine", f"{PACKAGE}.engine"),
    ]
    assert [_ours(m) for _, m in _imports(SRC / "replies" / "__init__.py", "from .ai import AIAnswer\n")] == ["replies"]
    assert [_ours(m) for _, m in _imports(SRC / "config.py", "from .outbound import X\nimport httpx\n")] == [
        "outbound",
        None,
    ]
    assert "platform" not in ALLOWED["replies"] and "engine" not in ALLOWED["replies"]


def test_importing_the_pure_layers_loads_no_io_library() -> None:
    probe = (
        "import json, sys\n"
        "import xianyu_autoreply.protocol, xianyu_autoreply.replies\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(done.stdout))
    assert "xianyu_autoreply.replies.ai" in loaded  # the probe really imported the AI's pure half
    for library in IO_LIBRARIES:
        assert not {m for m in loaded if m == library or m.startswith(f"{library}.")}, f"{library} got loaded"
    ours = {m for m in loaded if m.startswith(f"{PACKAGE}.")}
    assert all(m.split(".")[1] in PURE for m in ours), sorted(ours)
