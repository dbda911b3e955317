import pytest

from xianyu_autoreply.replies.templates import (
    MAX_TEMPLATE_CHARS,
    VARIABLES,
    TemplateError,
    TemplateValues,
    render,
    validate_template,
)

VALUES = TemplateValues(
    buyer_name="小王", item_id="42", item_title="二手相机", order_id="9001", account_name="老张的店"
)


def test_every_variable_is_filled_in() -> None:
    text = "{buyer_name}|{send_user_name}|{item_id}|{item_title}|{order_id}|{account_name}"
    assert render(text, VALUES) == "小王|小王|42|二手相机|9001|老张的店"


def test_send_user_name_is_the_buyer_name() -> None:
    assert render("你好{send_user_name}", TemplateValues(buyer_name="阿明")) == "你好阿明"


def test_unknown_value_renders_empty() -> None:
    assert render("订单{order_id}已发货", TemplateValues()) == "订单已发货"


def test_double_braces_are_literal_braces() -> None:
    assert render("{{buyer_name}} is {buyer_name}: }}{{", VALUES) == "{buyer_name} is 小王: }{"


def test_text_without_variables_is_unchanged() -> None:
    assert render("包邮哦～", VALUES) == "包邮哦～"


def test_variables_list_is_the_documented_one() -> None:
    assert {"buyer_name", "send_user_name", "item_id", "item_title", "order_id", "account_name"} == VARIABLES


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("你好{buyer}", "unknown variable {buyer} at position 2"),
        ("{ buyer_name }", "unknown variable { buyer_name }"),
        ("{buyer_name!r}", "unknown variable"),
        ("{}", "unknown variable {}"),
        ("你好{buyer_name", "'{' at position 2 is not closed"),
        ("{a{buyer_name}", "'{' at position 0 is not closed"),
        ("价格}", "'}' at position 2 has no opening brace"),
        ("x" * (MAX_TEMPLATE_CHARS + 1), "more than"),
    ],
)
def test_invalid_template_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        validate_template(text)


def test_render_refuses_a_template_validation_refuses() -> None:
    # Never send raw braces to a buyer: an unvalidated bad template fails loudly instead.
    with pytest.raises(TemplateError):
        render("{oops}", VALUES)


def test_valid_template_passes_validation() -> None:
    validate_template("{{x}} {buyer_name} 在的，{item_title}还在")
