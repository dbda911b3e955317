"""Message content inside a send (`content.custom.data`, PROTOCOL.md §13): base64 of a small JSON document."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import orjson

from .errors import MalformedFrame
from .events import ContentType


@dataclass(frozen=True, slots=True)
class TextContent:
    text: str


@dataclass(frozen=True, slots=True)
class ImageContent:
    url: str
    width: int = 800
    height: int = 600


Content = TextContent | ImageContent


def encode_content(content: Content) -> str:
    """Base64 of the content JSON, serialised the way the web client does (json defaults, ASCII escapes)."""
    if isinstance(content, TextContent):
        doc: dict[str, object] = {"contentType": int(ContentType.TEXT), "text": {"text": content.text}}
        raw = json.dumps(doc)
    else:
        pic = {"height": content.height, "type": 0, "url": content.url, "width": content.width}
        raw = json.dumps({"contentType": int(ContentType.IMAGE), "image": {"pics": [pic]}}, ensure_ascii=False)
    return base64.b64encode(raw.encode()).decode("ascii")


def decode_content(data: str) -> Content:
    """Decode `custom.data` of a send back into text or image content."""
    try:
        doc = orjson.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise MalformedFrame(f"send content is not base64 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedFrame("send content is not a JSON object")
    kind = doc.get("contentType")
    if kind == ContentType.TEXT:
        text = (doc.get("text") or {}).get("text") if isinstance(doc.get("text"), dict) else None
        if not isinstance(text, str):
            raise MalformedFrame("text content has no text.text string")
        return TextContent(text)
    if kind == ContentType.IMAGE:
        try:
            pic = doc["image"]["pics"][0]
            return ImageContent(str(pic["url"]), int(pic.get("width", 800)), int(pic.get("height", 600)))
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:
            raise MalformedFrame("image content has no image.pics[0].url") from exc
    raise MalformedFrame(f"unsupported send content type {kind!r}")
