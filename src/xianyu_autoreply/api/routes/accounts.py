"""`/api/v1/accounts...`: accounts, their cookie, status, live state, rules, settings, log, orders, delivery.

Each route first resolves the account through `AccountOperations.visible` (404 for someone else's account, the
same answer as for a missing one) and writes only through `AccountOperations` (the engine when there is one).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from ...store import (
    DeliveryRuleSpec,
    Role,
    StoreError,
    User,
    UserNotFound,
)
from ..auth import current_user
from ..errors import ApiError
from ..operations import AccountOperations, operations
from ..schemas import (
    AccountIn,
    AccountOut,
    AccountPatch,
    AccountState,
    BulkIn,
    BulkOut,
    BulkResult,
    ChatMessageIn,
    ChatMessageOut,
    CookieIn,
    DeliveryRuleIn,
    DeliveryRuleOut,
    MessageOut,
    OrderOut,
    RuleIO,
    SettingsIn,
    SettingsOut,
    StatusIn,
    TryIn,
    TryOut,
)

router = APIRouter(prefix="/accounts", tags=["accounts"])
Caller = Annotated[User, Depends(current_user)]
Ops = Annotated[AccountOperations, Depends(operations)]
AccountId = Annotated[str, Path(min_length=1, max_length=128, description="the account id")]


def _owner_for(user: User, requested: str | None) -> str:
    """Who owns a new account: the caller, or (admins only) the user named."""
    if requested is None or requested == user.username:
        return user.username
    if user.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", "only an admin may give an account to another user")
    return requested


def _unknown_owner() -> ApiError:
    return ApiError(422, "unknown_owner", "no user with this name", field="owner")


@router.get("", response_model=list[AccountOut], summary="Accounts the caller may see, with live state")
async def list_accounts(user: Caller, ops: Ops) -> list[AccountOut]:
    return [AccountOut.of(a, ops.state(a.id)) for a in await ops.list_visible(user)]


@router.post("", response_model=AccountOut, status_code=201, summary="Add an account (started when enabled)")
async def create_account(body: AccountIn, user: Caller, ops: Ops) -> AccountOut:
    owner = _owner_for(user, body.owner)
    try:
        account = await ops.add(
            body.id,
            body.cookie,
            owner=owner,
            enabled=body.enabled,
            remark=body.remark,
            proxy=body.proxy or None,
            actor=user.username,
        )
    except UserNotFound:
        raise _unknown_owner() from None
    return AccountOut.of(account, ops.state(account.id))


@router.post("/bulk", response_model=BulkOut, summary="Enable, disable or delete many accounts; a result per id")
async def bulk(body: BulkIn, user: Caller, ops: Ops) -> BulkOut:
    results = []
    for account_id in dict.fromkeys(body.ids):  # each id once, in the order given
        try:
            await ops.visible(user, account_id)
            if body.action == "delete":
                await ops.remove(account_id, actor=user.username)
            else:
                await ops.set_enabled(account_id, body.action == "enable", actor=user.username)
        except ApiError as exc:
            results.append(BulkResult(id=account_id, ok=False, code=exc.code, message=exc.message))
        except (StoreError, ValueError) as exc:
            results.append(BulkResult(id=account_id, ok=False, code="failed", message=str(exc)))
        else:
            results.append(BulkResult(id=account_id, ok=True))
    return BulkOut(action=body.action, results=results)


@router.get("/{account_id}", response_model=AccountOut)
async def get_account(account_id: AccountId, user: Caller, ops: Ops) -> AccountOut:
    account = await ops.visible(user, account_id)
    return AccountOut.of(account, ops.state(account.id))


@router.patch("/{account_id}", response_model=AccountOut, summary="Change remark, pause, auto-confirm, proxy")
async def patch_account(account_id: AccountId, body: AccountPatch, user: Caller, ops: Ops) -> AccountOut:
    await ops.visible(user, account_id)
    given = body.model_fields_set
    fields: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("remark", "pause_minutes", "auto_confirm")
        if name in given and getattr(body, name) is not None
    }
    if "owner" in given:
        if user.role is not Role.ADMIN:
            raise ApiError(403, "forbidden", "only an admin may change the owner")
        fields["owner"] = body.owner
    try:
        account = await ops.update(
            account_id,
            actor=user.username,
            proxy=body.proxy or None,
            change_proxy="proxy" in given,
            **fields,
        )
    except UserNotFound:
        raise _unknown_owner() from None
    return AccountOut.of(account, ops.state(account_id))


@router.delete("/{account_id}", status_code=204, summary="Stop and delete the account with its rules and log")
async def delete_account(account_id: AccountId, user: Caller, ops: Ops) -> Response:
    await ops.visible(user, account_id)
    await ops.remove(account_id, actor=user.username)
    return Response(status_code=204)


@router.put("/{account_id}/cookie", response_model=AccountOut, summary="Replace the cookie; restarts this account only")
async def put_cookie(account_id: AccountId, body: CookieIn, user: Caller, ops: Ops) -> AccountOut:
    await ops.visible(user, account_id)
    account = await ops.update_cookie(account_id, body.cookie, actor=user.username)
    return AccountOut.of(account, ops.state(account_id))


@router.put("/{account_id}/status", response_model=AccountOut, summary="Start or stop the account")
async def put_status(account_id: AccountId, body: StatusIn, user: Caller, ops: Ops) -> AccountOut:
    await ops.visible(user, account_id)
    account = await ops.set_enabled(account_id, body.enabled, actor=user.username)
    return AccountOut.of(account, ops.state(account_id))


@router.get("/{account_id}/state", response_model=AccountState, summary="Live engine state of the account")
async def get_state(account_id: AccountId, user: Caller, ops: Ops) -> AccountState:
    await ops.visible(user, account_id)
    state = ops.state(account_id)
    node = await ops.node_of(account_id)  # an API node without engine: which worker runs it
    return state.model_copy(update={"node": node}) if node is not None else state


@router.get("/{account_id}/rules", response_model=list[RuleIO])
async def get_rules(account_id: AccountId, user: Caller, ops: Ops) -> list[RuleIO]:
    await ops.visible(user, account_id)
    return [RuleIO.of(r) for r in await ops.store.get_rules(account_id)]


@router.put("/{account_id}/rules", response_model=list[RuleIO], summary="Replace the keyword rules atomically")
async def put_rules(account_id: AccountId, body: list[RuleIO], user: Caller, ops: Ops) -> list[RuleIO]:
    await ops.visible(user, account_id)
    saved = await ops.set_rules(account_id, [r.to_rule() for r in body], actor=user.username)
    return [RuleIO.of(r) for r in saved]


async def _settings_out(ops: AccountOperations, account_id: str) -> SettingsOut:
    return SettingsOut.of(await ops.store.get_settings(account_id), await ops.store.get_ai_settings(account_id))


@router.get("/{account_id}/settings", response_model=SettingsOut, summary="Reply and AI settings (API key masked)")
async def get_settings(account_id: AccountId, user: Caller, ops: Ops) -> SettingsOut:
    await ops.visible(user, account_id)
    return await _settings_out(ops, account_id)


@router.put("/{account_id}/settings", response_model=SettingsOut, summary="Replace reply (and AI) settings")
async def put_settings(account_id: AccountId, body: SettingsIn, user: Caller, ops: Ops) -> SettingsOut:
    await ops.visible(user, account_id)
    settings, ai = body.to_store()
    await ops.set_settings(account_id, settings, ai=ai, actor=user.username)
    return await _settings_out(ops, account_id)


@router.get("/{account_id}/messages", response_model=list[MessageOut], summary="Conversation log, oldest first")
async def get_messages(
    account_id: AccountId,
    user: Caller,
    ops: Ops,
    *,
    chat_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> list[MessageOut]:
    await ops.visible(user, account_id)
    messages = await ops.store.list_messages(account_id, chat_id=chat_id, limit=limit, before_id=before_id)
    return [MessageOut.of(m) for m in messages]


@router.get("/{account_id}/orders", response_model=list[OrderOut], summary="Orders, newest first, with delivery")
async def get_orders(
    account_id: AccountId,
    user: Caller,
    ops: Ops,
    *,
    status: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OrderOut]:
    await ops.visible(user, account_id)
    return [OrderOut.of(o) for o in await ops.store.list_orders(account_id, status=status, limit=limit)]


def _may_reveal(user: User, owner: str | None) -> bool:
    """The goods themselves (card secrets) are shown to the account's owner only; an unowned one to admins."""
    return owner == user.username or (owner is None and user.role is Role.ADMIN)


@router.get(
    "/{account_id}/delivery-rules",
    response_model=list[DeliveryRuleOut],
    summary="Delivery rules with stock counts; `?reveal=true` (owner only) shows contents and remaining lines",
)
async def get_delivery_rules(
    account_id: AccountId, user: Caller, ops: Ops, reveal: bool = False
) -> list[DeliveryRuleOut]:
    account = await ops.visible(user, account_id)
    if reveal and not _may_reveal(user, account.owner):
        raise ApiError(403, "reveal_forbidden", "only the account's owner may see the goods")
    return [DeliveryRuleOut.of(r) for r in await ops.store.list_delivery_rules(account_id, reveal=reveal)]


@router.put("/{account_id}/delivery-rules", response_model=list[DeliveryRuleOut], summary="Replace delivery rules")
async def put_delivery_rules(
    account_id: AccountId, body: list[DeliveryRuleIn], user: Caller, ops: Ops
) -> list[DeliveryRuleOut]:
    await ops.visible(user, account_id)
    specs = []
    for position, rule in enumerate(body):
        if rule.lines is not None and rule.kind != "batch":
            raise ApiError(422, "invalid_value", "only a batch rule has stock lines", field=f"{position}.lines")
        specs.append(
            DeliveryRuleSpec(
                rule.kind,
                id=rule.id,
                item_id=rule.item_id or None,
                title_keyword=rule.title_keyword or None,
                content=rule.content,
                lines=rule.lines,
                delay_seconds=rule.delay_seconds,
                reusable_on_refund=rule.reusable_on_refund,
                low_stock_threshold=rule.low_stock_threshold,
                enabled=rule.enabled,
            )
        )
    saved = await ops.set_delivery_rules(account_id, specs, actor=user.username)
    return [DeliveryRuleOut.of(r) for r in saved]


@router.post("/{account_id}/try", response_model=TryOut, summary="What the account would answer, without sending")
async def try_message(account_id: AccountId, body: TryIn, user: Caller, ops: Ops) -> TryOut:
    await ops.visible(user, account_id)
    result = await ops.try_reply(account_id, body.text, item_id=body.item_id or None)
    return TryOut(reply=result.reply, source=result.source, reason=result.reason)


@router.post(
    "/{account_id}/chats/{chat_id}/messages",
    response_model=ChatMessageOut,
    status_code=201,
    summary="The seller's manual reply, sent now; pauses auto-reply in that chat",
)
async def send_chat_message(
    account_id: AccountId, chat_id: str, body: ChatMessageIn, user: Caller, ops: Ops
) -> ChatMessageOut:
    await ops.visible(user, account_id)
    sent = await ops.send_manual(account_id, chat_id, body.text, to_user=body.to_user)
    if not sent.ok:
        raise ApiError(502, "send_failed", f"the platform refused the message: {sent.error or 'unknown error'}")
    return ChatMessageOut(chat_id=sent.chat_id, to_user=sent.to_user, text=body.text, ok=sent.ok, error=sent.error)
