"""The web admin's pages and form handlers (server-rendered; htmx swaps the fragments they answer).

Every write goes through the API's `AccountOperations`, i.e. through the engine's scheduler when one runs, so
the admin and the REST API change accounts the same way and memory never disagrees with the database.
Sign-in is the API's session cookie; unsafe requests carry the CSRF header, which htmx adds from `hx-headers`
on `<body>`, and the two plain form posts (login, logout) carry it as a hidden field instead.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from ...engine.errors import NoEngine, NotConnected
from ...protocol import ProtocolError
from ...replies import RuleError, TemplateError
from ...store import (
    UNSET,
    AccountNotFound,
    AccountSettings,
    AiSettingsUpdate,
    Conflict,
    InvalidValue,
    LastAdmin,
    Role,
    Unset,
    User,
    UserNotFound,
)
from ..auth import (
    CSRF_COOKIE,
    clear_session_cookies,
    hash_password,
    issue_session_cookies,
    login,
    optional_user,
)
from ..errors import ApiError, not_found
from ..operations import AccountOperations, operations
from .i18n import translator
from .live import router as live_router
from .rendering import WebRoute, check_form, render, request_lang, since_text
from .rule_forms import displayable, rule_json, rules_from_form, rules_from_json, to_rules
from .views import (
    account_for,
    account_rows,
    buyer_of,
    dom_key,
    engine_state,
    is_own_echo,
    message_line,
    rule_names,
    visible_accounts,
)

router = APIRouter(route_class=WebRoute, include_in_schema=False)
router.include_router(live_router)

LOGIN_CSRF_COOKIE = "xar_login_csrf"
T = TypeVar("T")
Ops = Annotated[AccountOperations, Depends(operations)]
PageUser = Annotated[User | None, Depends(optional_user)]
# Handled input errors: shown to the seller in the form's place (422), never as a stack trace.
_INPUT_ERRORS = (InvalidValue, ProtocolError, RuleError, TemplateError, Conflict, LastAdmin, ValueError)


async def action_user(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> User:
    """The signed-in user of an htmx action; a lapsed sign-in sends the browser to the login page."""
    if user is None:
        raise ApiError(401, "not_authenticated", "log in first", headers={"HX-Redirect": "/login"})
    request.state.user = user
    await check_form(request)  # after sign-in (a stranger learns nothing), before the handler writes
    return user


async def admin_action_user(user: Annotated[User, Depends(action_user)]) -> User:
    """The signed-in user of an htmx action, if an admin; 403 otherwise."""
    if user.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", "only an admin may do this")
    return user


ActionUser = Annotated[User, Depends(action_user)]


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _safe_next(value: str | None) -> str:
    """Only a path on this site: `//evil.example` or `https://...` would make the login an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _error_page(request: Request, status: int) -> HTMLResponse:
    """A page (not the API's JSON) for a browser that followed a link it may not follow: same 404 for missing
    and someone else's account."""
    t = translator(request_lang(request))
    message = t("page.forbidden") if status == 403 else t("page.not_found")
    return render(request, "error.html", {"status": status, "message": message}, status_code=status)


def _error_text(exc: Exception) -> str:
    return exc.message if isinstance(exc, ApiError) else str(exc)


def _flash(request: Request, message: str, *, error: bool = False) -> HTMLResponse:
    return render(request, "_flash.html", {"message": message, "error": error}, status_code=422 if error else 200)


async def _attempt(awaitable: Awaitable[T]) -> tuple[T | None, str | None]:
    """(result, None), or (None, the reason) for an input the seller can correct."""
    try:
        return await awaitable, None
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return None, exc.message
    except (*_INPUT_ERRORS, NoEngine) as exc:
        return None, str(exc)


async def _saved(request: Request, write: Awaitable[object], done: str) -> HTMLResponse:
    """Run a write and answer a flash: the translated `done`, or the reason the seller can correct (422)."""
    t = translator(request_lang(request))
    _, error = await _attempt(write)
    if error is not None:
        return _flash(request, t("err.invalid", error=error), error=True)
    return _flash(request, t(done))


def _form_bool(form: FormData, name: str) -> bool:
    return form.get(name) in ("1", "on", "true", "yes")


def _form_float(form: FormData, name: str, default: float) -> float:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be a number, not {raw!r}") from None


# --- signing in and out ---------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, user: PageUser, next: str = "/") -> Response:
    """The login form, with a login-CSRF token of its own (no session exists yet to carry one)."""
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    # Login CSRF: a form posted from elsewhere cannot know this cookie's value.
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    message = translator(request_lang(request))("logout.done") if request.query_params.get("bye") else None
    response = render(
        request,
        "login.html",
        {"csrf": token, "next_url": _safe_next(next), "username": "", "message": message, "error": False},
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
    return response


@router.post("/login")
async def login_submit(request: Request) -> Response:
    """Check the form's token and the password (throttled by the API's authenticator), then sign in."""
    form = await request.form()
    t = translator(request_lang(request))
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    given = str(form.get("csrf_token") or "")
    next_url = _safe_next(str(form.get("next") or "/"))
    username = str(form.get("username") or "").strip()
    if not token or not hmac.compare_digest(token, given):
        return render(
            request,
            "login.html",
            {"csrf": token, "next_url": next_url, "username": username, "message": t("csrf.refused"), "error": True},
            status_code=403,
        )
    await check_form(request)
    try:
        user = await login(request, username, str(form.get("password") or ""))
    except ApiError as exc:
        message = t("login.locked") if exc.status == 429 else t("login.failed")
        return render(
            request,
            "login.html",
            {"csrf": token, "next_url": next_url, "username": username, "message": message, "error": True},
            status_code=exc.status,
            headers=exc.headers,
        )
    response = RedirectResponse(next_url, status_code=303)
    issue_session_cookies(response, user, request)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """A plain form post: the CSRF token comes as a hidden field (no htmx header on a full-page submit)."""
    form = await request.form()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = str(form.get("csrf_token") or "")
    if not cookie or not hmac.compare_digest(cookie, given):
        t = translator(request_lang(request))
        return HTMLResponse(t("csrf.refused"), status_code=403)
    response = RedirectResponse("/login?bye=1", status_code=303)
    clear_session_cookies(response)
    return response


# --- dashboard and accounts -----------------------------------------------------------------------------------


@router.get("/")
async def dashboard(request: Request, user: PageUser, ops: Ops) -> Response:
    """All accounts the user may see, with live state and today's counts (kept live by `/web/events`)."""
    if user is None:
        return _login_redirect(request)
    request.state.user = user
    rows = await account_rows(ops.store, ops.engine, await visible_accounts(ops.store, user))
    return render(request, "dashboard.html", {"rows": rows})


@router.get("/web/dashboard/rows")
async def dashboard_rows(request: Request, user: ActionUser, ops: Ops) -> Response:
    """The dashboard's rows alone, fetched again when an account is added or deleted elsewhere."""
    rows = await account_rows(ops.store, ops.engine, await visible_accounts(ops.store, user))
    return render(request, "_account_rows.html", {"rows": rows})


@router.post("/accounts")
async def add_account(request: Request, user: ActionUser, ops: Ops) -> Response:
    """Add an account owned by the signed-in user; the engine starts it at once."""
    form = await request.form()
    account_id = str(form.get("account_id") or "").strip()
    t = translator(request_lang(request))
    account, error = await _attempt(
        ops.add(
            account_id,
            str(form.get("cookie") or "").strip(),
            owner=user.username,
            enabled=True,
            remark=str(form.get("remark") or "").strip(),
            proxy=None,
            actor=user.username,
        )
    )
    if error is not None or account is None:
        return _flash(request, t("err.invalid", error=error), error=True)
    response = _flash(request, t("dashboard.added"))
    response.headers["HX-Redirect"] = f"/accounts/{quote(account.id, safe='')}"
    return response


@router.post("/accounts/bulk")
async def bulk(request: Request, user: ActionUser, ops: Ops) -> Response:
    """Enable, disable, delete or export several accounts; one result per account, never all-or-nothing."""
    form = await request.form()
    action = str(form.get("action") or "")
    ids = [str(i) for i in form.getlist("ids")]
    t = translator(request_lang(request))
    results: list[dict[str, Any]] = []
    exported: list[dict[str, Any]] = []
    for account_id in ids:
        try:
            account = await account_for(ops.store, user, account_id)
            if action == "enable":
                await ops.set_enabled(account.id, True, actor=user.username)
            elif action == "disable":
                await ops.set_enabled(account.id, False, actor=user.username)
            elif action == "delete":
                await ops.remove(account.id, actor=user.username)
            elif action == "export":
                exported.append(await _export_account(ops, account.id))
            else:
                raise InvalidValue(f"unknown action {action!r}")
            results.append({"id": account_id, "ok": True, "message": t("ok")})
        except AccountNotFound:
            results.append({"id": account_id, "ok": False, "message": t("err.not_found")})
        except (ApiError, *_INPUT_ERRORS) as exc:
            results.append({"id": account_id, "ok": False, "message": _error_text(exc)})
    export = json.dumps(exported, ensure_ascii=False, indent=2) if action == "export" and exported else None
    return render(request, "_bulk_result.html", {"results": results, "export": export})


async def _export_account(ops: AccountOperations, account_id: str) -> dict[str, Any]:
    """An account's shareable part: rules and reply settings, never the cookie or the AI key."""
    account = await ops.store.get_account(account_id)
    settings = await ops.store.get_settings(account_id)
    return {
        "id": account.id,
        "remark": account.remark,
        "enabled": account.enabled,
        "settings": asdict(settings),  # the record's fields, in its order
        "rules": [rule_json(r) for r in await ops.store.get_rules(account_id)],
    }


async def _account_context(request: Request, ops: AccountOperations, account_id: str, user: User) -> dict[str, Any]:
    account = await account_for(ops.store, user, account_id)
    state = engine_state(ops.engine, account.id)
    short, iso = since_text(state.since_ms)
    return {
        "account": account,
        "state": state,
        "key": dom_key(account.id),
        "since_text": short,
        "since_iso": iso,
    }


@router.get("/accounts/{account_id}")
async def account_page(request: Request, account_id: str, user: PageUser, ops: Ops) -> Response:
    """One account: live state, cookie, rules, try box, reply and AI settings."""
    if user is None:
        return _login_redirect(request)
    request.state.user = user
    try:
        context = await _account_context(request, ops, account_id, user)
    except AccountNotFound:
        return _error_page(request, 404)
    context.update(
        rules=await ops.store.get_rules(account_id),
        settings=await ops.store.get_settings(account_id),
        ai=await ops.store.get_ai_settings(account_id),
    )
    return render(request, "account.html", context)


async def _visible(ops: AccountOperations, user: User, account_id: str) -> None:
    try:
        await account_for(ops.store, user, account_id)
    except AccountNotFound:
        raise not_found() from None


@router.put("/accounts/{account_id}/cookie")
async def replace_cookie(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """Replace the cookie atomically; only this account restarts."""
    await _visible(ops, user, account_id)
    form = await request.form()
    cookie = str(form.get("cookie") or "").strip()
    return await _saved(request, ops.update_cookie(account_id, cookie, actor=user.username), "account.cookie.replaced")


@router.put("/accounts/{account_id}/status")
async def set_status(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """Enable (start) or disable (stop) the account; answers the flipped button."""
    await _visible(ops, user, account_id)
    form = await request.form()
    enabled = _form_bool(form, "enabled")
    t = translator(request_lang(request))
    account, error = await _attempt(ops.set_enabled(account_id, enabled, actor=user.username))
    if error is not None or account is None:
        return _flash(request, t("err.invalid", error=error), error=True)
    message = t("account.enabled") if account.enabled else t("account.disabled")
    return render(request, "_enable.html", {"account": account, "message": message})


@router.delete("/accounts/{account_id}")
async def delete_account(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """Stop and delete the account with its rules and logs, then go back to the dashboard."""
    await _visible(ops, user, account_id)
    await ops.remove(account_id, actor=user.username)
    response = Response(status_code=204)
    response.headers["HX-Redirect"] = "/"
    return response


@router.put("/accounts/{account_id}/settings")
async def save_settings(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """Save the reply settings; the next buyer message sees them."""
    await _visible(ops, user, account_id)
    form = await request.form()
    t = translator(request_lang(request))
    try:
        settings = AccountSettings(
            default_reply=str(form.get("default_reply") or ""),
            default_reply_once_per_chat=_form_bool(form, "default_reply_once_per_chat"),
            debounce_seconds=_form_float(form, "debounce_seconds", 0.0),
            pause_minutes=_form_float(form, "pause_minutes", 10.0),
            auto_confirm=_form_bool(form, "auto_confirm"),
        )
    except InvalidValue as exc:
        return _flash(request, t("err.invalid", error=str(exc)), error=True)
    return await _saved(request, ops.set_settings(account_id, settings, ai=None, actor=user.username), "saved")


@router.put("/accounts/{account_id}/ai")
async def save_ai(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """AI settings; the key is write-only: an empty field keeps the stored one, the box removes it."""
    await _visible(ops, user, account_id)
    form = await request.form()
    t = translator(request_lang(request))
    key = str(form.get("api_key") or "").strip()
    api_key: str | Unset | None = None if _form_bool(form, "clear_api_key") else (key or UNSET)
    try:
        ai = AiSettingsUpdate(
            enabled=_form_bool(form, "enabled"),
            base_url=str(form.get("base_url") or "").strip() or None,
            model=str(form.get("model") or "").strip(),
            max_discount_percent=_form_float(form, "max_discount_percent", 10.0),
            max_discount_amount=_form_float(form, "max_discount_amount", 100.0),
            max_bargain_rounds=int(_form_float(form, "max_bargain_rounds", 3)),
            prompt=str(form.get("prompt") or ""),
            api_key=api_key,
        )
    except InvalidValue as exc:
        return _flash(request, t("err.invalid", error=str(exc)), error=True)
    current = await ops.store.get_settings(account_id)
    return await _saved(request, ops.set_settings(account_id, current, ai=ai, actor=user.username), "saved")


# --- rules ----------------------------------------------------------------------------------------------------


async def _save_rules(
    request: Request, ops: AccountOperations, account_id: str, user: User, rows: list[dict[str, Any]]
) -> Response:
    t = translator(request_lang(request))
    account = await account_for(ops.store, user, account_id)
    try:
        saved, error = await _attempt(ops.set_rules(account_id, to_rules(rows), actor=user.username))
    except InvalidValue as exc:
        saved, error = None, str(exc)
    if error is not None or saved is None:
        message = t("err.invalid", error=error)
        context = {"account": account, "rules": displayable(rows), "message": message, "error": True}
        return render(request, "_rules.html", context, status_code=422)
    context = {"account": account, "rules": saved, "message": t("rules.saved", count=len(saved)), "error": False}
    return render(request, "_rules.html", context)


@router.put("/accounts/{account_id}/rules")
async def save_rules(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """Replace the rules with the editor's rows, atomically (all saved or none)."""
    await _visible(ops, user, account_id)
    return await _save_rules(request, ops, account_id, user, rules_from_form(await request.form()))


@router.put("/accounts/{account_id}/rules/import")
async def import_rules(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """Replace the rules with a pasted JSON list (as exported); bad JSON changes nothing."""
    await _visible(ops, user, account_id)
    form = await request.form()
    try:
        rows = rules_from_json(str(form.get("rules_json") or ""))
    except (json.JSONDecodeError, InvalidValue) as exc:
        t = translator(request_lang(request))
        account = await ops.store.get_account(account_id)
        context = {
            "account": account,
            "rules": await ops.store.get_rules(account_id),
            "message": t("rules.import.bad", error=str(exc)),
            "error": True,
        }
        return render(request, "_rules.html", context, status_code=422)
    return await _save_rules(request, ops, account_id, user, rows)


@router.get("/accounts/{account_id}/rules.json")
async def export_rules(request: Request, account_id: str, user: PageUser, ops: Ops) -> Response:
    """The rules as a JSON file to download (the import's format)."""
    if user is None:
        return _login_redirect(request)
    await _visible(ops, user, account_id)
    rules = [rule_json(r) for r in await ops.store.get_rules(account_id)]
    body = json.dumps(rules, ensure_ascii=False, indent=2)
    filename = quote(f"rules-{account_id}.json")
    return Response(
        body,
        media_type="application/json; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{filename}"},
    )


@router.post("/accounts/{account_id}/try")
async def try_message(request: Request, account_id: str, user: ActionUser, ops: Ops) -> Response:
    """What the account would answer now, without sending: reply, source (which rule) and reason."""
    await _visible(ops, user, account_id)
    form = await request.form()
    t = translator(request_lang(request))
    text = str(form.get("text") or "").strip()
    if not text:
        return _flash(request, t("err.invalid", error=t("try.text")), error=True)
    item_id = str(form.get("item_id") or "").strip() or None
    result, error = await _attempt(ops.try_reply(account_id, text, item_id=item_id))
    if error is not None or result is None:
        return _flash(request, t("err.invalid", error=error), error=True)
    return render(request, "_try_result.html", {"result": result})


# --- conversations --------------------------------------------------------------------------------------------


@router.get("/accounts/{account_id}/chats")
async def chats_page(request: Request, account_id: str, user: PageUser, ops: Ops, partial: int = 0) -> Response:
    """The account's conversations, newest first; `partial=1` answers the list alone (live refresh)."""
    if user is None:
        return _login_redirect(request)
    request.state.user = user
    try:
        account = await account_for(ops.store, user, account_id)
    except AccountNotFound:
        return _error_page(request, 404)
    t = translator(request_lang(request))
    chats = []
    for summary in await ops.store.list_chats(account.id, limit=100):
        line = message_line(summary.last_message, seller_id=account.seller_id, t=t)
        chats.append(
            {
                "chat_id": summary.chat_id,
                "last_message": summary.last_message,
                "message_count": summary.message_count,
                "when": line.when,
            }
        )
    template = "_chat_list.html" if partial else "chats.html"
    return render(request, template, {"account": account, "chats": chats, "key": dom_key(account.id)})


@router.get("/accounts/{account_id}/chats/{chat_id}")
async def chat_page(request: Request, account_id: str, chat_id: str, user: PageUser, ops: Ops) -> Response:
    """One conversation, inbound and outbound with each reply's source; new lines arrive live."""
    if user is None:
        return _login_redirect(request)
    request.state.user = user
    try:
        account = await account_for(ops.store, user, account_id)
    except AccountNotFound:
        return _error_page(request, 404)
    t = translator(request_lang(request))
    messages = await ops.store.list_messages(account.id, chat_id=chat_id, limit=200)
    rules = await rule_names(ops.store, account.id)
    lines = [message_line(m, seller_id=account.seller_id, t=t, rules=rules) for m in messages if not is_own_echo(m)]
    context = {"account": account, "chat_id": chat_id, "messages": lines, "key": dom_key(account.id, chat_id)}
    return render(request, "chat.html", context)


@router.post("/accounts/{account_id}/chats/{chat_id}/messages")
async def manual_reply(request: Request, account_id: str, chat_id: str, user: ActionUser, ops: Ops) -> Response:
    """The seller answers by hand through the account's session; that chat's auto-replies pause."""
    await _visible(ops, user, account_id)
    form = await request.form()
    t = translator(request_lang(request))
    text = str(form.get("text") or "").strip()
    if not text:
        return _flash(request, t("err.invalid", error=t("chat.reply")), error=True)
    account = await ops.store.get_account(account_id)
    messages = await ops.store.list_messages(account_id, chat_id=chat_id, limit=100)
    to_user = buyer_of(messages, seller_id=account.seller_id)
    if to_user is None:
        return _flash(request, t("chat.reply.no_buyer"), error=True)
    try:
        sent = await ops.send_manual(account_id, chat_id, text, to_user=to_user)
    except NotConnected:
        return _flash(request, t("err.not_connected"), error=True)
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return _flash(request, t("chat.reply.failed", error=exc.message), error=True)
    except (*_INPUT_ERRORS, NoEngine) as exc:
        return _flash(request, t("chat.reply.failed", error=str(exc)), error=True)
    if not sent.ok:
        return _flash(request, t("chat.reply.failed", error=sent.error or ""), error=True)
    return _flash(request, t("chat.reply.sent"))


# --- orders and users -----------------------------------------------------------------------------------------


@router.get("/orders")
async def orders_page(request: Request, user: PageUser, ops: Ops, account: str | None = None) -> Response:
    """Orders of the user's accounts (or of one, `?account=`), most recently changed first."""
    if user is None:
        return _login_redirect(request)
    request.state.user = user
    accounts = await visible_accounts(ops.store, user)
    if account:
        accounts = [a for a in accounts if a.id == account]
    orders = []
    for a in accounts:
        orders.extend(await ops.store.list_orders(a.id, limit=200))
    orders.sort(key=lambda o: o.updated_at, reverse=True)
    return render(request, "orders.html", {"orders": orders[:500], "account_filter": account})


async def _users_fragment(request: Request, ops: AccountOperations, message: str | None, *, error: bool) -> Response:
    users = await ops.store.list_users()
    context = {"users": users, "message": message, "error": error}
    return render(request, "_users.html", context, status_code=422 if error else 200)


@router.get("/users")
async def users_page(request: Request, user: PageUser, ops: Ops) -> Response:
    """The users (admins only)."""
    if user is None:
        return _login_redirect(request)
    request.state.user = user
    if user.role is not Role.ADMIN:
        return _error_page(request, 403)
    return render(request, "users.html", {"users": await ops.store.list_users()})


@router.post("/users")
async def create_user(request: Request, user: Annotated[User, Depends(admin_action_user)], ops: Ops) -> Response:
    """Add a user (admins only); the password is hashed with argon2 by the API's helper."""
    form = await request.form()
    t = translator(request_lang(request))
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    if len(password) < 8:
        return await _users_fragment(request, ops, t("err.invalid", error="password: ≥ 8"), error=True)
    _, error = await _attempt(
        ops.store.create_user(
            username, await hash_password(password), role=str(form.get("role") or "user"), actor=user.username
        )
    )
    if error is not None:
        return await _users_fragment(request, ops, t("err.invalid", error=error), error=True)
    return await _users_fragment(request, ops, t("users.created"), error=False)


@router.delete("/users/{username}")
async def delete_user(
    request: Request, username: str, user: Annotated[User, Depends(admin_action_user)], ops: Ops
) -> Response:
    """Delete a user (admins only); the last admin cannot go."""
    t = translator(request_lang(request))
    try:
        await ops.store.delete_user(username, actor=user.username)
    except UserNotFound:
        return await _users_fragment(request, ops, t("err.not_found"), error=True)
    except (LastAdmin, Conflict) as exc:
        return await _users_fragment(request, ops, t("err.conflict", error=str(exc)), error=True)
    return await _users_fragment(request, ops, t("deleted"), error=False)
