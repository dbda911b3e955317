import ast
from pathlib import Path

import xianyu_autoreply.store as store_package
from xianyu_autoreply.store import Store
from xianyu_autoreply.store.accounts import AccountStore
from xianyu_autoreply.store.messages import MessageStore
from xianyu_autoreply.store.orders import OrderStore
from xianyu_autoreply.store.stock import StockStore
from xianyu_autoreply.store.users import UserStore

STORE_DIR = Path(store_package.__file__).parent


def test_public_names_are_pinned() -> None:
    assert sorted(store_package.__all__) == sorted(
        [
            "UNSET", "Account", "AccountNotFound", "AccountSecrets", "AccountSettings", "AiSettings",
            "AiSettingsUpdate", "AuditEntry", "ChatState", "ChatSummary", "Conflict", "Database", "DatabaseError",
            "DecryptionError", "Delivery", "DeliveryKind", "DeliveryRule", "DeliveryRuleSpec", "DeliveryState",
            "Direction", "Inbound", "InvalidTransition", "InvalidValue", "LastAdmin", "Message", "NotFound",
            "NotificationSettings", "Order", "OrderChange", "OrderEvent", "Outbound", "ReplyKind", "ReservedLine",
            "Role", "Rule", "RuleMatch", "SecretBox", "SecretError", "SecretKeyError", "StockCount", "StockState",
            "Store", "StoreError", "Unset", "User", "UserCredentials", "UserNotFound", "VersionConflict",
            "current_revision", "downgrade_database", "head_revision", "is_at_head", "upgrade_database",
        ]
    )  # fmt: skip


def test_store_methods_are_pinned() -> None:
    public = sorted(name for name in dir(Store) if not name.startswith("_"))
    assert public == [
        "add_stock_lines", "audit", "begin_reply", "claim_delivery", "claim_inbound", "close", "commit_line",
        "count_bargain_round",
        "count_users", "create_account", "create_user", "delete_account", "delete_user", "ensure_first_admin",
        "get_account", "get_account_cookie", "get_account_secrets", "get_ai_api_key", "get_ai_settings",
        "get_chat_state", "get_deliveries", "get_delivery_rule", "get_notification_settings",
        "get_notification_urls", "get_order", "get_reply_configs", "get_rules", "get_settings", "get_user",
        "get_user_credentials",
        "list_account_secrets", "list_accounts", "list_audit", "list_chats", "list_delivery_rules",
        "list_due_deliveries", "list_messages", "list_open_inbound", "list_orders", "list_users",
        "mark_default_reply_sent",
        "mark_inbound", "open", "pause_chat", "prune_messages", "put_ai_settings", "put_chat_state",
        "put_notification_settings", "put_settings", "record_inbound", "record_login_failure", "record_login_success",
        "record_order", "record_outbound", "reencrypt_secrets", "release_line", "replace_delivery_rules",
        "replace_rules", "reserve_line", "return_line", "set_enabled", "stock_counts", "transition_delivery",
        "update_account",
        "update_cookie", "update_delivery", "update_user",
    ]  # fmt: skip


def test_no_two_parts_of_the_store_define_the_same_name() -> None:
    seen: dict[str, str] = {}
    for part in (AccountStore, MessageStore, OrderStore, StockStore, UserStore):
        for name in vars(part):
            if name.startswith("__"):
                continue
            assert name not in seen, f"{part.__name__}.{name} shadows {seen[name]}.{name}"
            seen[name] = part.__name__


REPLIES_VALUE_TYPES = {"replies.rules", "replies.settings"}


def test_the_store_imports_nothing_of_ours_but_config_protocol_and_replies_value_types() -> None:
    for path in STORE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                module = node.module or ""
                allowed = module.split(".")[0] in {"config", "protocol"} or module in REPLIES_VALUE_TYPES
                assert allowed, f"{path.name}: {module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                if parts[0] == "xianyu_autoreply":
                    assert parts[1] in {"config", "protocol", "store"}, f"{path.name}: {node.module}"


def test_migrations_ship_inside_the_package() -> None:
    assert (STORE_DIR / "migrations" / "env.py").is_file()
    assert (STORE_DIR / "migrations" / "script.py.mako").is_file()
    assert list((STORE_DIR / "migrations" / "versions").glob("0001_*.py"))
