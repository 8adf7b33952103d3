"""Failures under the codec: messages sealed, except a codec key error's (it names key ids only,
and an operator without the key must read it)."""

from __future__ import annotations

from temporalio.api.failure.v1 import Failure

from orderflow import codec
from orderflow.codec import CodecKeyError, Keyring

KEY = codec.new_key("unit-a")
CONVERTER = codec.data_converter(Keyring(KEY))


async def sealed(error: BaseException) -> Failure:
    """The failure a worker sends for `error`, encoded by the codec as it leaves the process."""
    failure = Failure()
    CONVERTER.failure_converter.to_failure(error, CONVERTER.payload_converter, failure)
    assert CONVERTER.payload_codec is not None
    await CONVERTER.payload_codec.encode_failure(failure)
    return failure


async def test_a_failure_quoting_customer_data_is_sealed_and_opens_with_the_key() -> None:
    failure = await sealed(ValueError("no such customer asha@example.com"))
    assert failure.message == "Encoded failure" and b"asha" not in failure.SerializeToString()
    assert failure.encoded_attributes.metadata["encryption-key-id"] == KEY.key_id.encode()
    assert "asha@example.com" in str(await CONVERTER.decode_failure(failure))


async def test_a_codec_key_error_keeps_its_message_in_clear() -> None:
    try:
        Keyring(codec.new_key("unit-b")).decrypt(KEY.key_id, b"\0" * 40)
    except CodecKeyError as error:
        failure = await sealed(error)
    assert failure.message.startswith(f"payload encrypted with codec key {KEY.key_id!r}")
    assert failure.application_failure_info.type == "CodecKeyError"
    assert KEY.spec().split(":")[1] not in failure.SerializeToString().decode(errors="replace")
    assert str(await CONVERTER.decode_failure(failure)) == f"CodecKeyError: {failure.message}"
