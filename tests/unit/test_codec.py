"""The payload codec on its own: what an encrypted payload looks like and how it fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from orderflow import codec

A = codec.new_key("key-a")
B = codec.new_key("key-b")


def clear(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_a_payload_is_sealed_under_the_current_key_and_opens_again() -> None:
    ring = codec.EncryptionCodec(codec.Keyring(B, [A]))
    [sealed] = await ring.encode([clear("asha@example.com")])
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert sealed.metadata["encryption-key-id"] == b"key-b"
    assert b"asha" not in sealed.SerializeToString()
    assert await ring.decode([sealed]) == [clear("asha@example.com")]
    [again] = await ring.encode([clear("asha@example.com")])
    assert again.data != sealed.data  # a fresh nonce each time


async def test_an_old_key_still_opens_what_it_wrote_and_clear_payloads_pass() -> None:
    [under_a] = await codec.EncryptionCodec(codec.Keyring(A)).encode([clear("x")])
    rotated = codec.EncryptionCodec(codec.Keyring(B, [A]))
    assert await rotated.decode([under_a, clear("y")]) == [clear("x"), clear("y")]


async def test_a_key_removed_is_named_in_the_error() -> None:
    [under_a] = await codec.EncryptionCodec(codec.Keyring(A)).encode([clear("x")])
    with pytest.raises(codec.CodecKeyError, match="codec key 'key-a', which this process"):
        await codec.EncryptionCodec(codec.Keyring(B)).decode([under_a])


async def test_a_payload_relabelled_to_another_key_or_damaged_does_not_open() -> None:
    same_id_other_secret = codec.new_key("key-a")
    [under_a] = await codec.EncryptionCodec(codec.Keyring(A)).encode([clear("x")])
    with pytest.raises(codec.CodecKeyError, match="'key-a' does not decrypt"):
        await codec.EncryptionCodec(codec.Keyring(same_id_other_secret)).decode([under_a])
    relabelled = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"key-b"},
        data=under_a.data,
    )
    with pytest.raises(codec.CodecKeyError, match="'key-b' does not decrypt"):
        await codec.EncryptionCodec(codec.Keyring(B, [A])).decode([relabelled])


def test_two_keys_with_one_id_are_refused() -> None:
    with pytest.raises(codec.CodecKeyError, match="share the id 'key-a'"):
        codec.Keyring(A, [codec.new_key("key-a")])


def test_the_local_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    first = codec.local_key(folder)
    assert codec.local_key(folder) == first
    assert (folder / codec.LOCAL_KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_the_customer_hash_is_stable_keyed_and_holds_no_email() -> None:
    one = codec.customer_hash("Asha@Example.com ", "s1")
    assert one == codec.customer_hash("asha@example.com", "s1")
    assert one != codec.customer_hash("asha@example.com", "s2")
    assert one.startswith("c_") and "asha" not in one


def test_processes_starting_at_once_agree_on_one_local_key(tmp_path: Path) -> None:
    import concurrent.futures

    folder = tmp_path / "data"
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        keys = list(pool.map(codec.local_key, [folder] * 8))
    assert len({k.spec() for k in keys}) == 1
    assert [p.name for p in folder.iterdir()] == [codec.LOCAL_KEY_FILE]
