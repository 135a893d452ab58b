"""The one data converter of every agentrun client and worker: pydantic models as JSON, and,
with AGENTRUN_PAYLOAD_KEYS set, every payload sealed by the AES-GCM codec (agentrun.codec)."""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
)

from agentrun.codec import PayloadEncryptionCodec
from agentrun.settings import Settings

__all__ = ["codec_from_settings", "data_converter"]


def codec_from_settings(settings: Settings) -> PayloadEncryptionCodec:
    keys = settings.payload_keys.get_secret_value() if settings.payload_keys else None
    return PayloadEncryptionCodec.from_setting(keys)


def data_converter(settings: Settings) -> DataConverter:
    """pydantic_data_converter plus the payload codec. The codec is there even without keys:
    it passes plain payloads through and refuses an encrypted one with an error that names the
    missing key id, instead of the converter's "unknown encoding"."""
    codec = codec_from_settings(settings)
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        # Failure messages and stack traces can quote a prompt or a tool's arguments: with a
        # key, they move into an encoded payload too (the Web UI decodes them via the codec
        # server).
        failure_converter_class=(
            DefaultFailureConverterWithEncodedAttributes
            if codec.encrypts
            else DefaultFailureConverter
        ),
    )
