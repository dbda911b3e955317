"""`/api/v1/auth/...`, `/api/v1/users...` (admin only) and `/api/v1/notifications` (the caller's own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from ...store import UNSET, Store, User
from ..auth import admin_user, authenticator, client_address, current_user, hash_password
from ..operations import AccountOperations, operations
from ..schemas import NotificationsIn, NotificationsOut, TokenOut, UserIn, UserOut, UserPatch

auth_router = APIRouter(prefix="/auth", tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])
notifications_router = APIRouter(prefix="/notifications", tags=["notifications"])

Caller = Annotated[User, Depends(current_user)]
Admin = Annotated[User, Depends(admin_user)]
Username = Annotated[str, Path(min_length=1, max_length=64)]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(_store)]


@auth_router.post("/token", response_model=TokenOut, summary="OAuth2 password flow: form username, password")
async def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    auth = authenticator(request)
    user = await auth.login(form.username, form.password, client=client_address(request))
    return TokenOut(access_token=auth.issue_token(user), expires_in=int(auth.settings.api.token_ttl))


@auth_router.get("/me", response_model=UserOut, summary="The signed-in user")
async def me(user: Caller) -> UserOut:
    return UserOut.of(user)


@users_router.get("", response_model=list[UserOut])
async def list_users(admin: Admin, store: StoreDep) -> list[UserOut]:
    return [UserOut.of(u) for u in await store.list_users()]


@users_router.post("", response_model=UserOut, status_code=201)
async def create_user(body: UserIn, admin: Admin, store: StoreDep) -> UserOut:
    user = await store.create_user(
        body.username, await hash_password(body.password), role=body.role, actor=admin.username
    )
    return UserOut.of(user)


@users_router.patch("/{username}", response_model=UserOut, summary="Change password, role or disabled")
async def patch_user(username: Username, body: UserPatch, admin: Admin, store: StoreDep) -> UserOut:
    user = await store.update_user(
        username,
        password_hash=await hash_password(body.password) if body.password is not None else UNSET,
        role=body.role if body.role is not None else UNSET,
        disabled=body.disabled if body.disabled is not None else UNSET,
        actor=admin.username,
    )
    return UserOut.of(user)


@users_router.delete("/{username}", status_code=204, summary="Delete a user who owns no account")
async def delete_user(username: Username, admin: Admin, store: StoreDep) -> Response:
    await store.delete_user(username, actor=admin.username)
    return Response(status_code=204)


@notifications_router.get("", response_model=NotificationsOut, summary="The caller's notification settings")
async def get_notifications(user: Caller, store: StoreDep, reveal: bool = False) -> NotificationsOut:
    settings = await store.get_notification_settings(user.username)
    out = NotificationsOut.of(settings)
    if reveal:  # the caller's own URLs, for their own editor
        out.urls = await store.get_notification_urls(user.username)
    return out


@notifications_router.put("", response_model=NotificationsOut)
async def put_notifications(
    body: NotificationsIn, user: Caller, store: StoreDep, ops: Annotated[AccountOperations, Depends(operations)]
) -> NotificationsOut:
    await ops.check_notification_urls(body.urls)  # 422 naming `urls.<n>`, before anything is saved
    saved = await store.put_notification_settings(user.username, urls=body.urls, events=body.events)
    return NotificationsOut.of(saved)
