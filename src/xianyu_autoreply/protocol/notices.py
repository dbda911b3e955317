"""The platform's order and system texts (PROTOCOL.md §12) as data tables.

Texts are matched exactly after stripping surrounding white space; brackets are ASCII and commas full-width
unless the platform writes them otherwise. Keep literals here, not in the code that reacts to them.
"""

from __future__ import annotations

from types import MappingProxyType

from .events import OrderStatus

# Card/message texts that announce an order status change (§12.2, §12.4).
ORDER_STATUS_BY_TEXT = MappingProxyType(
    {
        "[我已拍下，待付款]": OrderStatus.CREATED,
        "[我已付款，等待你发货]": OrderStatus.PAID,
        "我已付款，等待你发货": OrderStatus.PAID,
        "[已付款，待发货]": OrderStatus.PAID,
        "[记得及时发货]": OrderStatus.PAID,
        "[买家已付款]": OrderStatus.PAID,
        "[付款完成]": OrderStatus.PAID,
        "[你已发货]": OrderStatus.SHIPPED,
        "你已发货": OrderStatus.SHIPPED,
        "[你已发货，请等待买家确认收货]": OrderStatus.SHIPPED,
        "[买家确认收货，交易成功]": OrderStatus.COMPLETED,
        "[你已确认收货，交易成功]": OrderStatus.COMPLETED,
        "[你关闭了订单，钱款已原路退返]": OrderStatus.CLOSED,
        "[退款成功，钱款已原路退返]": OrderStatus.REFUNDED,
    }
)

# `message["3"]["redReminder"]` values of status notices (§11.4, §12.4).
ORDER_STATUS_BY_RED_REMINDER = MappingProxyType(
    {
        "等待买家付款": OrderStatus.CREATED,
        "等待卖家发货": OrderStatus.PAID,
        "交易关闭": OrderStatus.CLOSED,
    }
)

# Refund card (`dxCard ... exContent.title` + `button.text`, §12.4).
REFUND_CARD_TITLE = "我发起了退款申请"
REFUND_CARD_STATUS_BY_BUTTON = MappingProxyType(
    {"已同意": OrderStatus.REFUNDING, "已撤销": OrderStatus.REFUND_CANCELLED}
)

# The bargain ("小刀") card title: a price agreed, not a buyer question (§12.3).
BARGAIN_CARD_TITLE = "我已小刀，待刀成"

# Texts the platform shows in a conversation that are not the buyer speaking (§12.1): never answered.
SYSTEM_TEXTS = frozenset(
    {
        "[不想宝贝被砍价?设置不砍价回复  ]",
        "AI正在帮你回复消息，不错过每笔订单",
        "发来一条消息",
        "发来一条新消息",
        "快给ta一个评价吧~",
        "快给ta一个评价吧～",
        "卖家人不错？送Ta闲鱼小红花",
        "[卡片消息]",
    }
)

# What the simulator pushes for each order status (one canonical text each).
TEXT_BY_ORDER_STATUS = MappingProxyType(
    {
        OrderStatus.CREATED: "[我已拍下，待付款]",
        OrderStatus.PAID: "[我已付款，等待你发货]",
        OrderStatus.SHIPPED: "[你已发货]",
        OrderStatus.COMPLETED: "[买家确认收货，交易成功]",
        OrderStatus.CLOSED: "[你关闭了订单，钱款已原路退返]",
        OrderStatus.REFUNDED: "[退款成功，钱款已原路退返]",
    }
)
RED_REMINDER_BY_ORDER_STATUS = MappingProxyType(
    {
        OrderStatus.CREATED: "等待买家付款",
        OrderStatus.PAID: "等待卖家发货",
        OrderStatus.SHIPPED: "等待买家收货",
        OrderStatus.COMPLETED: "交易成功",
        OrderStatus.CLOSED: "交易关闭",
        OrderStatus.REFUNDED: "退款成功",
    }
)


def is_system_text(text: str) -> bool:
    """True for a platform text that is neither a buyer's words nor an order status."""
    return text.strip() in SYSTEM_TEXTS
