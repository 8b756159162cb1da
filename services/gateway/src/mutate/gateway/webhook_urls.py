"""The check a webhook URL gets when it is saved (configuration or job).

`http(s)` only, then the private-address refusal of `mutate.common.netguard`.
A host that does not resolve right now is accepted: DNS may not be set up
yet, and the notifier checks every address again when it connects.
"""

from __future__ import annotations

import logging

from mutate.common import netguard
from mutate.common.errors import InvalidArgument

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048


class WebhookUrlChecker:
    def __init__(
        self,
        *,
        policy: netguard.NetworkPolicy,
        resolver: netguard.Resolver = netguard.system_resolver,
    ) -> None:
        self._policy = policy
        self._resolver = resolver

    async def check(self, url: str, *, field: str = "webhook_url") -> str:
        """The URL to store ("" for none), or InvalidArgument saying why not."""
        url = url.strip()
        if not url:
            return ""
        if len(url) > MAX_URL_LENGTH:
            raise InvalidArgument(
                f"{field} is longer than {MAX_URL_LENGTH} characters",
                field_violations=[(field, "too long")],
            )
        try:
            await netguard.check_url(url, policy=self._policy, resolver=self._resolver)
        except netguard.UrlRefused as exc:
            raise InvalidArgument(
                f"{field} {url!r} is refused: {exc.message}",
                field_violations=[(field, exc.message)],
                reason="WEBHOOK_URL_REFUSED",
            ) from None
        except netguard.HostUnresolvable as exc:
            logger.info(
                "webhook host does not resolve yet; accepted",
                extra={"url": url, "error": str(exc)},
            )
        return url
