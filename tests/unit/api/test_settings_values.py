"""Reply settings: the REST body converts to the store's records in one place, and the store's records to what
the reply policy reads in one place."""

from xianyu_autoreply.api.schemas import SettingsIn, SettingsOut
from xianyu_autoreply.replies import AISettings, ReplySettings
from xianyu_autoreply.store import UNSET, AccountSettings, AiSettings, AiSettingsUpdate
from xianyu_autoreply.store.accounts import ReplyConfig

SHOWN_AI = AiSettings(
    enabled=True,
    base_url="https://ai.example/v1",
    model="m",
    max_discount_percent=5,
    max_discount_amount=20,
    max_bargain_rounds=2,
    prompt="be kind",
    has_api_key=True,
    api_key_masked="sk-***ab",
)


def test_the_body_becomes_the_store_records() -> None:
    body = SettingsIn.model_validate(
        {"default_reply": "hi", "pause_minutes": 3, "ai": {"enabled": True, "base_url": "", "model": "m"}}
    )
    settings, ai = body.to_store()
    assert settings == AccountSettings(default_reply="hi", pause_minutes=3)
    assert ai == AiSettingsUpdate(enabled=True, base_url=None, model="m", api_key=UNSET)


def test_the_ai_key_given_as_null_removes_it_and_no_ai_keeps_it() -> None:
    _, ai = SettingsIn.model_validate({"ai": {"api_key": None}}).to_store()
    assert ai is not None and ai.api_key is None
    assert SettingsIn.model_validate({}).to_store()[1] is None


def test_the_answer_carries_every_field() -> None:
    out = SettingsOut.of(AccountSettings(default_reply="d", debounce_seconds=1, auto_confirm=True), SHOWN_AI)
    assert out.model_dump() == {
        "default_reply": "d",
        "default_reply_once_per_chat": False,
        "auto_confirm": True,
        "pause_minutes": 10.0,
        "debounce_seconds": 1.0,
        "ai": {
            "enabled": True,
            "base_url": "https://ai.example/v1",
            "model": "m",
            "has_api_key": True,
            "api_key_masked": "sk-***ab",
            "max_discount_percent": 5.0,
            "max_discount_amount": 20.0,
            "max_bargain_rounds": 2,
            "prompt": "be kind",
        },
    }


def test_the_stored_config_becomes_the_policys_settings() -> None:
    config = ReplyConfig(
        account_id="shop",
        version=1,
        remark="",
        rules=[],
        settings=AccountSettings(default_reply="d", default_reply_once_per_chat=True, pause_minutes=4),
        ai=SHOWN_AI,
        ai_api_key="sk-secret",
    )
    assert config.reply_settings(message_expire_seconds=60) == ReplySettings(
        default_reply="d",
        default_reply_once_per_chat=True,
        pause_minutes=4,
        message_expire_seconds=60,
        account_name="shop",
        ai=AISettings(
            enabled=True,
            base_url="https://ai.example/v1",
            model="m",
            api_key="sk-secret",
            max_discount_percent=5,
            max_discount_amount=20,
            max_bargain_rounds=2,
            prompt="be kind",
        ),
    )
