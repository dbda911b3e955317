"""The protocol core's public names, and its promise to be pure: nothing of ours from outside, no I/O."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import xianyu_autoreply.protocol as protocol

PACKAGE_DIR = Path(protocol.__file__).parent
SOURCES = sorted(PACKAGE_DIR.glob("*.py"))

EXPECTED_ALL = [
    "BuyerMessage",
    "ChatMessage",
    "Content",
    "ContentType",
    "DecodedPush",
    "Event",
    "Frame",
    "FrameKind",
    "HttpCall",
    "ImageContent",
    "Inbound",
    "InputError",
    "InvalidCookie",
    "MalformedFrame",
    "MalformedMtopResponse",
    "MalformedPush",
    "MtopOutcome",
    "MtopResult",
    "OrderEvent",
    "OrderStatus",
    "ProtocolError",
    "SellerMessage",
    "SystemNotice",
    "TextContent",
    "Typing",
    "UnknownPayload",
    "access_token",
    "ack_diff_frame",
    "ack_frame",
    "build_confirm_shipment_request",
    "build_item_detail_request",
    "build_login_check_request",
    "build_token_request",
    "classify_login_check",
    "classify_mtop",
    "create_chat_frame",
    "decode_content",
    "decode_payload",
    "decode_push",
    "encode_chat_message",
    "encode_content",
    "encode_frame",
    "encode_order_card",
    "encode_payload",
    "encode_system_notice",
    "encode_typing",
    "heartbeat_frame",
    "mask_cookie",
    "merge_set_cookie",
    "mtop_token",
    "new_device_id",
    "new_mid",
    "new_uuid",
    "now_ms",
    "parse_client_frame",
    "parse_cookie",
    "parse_frame",
    "push_frame",
    "reg_frame",
    "render_cookie",
    "response_frame",
    "seller_id",
    "send_frame",
    "sign",
]

# What protocol/ may import: the standard library's pure modules and the two codecs it is built on.
ALLOWED_IMPORTS = {
    "zlib",
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "enum",
    "hashlib",
    "json",
    "re",
    "secrets",
    "threading",
    "time",
    "types",
    "typing",
    "urllib",
    "msgpack",
    "orjson",
}
IO_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def test_all_is_the_expected_sorted_list() -> None:
    assert sorted(EXPECTED_ALL) == EXPECTED_ALL
    assert protocol.__all__ == EXPECTED_ALL


def test_every_public_name_exists_and_is_documented() -> None:
    for name in protocol.__all__:
        value = getattr(protocol, name)
        if callable(value) and not isinstance(value, type) and hasattr(value, "__code__"):
            assert value.__doc__, f"{name} has no docstring"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_protocol_imports_only_itself_the_pure_stdlib_and_the_codecs() -> None:
    for path in SOURCES:
        for module, level in _imports(path):
            if level:  # relative: must stay inside protocol/
                assert level == 1, f"{path.name} imports {'.' * level}{module} from outside protocol/"
                continue
            top = module.split(".")[0]
            assert top != "xianyu_autoreply", f"{path.name} imports {module}: use a relative import inside protocol/"
            assert top in ALLOWED_IMPORTS, f"{path.name} imports {module}, which protocol/ may not use"
            assert module != "urllib.request", f"{path.name} imports urllib.request"


def test_protocol_calls_no_io_builtins() -> None:
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in IO_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}()"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in {("os", "environ"), ("sys", "stdout"), ("sys", "stderr")}


def test_importing_protocol_loads_no_io_library_and_nothing_else_of_ours() -> None:
    probe = "import json, sys\nimport xianyu_autoreply.protocol\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(done.stdout))
    ours = {m for m in loaded if m.startswith("xianyu_autoreply.")}
    assert all(m.startswith("xianyu_autoreply.protocol") for m in ours), sorted(ours)
    for io_module in ("asyncio", "socket", "ssl", "httpx", "websockets", "aiohttp", "sqlalchemy", "subprocess"):
        assert io_module not in loaded, f"importing protocol loads {io_module}"
