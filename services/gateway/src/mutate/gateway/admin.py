"""`mutate-gateway admin …`: bootstrap organizations and keys from a shell.

Output goes to stdout with the new API key alone on the last line (scripts
take it from there); warnings go to stderr. Secrets are shown once and never
stored in clear.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from mutate.common.errors import MutateError
from mutate.gateway.backends import Notifier
from mutate.gateway.db import Database
from mutate.gateway.settings import GatewaySettings
from mutate.gateway.tenancy import OPERATOR_SCOPE, TenancyStore

logger = logging.getLogger(__name__)


async def _open(settings: GatewaySettings) -> Database:
    db = Database.create(
        settings.database_url,
        schema=settings.database_schema,
        min_size=1,
        max_size=2,
        timeout=settings.database_timeout,
    )
    await db.open(wait_timeout=settings.database_timeout)
    return db


async def create_org(
    settings: GatewaySettings,
    *,
    name: str,
    if_missing: bool,
    key_name: str | None,
    operator: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    db = await _open(settings)
    try:
        store = TenancyStore(db)
        existing = await store.find_organization(name=name)
        if existing is not None and not if_missing:
            print(
                f"error: an organization named {name!r} exists ({existing['id']}); "
                "pass --if-missing to get a new key for it",
                file=err,
            )
            return 1
        if existing is not None:
            organization = existing
            print(f"organization_id: {organization['id']} (exists)", file=out)
        else:
            organization = await store.create_organization(name)
            print(f"organization_id: {organization['id']}", file=out)
            await _signing_secret(settings, organization["id"], out=out, err=err)
        scopes = [OPERATOR_SCOPE] if operator else []
        row, secret = await store.create_api_key(
            organization["id"],
            key_name or ("dev" if existing is not None else "default"),
            scopes,
        )
        _print_key(row, secret, out=out)
        return 0
    finally:
        await db.close()


async def _signing_secret(
    settings: GatewaySettings, organization_id: str, *, out: TextIO, err: TextIO
) -> None:
    """Ask the notifier for the organization's webhook signing secret."""
    notifier = Notifier(settings.notifier_address, timeout=settings.rpc_timeout)
    try:
        secret = await notifier.create_signing_secret(organization_id)
    except MutateError as exc:
        print(
            f"warning: no webhook signing secret yet: the notifier at "
            f"{settings.notifier_address} said: {exc.message}. The organization "
            "was created; once the notifier runs, create the secret with "
            "RotateWebhookSecret (POST /v1/webhook-secret:rotate).",
            file=err,
        )
        return
    finally:
        await notifier.close()
    print(f"webhook_secret (shown once): {secret.secret}", file=out)


async def create_key(
    settings: GatewaySettings,
    *,
    organization_id: str,
    name: str,
    operator: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    db = await _open(settings)
    try:
        store = TenancyStore(db)
        if await store.find_organization(id=organization_id) is None:
            print(f"error: organization {organization_id} not found", file=err)
            return 1
        scopes = [OPERATOR_SCOPE] if operator else []
        row, secret = await store.create_api_key(organization_id, name, scopes)
        print(f"organization_id: {organization_id}", file=out)
        _print_key(row, secret, out=out)
        return 0
    finally:
        await db.close()


def _print_key(row: dict[str, object], secret: str, *, out: TextIO) -> None:
    scopes = ",".join(row["scopes"] or []) or "-"  # type: ignore[arg-type]
    print(f"api_key_id: {row['id']} name={row['name']} scopes={scopes}", file=out)
    print("api_key (shown once, on the next line):", file=out)
    print(secret, file=out)
