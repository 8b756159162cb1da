"""A streamed single PUT, signed with minio's own SigV4 signer.

minio's `put_object` reads each part into memory and, over plain HTTP, hashes
it for the payload signature before the first byte leaves; with a known
length a PUT can instead send bytes while they arrive. The body is sent as
`UNSIGNED-PAYLOAD` (what minio itself sends over HTTPS): the service checks
the content against the sender's declared SHA-256 on the way and holds back
the last piece until that check passes, so a body is only ever completed
when it is the declared one. URL building, signing and error parsing are
minio's (`BaseURL`, `sign_v4_s3`, `S3Error.fromxml`); only the request is ours.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping

import urllib3
from minio.credentials.credentials import Credentials
from minio.error import InvalidResponseError, S3Error
from minio.helpers import BaseURL
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow

from mutate.storage.settings import Endpoint, ProviderConfig

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class StreamingPut:
    """Streamed PUTs of a known length to one endpoint, over a shared pool."""

    def __init__(
        self,
        endpoint: Endpoint,
        config: ProviderConfig,
        http: urllib3.PoolManager,
        *,
        retries: urllib3.Retry,
    ) -> None:
        self._base = BaseURL(endpoint.url, config.region)
        if config.addressing_style == "virtual":
            self._base.virtual_style_flag = True
        elif config.addressing_style == "path":
            self._base.virtual_style_flag = False
        self._region = self._base.region or config.region
        self._credentials = Credentials(config.access_key, config.secret_key)
        self._http = http
        self._retries = retries

    def put(
        self,
        bucket: str,
        key: str,
        body: Iterable[bytes | memoryview],
        *,
        length: int,
        headers: Mapping[str, str],
    ) -> str:
        """PUT `length` bytes from `body`; returns the ETag.

        Retried only as `retries` allows, which must not cover failures
        after the body started (it is a one-time stream): the caller, who
        still holds the bytes, retries the whole put on Unavailable.
        An exception raised by `body` closes the connection with the body
        short of its Content-Length, which the store discards.

        Known gap: a store that refuses the request (e.g. a revoked key)
        while the body is still going out resets the connection, and the
        refusal is reported as the store being unreachable (Unavailable),
        not as the credential error it was.
        """
        url = self._base.build(
            method="PUT", region=self._region, bucket_name=bucket, object_name=key
        )
        date = utcnow()
        request_headers: dict[str, str | list[str] | tuple[str]] = {
            **headers,
            "Host": url.netloc,
            "Content-Length": str(length),
            "x-amz-date": to_amz_date(date),
            "x-amz-content-sha256": UNSIGNED_PAYLOAD,
        }
        signed = sign_v4_s3(
            method="PUT",
            url=url,
            region=self._region,
            headers=request_headers,
            credentials=self._credentials,
            content_sha256=UNSIGNED_PAYLOAD,
            date=date,
        )
        response = self._http.urlopen(
            "PUT",
            urllib.parse.urlunsplit(url),
            body=body,
            headers={name: str(value) for name, value in signed.items()},
            retries=self._retries,
            redirect=False,
            preload_content=True,
        )
        if response.status == 200:
            return str(response.headers.get("etag") or "").strip('"')
        content_type = str(response.headers.get("content-type") or "")
        if response.data and "xml" in content_type:
            raise S3Error.fromxml(response)
        raise InvalidResponseError(
            response.status,
            content_type,
            response.data.decode(errors="replace") if response.data else None,
        )
