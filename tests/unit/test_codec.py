"""The AES-GCM payload codec and its key setting, without a server."""

from __future__ import annotations

import asyncio
import base64

import pytest
from temporalio.api.common.v1 import Payload

from agentrun.codec import ENCODING, PayloadEncryptionCodec, PayloadKeyError, parse_keys
from agentrun.converter import data_converter
from agentrun.settings import SettingsError, load_settings

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def test_encrypts_with_the_first_key_and_a_fresh_nonce_each_time() -> None:
    codec = PayloadEncryptionCodec(parse_keys(f"k2:{K2},k1:{K1}"))
    one, two = codec.encode_sync([_payload("secret prompt"), _payload("secret prompt")])
    for sealed in (one, two):
        assert sealed.metadata["encoding"] == ENCODING
        assert sealed.metadata["encryption-key-id"] == b"k2"
        assert b"secret" not in sealed.SerializeToString()
    assert one.data[:12] != two.data[:12] and one.data != two.data
    assert codec.decode_sync([one]) == [_payload("secret prompt")]


def test_a_rotated_key_set_still_opens_old_payloads_and_plain_ones_pass() -> None:
    old = PayloadEncryptionCodec(parse_keys(f"k1:{K1}")).encode_sync([_payload("old run")])
    rotated = PayloadEncryptionCodec(parse_keys(f"k2:{K2},k1:{K1}"))
    assert rotated.decode_sync(old) == [_payload("old run")]
    assert rotated.decode_sync([_payload("from before encryption")]) == [
        _payload("from before encryption")
    ]


def test_a_missing_or_wrong_key_is_a_clear_error() -> None:
    sealed = PayloadEncryptionCodec(parse_keys(f"k1:{K1}")).encode_sync([_payload("x")])
    with pytest.raises(PayloadKeyError, match=r"key id 'k1'.*AGENTRUN_PAYLOAD_KEYS.*not set"):
        PayloadEncryptionCodec().decode_sync(sealed)
    with pytest.raises(PayloadKeyError, match=r"holds the key ids k2"):
        PayloadEncryptionCodec(parse_keys(f"k2:{K2}")).decode_sync(sealed)
    with pytest.raises(PayloadKeyError, match="different key under the same id"):
        PayloadEncryptionCodec(parse_keys(f"k1:{K2}")).decode_sync(sealed)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("nokey", "expected id:base64key"),
        ("k1:***", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "16, 24 or 32 bytes"),
        (f"k1:{K1},k1:{K2}", "appears twice"),
    ],
)
def test_a_bad_key_setting_names_the_variable_not_the_key(value: str, needle: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(payload_keys=value)
    assert "AGENTRUN_PAYLOAD_KEYS" in str(info.value) and needle in str(info.value)
    assert K1 not in str(info.value) and K2 not in str(info.value)


def test_the_data_converter_seals_payloads_only_with_keys() -> None:
    with_key = data_converter(load_settings(payload_keys=f"k1:{K1}"))
    plain = data_converter(load_settings(payload_keys=None))
    [sealed] = asyncio.run(with_key.encode(["a prompt"]))
    assert sealed.metadata["encoding"] == ENCODING
    assert asyncio.run(with_key.decode([sealed], [str])) == ["a prompt"]
    [clear] = asyncio.run(plain.encode(["a prompt"]))
    assert clear.metadata["encoding"] == b"json/plain"
    with pytest.raises(PayloadKeyError, match="not set on this process"):
        asyncio.run(plain.decode([sealed], [str]))
    settings = load_settings(payload_keys=f"k1:{K1}")
    assert K1 not in repr(settings) and K1 not in settings.model_dump_json()
