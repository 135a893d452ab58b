"""Payload encryption: a Temporal PayloadCodec that seals every workflow and activity payload
with AES-GCM before it leaves the process, so prompts, tool arguments and results are not
readable in Temporal's history, visibility store or Web UI without a key.

Keys come from AGENTRUN_PAYLOAD_KEYS as "id:base64key,id:base64key". The first key encrypts;
every key decrypts, so a key rotates by putting the new one first and keeping the old one after
it until no run that used it is kept any more. Each sealed payload names its key id and carries
a fresh random 12-byte nonce; the key id is also the AES-GCM associated data, so a payload
cannot be re-labelled to another key. Payloads without the encrypted encoding (histories from
before encryption was turned on) pass through unchanged.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

__all__ = [
    "ENCODING",
    "KEY_ID_METADATA",
    "PayloadEncryptionCodec",
    "PayloadKeyError",
    "parse_keys",
]

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SETTING = "AGENTRUN_PAYLOAD_KEYS"


class PayloadKeyError(ValueError):
    """A payload cannot be sealed or opened with the keys this process has."""


@dataclass(frozen=True)
class _Key:
    key_id: str
    aead: AESGCM


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """Parse "id:base64key,..." into (id, key) pairs. Errors name the key id or position, never
    the key material."""
    keys: list[tuple[str, bytes]] = []
    for position, item in enumerate((p.strip() for p in text.split(",")), start=1):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        key_id = key_id.strip()
        if not sep or not KEY_ID_PATTERN.match(key_id):
            raise ValueError(
                f"key {position}: expected id:base64key with an id of letters, digits, '_', "
                "'.' or '-'"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r}: not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise ValueError(
                f"key {key_id!r}: AES-GCM keys are 16, 24 or 32 bytes, this one is {len(key)} "
                "(make one with: python -c 'import os,base64;print(base64.b64encode("
                "os.urandom(32)).decode())')"
            )
        if any(existing == key_id for existing, _ in keys):
            raise ValueError(f"key id {key_id!r} appears twice")
        keys.append((key_id, key))
    if not keys:
        raise ValueError("no key given")
    return keys


class PayloadEncryptionCodec(PayloadCodec):
    """AES-GCM payload codec. With no keys it encrypts nothing, passes plain payloads through
    and refuses encrypted ones with an error that says which key is missing."""

    def __init__(self, keys: Sequence[tuple[str, bytes]] = ()) -> None:
        self._keys = [_Key(key_id, AESGCM(key)) for key_id, key in keys]
        self._by_id = {k.key_id: k for k in self._keys}

    @classmethod
    def from_setting(cls, text: str | None) -> PayloadEncryptionCodec:
        return cls(parse_keys(text) if text and text.strip() else ())

    @property
    def encrypts(self) -> bool:
        return bool(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return [k.key_id for k in self._keys]

    # The SDK's interface is async; AES-GCM on payload-sized data is fast enough to run inline.
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_sync(payloads)

    def encode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        if not self._keys:
            return list(payloads)
        key = self._keys[0]
        out = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = key.aead.encrypt(nonce, payload.SerializeToString(), key.key_id.encode())
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key.key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    def decode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self._open(p) for p in payloads]

    def _open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        key = self._by_id.get(key_id)
        if key is None:
            have = (
                f"it holds the key ids {', '.join(self.key_ids)}"
                if self._keys
                else "it is not set on this process"
            )
            raise PayloadKeyError(
                f"payload encrypted with key id {key_id!r}, which {SETTING} does not hold "
                f"({have}); add that key (after the current one) to read it"
            )
        data = payload.data
        try:
            plain = key.aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(
                f"payload encrypted with key id {key_id!r} does not open with the key of that id "
                f"in {SETTING}: a different key under the same id, or a damaged payload"
            ) from None
        opened = Payload()
        opened.ParseFromString(plain)
        return opened
