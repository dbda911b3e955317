import structlog
from structlog.testing import capture_logs

from xianyu_autoreply.log import redact_secrets, redact_text

COOKIE = "unb=2200000000001; _m_h5_tk=0123456789abcdef0123456789abcdef_1700000000000; cookie2=abcdef123456"


def test_cookie_pairs_are_masked_in_text() -> None:
    text = redact_text(f"connecting with {COOKIE}")
    assert "0123456789abcdef" not in text and "abcdef123456" not in text
    assert "_m_h5_tk=***" in text


def test_secret_named_fields_are_masked() -> None:
    event = redact_secrets(None, "info", {"event": "x", "cookie": COOKIE, "api_key": "sk-123", "n": 1})
    assert event["cookie"] == "***" and event["api_key"] == "***" and event["n"] == 1


def test_processor_runs_in_a_structlog_chain() -> None:
    with capture_logs(processors=[redact_secrets]) as logs:
        structlog.get_logger().info("login", detail=f"cookie is {COOKIE}", authorization="Bearer abc.def")
    assert "abcdef123456" not in str(logs)
    assert logs[0]["authorization"] == "***"
