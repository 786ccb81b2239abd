"""Where a node gets the signed federation directory from: its file, a URL, or a peer that
advertised a newer serial. What it gets is only bytes: `node.directory_state` verifies them
before anything is installed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import requests.utils

from federation.client import ClientIdentity, fetch_directory
from federation.directory import (
    MALFORMED,
    UNAVAILABLE,
    DirectoryError,
)
from federation.signing import SERIAL_METADATA

# A directory of a few hundred members is tens of kilobytes; anything near this is not one,
# and reading it whole would let a mirror or a peer exhaust our memory.
MAX_DIRECTORY_BYTES = 8 * 1024 * 1024
# The advertised serial is a decimal uint64: longer text is not a serial.
_MAX_SERIAL_DIGITS = 20


class _SystemTls(requests.adapters.HTTPAdapter):
    """Verifies https servers with one stdlib ``SSLContext``: the system trust store, or
    exactly the configured CA. requests alone would verify against certifi's bundle (or one
    named by REQUESTS_CA_BUNDLE) instead; this keeps what the operator configured."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs, ssl_context=self._context)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, **proxy_kwargs, ssl_context=self._context)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to add: the context verifies (requests would load its bundle into it)."""


def _cause(exc: BaseException) -> str:
    """The failure requests and urllib3 wrap (refused, timed out, certificate not
    trusted), without their retry bookkeeping."""
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and exc.args:
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            return str(exc)
        exc = inner


def _fetch(url: str, timeout: float, ca_file: Path | None) -> bytes:
    """At most MAX_DIRECTORY_BYTES + 1 bytes of ``url``; DirectoryError naming the URL."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except OSError as exc:  # ssl.SSLError included
        raise DirectoryError(
            f"cannot fetch the directory from {url}: CA file {ca_file}: {exc.strerror or exc}",
            UNAVAILABLE,
        ) from None
    with requests.Session() as session:
        try:
            # No credentials from ~/.netrc, no CA bundle from the environment; proxies from
            # the environment (http_proxy, https_proxy, no_proxy) as before.
            session.trust_env = False
            session.proxies = requests.utils.get_environ_proxies(url)
            session.mount("https://", _SystemTls(context))
            session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
            response = session.get(
                url,
                headers={
                    "User-Agent": "liaison",
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                },
                timeout=(timeout, timeout),
                stream=True,
            )
            with response:
                if response.status_code >= 400:
                    status = f"HTTP {response.status_code} {response.reason}"
                else:
                    data = bytearray()
                    for chunk in response.iter_content(64 * 1024):
                        data += chunk
                        if len(data) > MAX_DIRECTORY_BYTES:
                            break
                    return bytes(data)
        except (requests.RequestException, OSError, ValueError) as exc:
            # refused, reset, timed out, TLS failures, malformed URLs
            status = _cause(exc)
    raise DirectoryError(f"cannot fetch the directory from {url}: {status}", UNAVAILABLE)


def load_from(source: str, *, timeout: float = 10.0, ca_file: Path | None = None) -> bytes:
    """The bytes of a signed directory from a file path or an http(s) URL.

    Plain http is acceptable because the bytes are verified against the authority's key
    anyway; https with the system trust store (or `ca_file`) adds confidentiality. Raises
    DirectoryError(reason `directory_unavailable`) when the source cannot be read.
    """
    if source.startswith(("http://", "https://")):
        data = _fetch(source, timeout, ca_file)
    else:
        path = Path(source.removeprefix("file://"))
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_DIRECTORY_BYTES + 1)
        except FileNotFoundError:
            raise DirectoryError(f"directory file {path} not found", UNAVAILABLE) from None
        except OSError as exc:
            raise DirectoryError(
                f"cannot read directory file {path}: {exc.strerror}", UNAVAILABLE
            ) from None
    if len(data) > MAX_DIRECTORY_BYTES:
        raise DirectoryError(
            f"{source} is larger than {MAX_DIRECTORY_BYTES} bytes: not a directory", MALFORMED
        )
    return data


def advertised_serial(metadata: Mapping[str, object]) -> int | None:
    """The directory serial a caller advertised in `liaison-directory-serial`, or None when
    it sent none or something that is not a serial (which is never an error: it is news).
    Takes the dict the handler makes of `context.invocation_metadata()`."""
    value = metadata.get(SERIAL_METADATA)
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if isinstance(text, str) and text.isdigit() and len(text) <= _MAX_SERIAL_DIGITS:
        return int(text)
    return None


def fetcher_for(
    identity: Callable[[], ClientIdentity],
    peer: str,
    endpoint: str,
    known_serial: Callable[[], int],
    *,
    timeout: float = 10.0,
) -> Callable[[], Awaitable[bytes]]:
    """A `fetch` for `learn_from_peer`: one short-lived mTLS channel to the peer per fetch
    (fetches are rare: rate-limited, and only when a peer advertises a newer serial).

    `identity` (our credentials, read from their files) is called when a fetch runs, not
    when it is made: a fetch is made on every call that advertises a newer serial, and
    `learn_from_peer` drops most of them unrun."""

    async def fetch() -> bytes:
        own = await asyncio.to_thread(identity)
        # only bytes to offer: `offer` verifies them
        return await fetch_directory(own, peer, endpoint, known_serial(), timeout)

    return fetch
