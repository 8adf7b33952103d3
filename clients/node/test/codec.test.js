// node --test test/codec.test.js: codec.js against what the Python codec (orderflow/codec.py)
// wrote. The vectors are test/python-vectors.json (committed), or CODEC_VECTORS's file when
// tests/test_node_client.py passes fresh ones; with CODEC_NODE_OUT set, Node seals the same
// payloads there for Python to open.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { inspect } from 'node:util';

import {
  CodecKeyError,
  codecDataConverter,
  customerHash,
  customerHashSecret,
  ENCODING,
  EncryptionCodec,
  KEY_ID_METADATA,
  Keyring,
  loadKeyring,
  LOCAL_CUSTOMER_HASH_SECRET,
  parseKey,
} from '../codec.js';

const VECTORS = process.env.CODEC_VECTORS ?? new URL('./python-vectors.json', import.meta.url);
const vectors = JSON.parse(readFileSync(VECTORS, 'utf8'));
const current = parseKey(vectors.keys.current, 'vectors');
const old = parseKey(vectors.keys.old, 'vectors');
const both = new EncryptionCodec(new Keyring(current, [old]));
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** A payload from the vectors' JSON (metadata values and data in base64). */
const fromWire = ({ metadata, data }) => ({
  metadata: Object.fromEntries(
    Object.entries(metadata).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))]),
  ),
  data: new Uint8Array(Buffer.from(data, 'base64')),
});

const toWire = ({ metadata, data }) => ({
  metadata: Object.fromEntries(
    Object.entries(metadata).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
  ),
  data: Buffer.from(data).toString('base64'),
});

/** The payload with another key id in its metadata. */
const withKeyId = (payload, keyId) => ({
  ...payload,
  metadata: { ...payload.metadata, [KEY_ID_METADATA]: utf8.encode(keyId) },
});

const sameBytes = (a, b) => Buffer.from(a ?? []).equals(Buffer.from(b ?? []));

function assertSamePayload(actual, expected) {
  assert.deepEqual(Object.keys(actual.metadata).sort(), Object.keys(expected.metadata).sort());
  for (const [k, v] of Object.entries(expected.metadata)) {
    assert.ok(sameBytes(actual.metadata[k], v), `metadata ${k}`);
  }
  assert.ok(sameBytes(actual.data, expected.data), 'data');
}

test('Python-sealed payloads open in Node, under the current key and an old one', async () => {
  assert.ok(vectors.payloads.length >= 4);
  const sealed = vectors.payloads.map(({ sealed }) => fromWire(sealed));
  const opened = await both.decode(sealed);
  vectors.payloads.forEach(({ key, plain }, i) => {
    const keyId = key === 'old' ? old.keyId : current.keyId;
    assert.equal(text.decode(sealed[i].metadata.encoding), ENCODING);
    assert.equal(text.decode(sealed[i].metadata[KEY_ID_METADATA]), keyId);
    assertSamePayload(opened[i], fromWire(plain));
  });
  const order = JSON.parse(text.decode(opened[0].data));
  assert.equal(order.email, 'asha@example.com');
  assert.equal(order.items[0].sku, 'KITE-₹');
});

test('Node seals the same payloads (and writes them for Python when asked)', async () => {
  const codec = new EncryptionCodec(new Keyring(current, [old]));
  const plains = vectors.payloads.map(({ plain }) => fromWire(plain));
  const sealed = await codec.encode(plains);
  sealed.forEach((payload, i) => {
    assert.deepEqual(Object.keys(payload.metadata).sort(), ['encoding', KEY_ID_METADATA]);
    assert.equal(text.decode(payload.metadata.encoding), ENCODING);
    assert.equal(text.decode(payload.metadata[KEY_ID_METADATA]), current.keyId);
    const clear = Buffer.from(plains[i].data);
    if (clear.length >= 8) assert.ok(!Buffer.from(payload.data).includes(clear), 'data in clear');
  });
  assert.ok(!sameBytes(sealed[0].data, (await codec.encode([plains[0]]))[0].data), 'fresh nonce');
  const reopened = await codec.decode(sealed);
  reopened.forEach((payload, i) => assertSamePayload(payload, plains[i]));
  if (process.env.CODEC_NODE_OUT) {
    const payloads = plains.map((plain, i) => ({
      plain: toWire(plain),
      sealed: toWire(sealed[i]),
    }));
    writeFileSync(process.env.CODEC_NODE_OUT, JSON.stringify({ payloads }));
  }
});

test('the CustomerId hash is the Python one, for every id in the vectors', () => {
  assert.ok(vectors.hashes.length >= 5);
  for (const { customerId, secret, hash } of vectors.hashes) {
    assert.equal(customerHash(customerId, secret), hash, JSON.stringify(customerId));
  }
  assert.match(customerHash('a@b.in', 'k'), /^c_[0-9a-f]{40}$/);
  assert.equal(customerHashSecret(undefined, {}), LOCAL_CUSTOMER_HASH_SECRET);
  assert.equal(customerHashSecret(undefined, { ORDERFLOW_CUSTOMER_HASH_SECRET: 's' }), 's');
  assert.equal(customerHashSecret('o', { ORDERFLOW_CUSTOMER_HASH_SECRET: 's' }), 'o');
});

test('a malformed key gets the Python error word for word, naming the setting, not the key', () => {
  assert.ok(vectors.keyErrors.length >= 10);
  for (const { spec, setting, error } of vectors.keyErrors) {
    assert.throws(
      () => parseKey(spec, setting),
      (err) => {
        assert.ok(err instanceof CodecKeyError);
        assert.equal(err.message, error, JSON.stringify(spec));
        const secret = spec.slice(spec.indexOf(':') + 1).trim();
        if (secret) assert.ok(!err.message.includes(secret), 'the key is echoed');
        return true;
      },
    );
  }
  for (const { spec, keyId } of vectors.goodSpecs) assert.equal(parseKey(spec, 'x').keyId, keyId);
});

test('a key is never shown: not by inspect, not by JSON', () => {
  const base64 = current.secret.toString('base64');
  assert.ok(!inspect(current).includes(base64) && inspect(current).includes(current.keyId));
  assert.ok(!JSON.stringify(current).includes(base64));
  assert.ok(!inspect(new Keyring(current), { depth: 9 }).includes(base64));
});

test('an unknown key id is refused naming it, as Python words it', async () => {
  const { keyId, error } = vectors.unknownKey;
  const payload = {
    metadata: { encoding: utf8.encode(ENCODING), [KEY_ID_METADATA]: utf8.encode(keyId) },
    data: new Uint8Array(40),
  };
  await assert.rejects(both.decode([payload]), { name: 'CodecKeyError', message: error });
  const onlyCurrent = new EncryptionCodec(new Keyring(current));
  const oldOne = fromWire(vectors.payloads.find(({ key }) => key === 'old').sealed);
  await assert.rejects(onlyCurrent.decode([oldOne]), {
    message: new RegExp(`codec key '${old.keyId}'.*add it to ORDERFLOW_CODEC_OLD_KEYS`),
  });
  const odd = withKeyId(payload, 'x\n"y');
  await assert.rejects(both.decode([odd]), { message: /codec key "x\\n\\"y"/ });
});

test('a relabelled or damaged payload does not decrypt, and says so', async () => {
  const sealed = fromWire(vectors.payloads[0].sealed);
  const relabelled = withKeyId(sealed, old.keyId);
  const flipped = Uint8Array.from(sealed.data, (byte, i) => (i === 20 ? byte ^ 1 : byte));
  const damaged = { ...sealed, data: flipped };
  const short = { ...sealed, data: sealed.data.subarray(0, 20) };
  for (const payload of [relabelled, damaged, short]) {
    await assert.rejects(both.decode([payload]), {
      message: /does not decrypt: the key with that id differs/,
    });
  }
});

test('a payload that was never encrypted passes through', async () => {
  const plain = fromWire(vectors.payloads[0].plain);
  assert.equal((await both.decode([plain]))[0], plain);
});

test('keys come from the environment or options; two keys with one id are refused', () => {
  const env = {
    ORDERFLOW_CODEC_KEY: vectors.keys.current,
    ORDERFLOW_CODEC_OLD_KEYS: ` ,${vectors.keys.old}`,
  };
  assert.deepEqual(loadKeyring({ env }).ids, [current.keyId, old.keyId]);
  assert.deepEqual(loadKeyring({ env, key: vectors.keys.old, oldKeys: '' }).ids, [old.keyId]);
  assert.throws(() => loadKeyring({ env: {} }), { message: /^ORDERFLOW_CODEC_KEY is not set/ });
  const badOld = { ...env, ORDERFLOW_CODEC_OLD_KEYS: `${vectors.keys.old},oops` };
  assert.throws(() => loadKeyring({ env: badOld }), {
    message: "ORDERFLOW_CODEC_OLD_KEYS entry 2: a key is <id>:<base64 of 32 bytes>; no ':' found",
  });
  assert.throws(() => loadKeyring({ env, key: 'x' }), { message: /^the codec key option: / });
  const clash = `${current.keyId}:${old.secret.toString('base64')}`;
  assert.throws(() => new Keyring(current, [parseKey(clash, 'x')]), {
    message: `two different codec keys share the id '${current.keyId}'`,
  });
});

test('the data converter encrypts payloads and encodes failure messages', () => {
  const converter = codecDataConverter(new Keyring(current));
  assert.equal(converter.payloadCodecs.length, 1);
  assert.equal(converter.failureConverter.options.encodeCommonAttributes, true);
  const failure = converter.failureConverter.errorToFailure(
    new Error('order o-1 for asha@example.com'),
    converter.payloadConverter,
  );
  assert.equal(failure.message, 'Encoded failure');
  assert.equal(failure.stackTrace, '');
  const attributes = converter.payloadConverter.fromPayload(failure.encodedAttributes);
  assert.equal(attributes.message, 'order o-1 for asha@example.com'); // then sealed by the codec
});
