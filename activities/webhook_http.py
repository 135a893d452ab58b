"""One webhook POST: where it may go (no private addresses unless allowed), the request itself
pinned to the address that was checked, and what its answer means.

A tenant chooses the URL, so a worker must not become its way into the worker's own network:
the host is resolved once, every address it resolves to must be public (unless
AGENTRUN_WEBHOOK_ALLOW_PRIVATE=true), and the connection goes to that checked address, with the
URL's host in the Host header and TLS name (a DNS answer that changes between the check and the
connect cannot redirect it). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from activities.model_errors import retry_after_value

__all__ = ["AddressRefused", "Answer", "post", "public_addresses", "verdict"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
USER_AGENT = "agentrun-webhooks/1"


class AddressRefused(Exception):
    """The URL's host is (or resolves to) an address a webhook may not reach."""


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public(ip: IPAddress) -> bool:
    inner = _embedded_ipv4(ip)
    return all(a.is_global and not a.is_multicast for a in {ip, inner})


async def public_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses to connect to for `host`; AddressRefused when it resolves to any
    address that is not public (loopback, private, link-local, shared, reserved, multicast)
    and private ones are not allowed. A name that does not resolve raises OSError."""
    try:
        found: list[str] = [str(ipaddress.ip_address(host))]
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not found:
        raise OSError(f"{host} has no address")
    if not allow_private:
        refused = [a for a in found if not is_public(ipaddress.ip_address(a.split("%")[0]))]
        if refused:
            raise AddressRefused(
                f"{host} resolves to {refused[0]}, which is not a public address; webhooks "
                "may not call private networks unless AGENTRUN_WEBHOOK_ALLOW_PRIVATE=true"
            )
    return found


@dataclass(frozen=True)
class Answer:
    status_code: int
    retry_after_s: float | None = None


async def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float,
    allow_private: bool,
) -> Answer:
    """POST `body` to `url` at a checked address; the response body is never read. Raises
    AddressRefused, OSError (no such host), httpx.TransportError (connect, timeout), or
    TimeoutError (the whole exchange took longer than `timeout_s`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    async with asyncio.timeout(timeout_s):
        addresses = await public_addresses(host, port, allow_private=allow_private)
        last: httpx.TransportError | None = None
        async with httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            for address in addresses:
                literal = f"[{address}]" if ":" in address else address
                pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
                request = client.build_request(
                    "POST",
                    pinned,
                    content=body,
                    headers={**headers, "host": parts.netloc, "user-agent": USER_AGENT},
                    extensions={"sni_hostname": host} if parts.scheme == "https" else {},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    last = exc  # the next address of the name, if any
                    continue
                await response.aclose()
                return Answer(
                    response.status_code, retry_after_value(response.headers.get("retry-after"))
                )
        assert last is not None
        raise last


def verdict(status_code: int) -> str:
    """What an answer means: "delivered" (2xx), "gone" (410: the endpoint is gone for good),
    "retry" (408, 429, 5xx) or "refused" (any other: a redirect, or a 4xx no retry fixes)."""
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "gone"
    if status_code in (408, 429) or status_code >= 500:
        return "retry"
    return "refused"
