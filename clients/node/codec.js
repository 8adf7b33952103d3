// Customer data encrypted in Temporal, as orderflow/codec.py writes and reads it: an AES-256-GCM
// payload codec whose keys rotate, and the keyed hash of the `CustomerId` search attribute.
//
// An encrypted payload has the metadata `encoding: binary/encrypted` and `encryption-key-id: <id>`,
// and its data is `nonce (12 bytes) || ciphertext || tag (16 bytes)` of the serialized inner
// temporal.api.common.v1.Payload, with the key id's bytes as associated data (a payload cannot be
// relabelled to another key). A payload that is not encrypted passes through on decode.
//
// Keys: ORDERFLOW_CODEC_KEY (`<id>:<base64 of 32 bytes>`, encrypts) and ORDERFLOW_CODEC_OLD_KEYS
// (comma-separated, decrypt only), or the same strings as options. Errors name the setting and
// the key id, never a key.

import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';

import { DefaultFailureConverter, defaultPayloadConverter } from '@temporalio/common';
import proto from '@temporalio/proto';

import { OrderflowError } from './errors.js';

const { Payload } = proto.temporal.api.common.v1;

export const ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
export const KEY_SETTING = 'ORDERFLOW_CODEC_KEY';
export const OLD_KEYS_SETTING = 'ORDERFLOW_CODEC_OLD_KEYS';
export const HASH_SECRET_SETTING = 'ORDERFLOW_CUSTOMER_HASH_SECRET';
/** orderflow/settings.py's default: a local start's; a production one sets its own. */
export const LOCAL_CUSTOMER_HASH_SECRET = 'orderflow-local-customer-hash';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID = /^[A-Za-z0-9_.-]{1,64}$/;
// Python's str.strip() (str.isspace); JS's trim() differs: it strips U+FEFF and keeps
// U+001C-U+001F and U+0085
const PY_SPACE =
  '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** A codec key setting is malformed, or a payload names a key this process does not have. */
export class CodecKeyError extends OrderflowError {}

/** Python's repr of a key id: quoted, and escaped when it is not a well-formed id. */
const quoted = (id) => (KEY_ID.test(id) ? `'${id}'` : JSON.stringify(id));

const pyStrip = (value) => value.replace(PY_STRIP, '');

/** One AES-256 key and the id written beside every payload it encrypts. */
export class CodecKey {
  /** @type {Buffer} */
  #secret;

  /**
   * @param {string} keyId
   * @param {Uint8Array} secret 32 bytes
   */
  constructor(keyId, secret) {
    this.keyId = keyId;
    this.#secret = Buffer.from(secret);
  }

  /** The key's bytes (kept off the object's enumerable fields, so it is never logged). */
  get secret() {
    return this.#secret;
  }

  toJSON() {
    return { keyId: this.keyId };
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `CodecKey(${quoted(this.keyId)})`;
  }
}

/**
 * Python's base64.b64decode(value, validate=True) (3.11): the alphabet only; a last group of 2 or
 * 3 characters takes exactly the padding it needs, whole groups take any (none when empty).
 *
 * @param {string} value
 * @returns {Buffer | null} null when Python would refuse it
 */
function strictBase64(value) {
  const match = /^([A-Za-z0-9+/]*)(=*)$/.exec(value);
  if (!match) return null;
  const [, data, { length: padding }] = match;
  const rest = data.length % 4;
  const fits = rest === 0 ? Boolean(data) || padding === 0 : padding === { 2: 2, 3: 1 }[rest];
  return fits ? Buffer.from(data, 'base64') : null;
}

function checkedId(keyId, setting) {
  if (!KEY_ID.test(keyId)) {
    throw new CodecKeyError(
      `${setting}: a key id is 1-64 of A-Z a-z 0-9 _ . - (got ${[...keyId].length} characters)`,
    );
  }
  return keyId;
}

/**
 * A key from its setting's form `<id>:<base64 of 32 bytes>`; the error names the setting, never
 * the value (the same errors as orderflow/codec.py's parse_key).
 *
 * @param {string} spec
 * @param {string} setting what to name in an error (`ORDERFLOW_CODEC_KEY`)
 */
export function parseKey(spec, setting) {
  const trimmed = pyStrip(String(spec));
  const colon = trimmed.indexOf(':');
  if (colon < 0) {
    throw new CodecKeyError(`${setting}: a key is <id>:<base64 of 32 bytes>; no ':' found`);
  }
  const keyId = checkedId(trimmed.slice(0, colon), setting);
  const secret = strictBase64(pyStrip(trimmed.slice(colon + 1)));
  if (secret === null) {
    throw new CodecKeyError(`${setting}: key ${quoted(keyId)} is not valid base64`);
  }
  if (secret.length !== 32) {
    throw new CodecKeyError(
      `${setting}: key ${quoted(keyId)} is ${secret.length} bytes; AES-256 needs 32` +
        ' (`orderflow codec new-key` makes one)',
    );
  }
  return new CodecKey(keyId, secret);
}

/** The current key (which encrypts) and every key that still decrypts, by id. */
export class Keyring {
  /**
   * @param {CodecKey} current
   * @param {Iterable<CodecKey>} [old]
   */
  constructor(current, old = []) {
    this.current = current;
    /** @type {Map<string, CodecKey>} */
    this.keys = new Map();
    for (const key of [current, ...old]) {
      const known = this.keys.get(key.keyId);
      if (known && !known.secret.equals(key.secret)) {
        throw new CodecKeyError(`two different codec keys share the id ${quoted(key.keyId)}`);
      }
      this.keys.set(key.keyId, key);
    }
  }

  /** Every key id, the current one first. */
  get ids() {
    return [this.current.keyId, ...[...this.keys.keys()].filter((k) => k !== this.current.keyId)];
  }

  /**
   * The current key's id and `nonce || ciphertext || tag` of `plain`.
   *
   * @param {Uint8Array} plain
   * @returns {{keyId: string, sealed: Buffer}}
   */
  encrypt(plain) {
    const { keyId, secret } = this.current;
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', secret, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(utf8.encode(keyId));
    const body = Buffer.concat([cipher.update(plain), cipher.final()]);
    return { keyId, sealed: Buffer.concat([nonce, body, cipher.getAuthTag()]) };
  }

  /**
   * `plain` back; a clear error naming the key id when it is unknown or does not fit.
   *
   * @param {string} keyId
   * @param {Uint8Array} sealed
   */
  decrypt(keyId, sealed) {
    const key = this.keys.get(keyId);
    if (!key) {
      throw new CodecKeyError(
        `payload encrypted with codec key ${quoted(keyId)}, which this process does not have` +
          ` (it has ${this.ids.map(quoted).join(', ')}): add it to ${OLD_KEYS_SETTING}`,
      );
    }
    const bytes = Buffer.from(sealed);
    try {
      if (bytes.length < NONCE_BYTES + TAG_BYTES) throw new Error('too short');
      const nonce = bytes.subarray(0, NONCE_BYTES);
      const decipher = createDecipheriv('aes-256-gcm', key.secret, nonce, {
        authTagLength: TAG_BYTES,
      });
      decipher.setAAD(utf8.encode(keyId));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      const body = bytes.subarray(NONCE_BYTES, bytes.length - TAG_BYTES);
      return Buffer.concat([decipher.update(body), decipher.final()]);
    } catch {
      throw new CodecKeyError(
        `payload under codec key ${quoted(keyId)} does not decrypt: the key with that id` +
          ' differs from the one that wrote it, or the payload is damaged',
      );
    }
  }
}

/**
 * The keys from the options, else from the environment (the same variables as the Python side).
 *
 * @param {object} [options]
 * @param {string} [options.key] the current key, `<id>:<base64>` (default ORDERFLOW_CODEC_KEY)
 * @param {string} [options.oldKeys] comma-separated older keys (default ORDERFLOW_CODEC_OLD_KEYS)
 * @param {Record<string, string | undefined>} [options.env] where to read them (process.env)
 * @returns {Keyring}
 * @throws {CodecKeyError} no key, or one that is malformed (naming the setting, not the key)
 */
export function loadKeyring({ key, oldKeys, env = process.env } = {}) {
  const keySetting = key === undefined ? KEY_SETTING : 'the codec key option';
  const oldSetting = oldKeys === undefined ? OLD_KEYS_SETTING : 'the codec oldKeys option';
  const spec = key ?? env[KEY_SETTING] ?? '';
  if (!pyStrip(spec)) {
    throw new CodecKeyError(
      `${keySetting} is not set: orders in Temporal are encrypted, so this client needs the` +
        ' key the workers use (a local `make run` keeps its key in data/codec-key)',
    );
  }
  const old = String(oldKeys ?? env[OLD_KEYS_SETTING] ?? '')
    .split(',')
    .map((entry, index) => [entry, index + 1])
    .filter(([entry]) => pyStrip(entry))
    .map(([entry, position]) => parseKey(entry, `${oldSetting} entry ${position}`));
  return new Keyring(parseKey(spec, keySetting), old);
}

/**
 * Encrypts every payload with the current key; decrypts with the key each one names (Node's
 * `@temporalio/common` PayloadCodec).
 */
export class EncryptionCodec {
  /** @param {Keyring} keyring */
  constructor(keyring) {
    this.keyring = keyring;
  }

  /**
   * @param {import('@temporalio/common').Payload[]} payloads
   * @returns {Promise<import('@temporalio/common').Payload[]>}
   */
  async encode(payloads) {
    return payloads.map((payload) => this.encodeOne(payload));
  }

  /**
   * @param {import('@temporalio/common').Payload[]} payloads
   * @returns {Promise<import('@temporalio/common').Payload[]>}
   */
  async decode(payloads) {
    return payloads.map((payload) => this.decodeOne(payload));
  }

  /** One payload sealed under the current key. */
  encodeOne(payload) {
    const { keyId, sealed } = this.keyring.encrypt(Payload.encode(payload).finish());
    return {
      metadata: { encoding: utf8.encode(ENCODING), [KEY_ID_METADATA]: utf8.encode(keyId) },
      data: new Uint8Array(sealed),
    };
  }

  /** One payload opened (or passed through if it was never encrypted). */
  decodeOne(payload) {
    const encoding = payload.metadata?.encoding;
    if (!encoding || text.decode(encoding) !== ENCODING) return payload;
    const keyId = payload.metadata?.[KEY_ID_METADATA];
    const inner = Payload.decode(
      this.keyring.decrypt(keyId ? text.decode(keyId) : '', payload.data ?? new Uint8Array()),
    );
    return { metadata: inner.metadata ?? {}, data: inner.data ?? new Uint8Array() };
  }
}

/**
 * The SDK's default converters with the codec, and failures whose message and stack trace travel
 * as encoded attributes (as the Python side's DefaultFailureConverterWithEncodedAttributes).
 * A loaded data converter: `dataConverter` has no field for a failure converter object.
 *
 * @param {Keyring} keyring
 */
export function codecDataConverter(keyring) {
  return {
    payloadConverter: defaultPayloadConverter,
    failureConverter: new DefaultFailureConverter({ encodeCommonAttributes: true }),
    payloadCodecs: [new EncryptionCodec(keyring)],
  };
}

/**
 * The `CustomerId` search attribute: a keyed hash, as orderflow/codec.py's customer_hash
 * ("c_" + the first 40 hex digits of HMAC-SHA256(secret, the id stripped and lower-cased)).
 *
 * @param {string} customerId
 * @param {string} secret ORDERFLOW_CUSTOMER_HASH_SECRET's value
 */
export function customerHash(customerId, secret) {
  const normalized = pyStrip(String(customerId)).toLowerCase();
  const digest = createHmac('sha256', utf8.encode(secret)).update(utf8.encode(normalized));
  return `c_${digest.digest('hex').slice(0, 40)}`;
}

/**
 * The hash's secret: the option, else ORDERFLOW_CUSTOMER_HASH_SECRET, else the local default.
 *
 * @param {string} [secret]
 * @param {Record<string, string | undefined>} [env]
 */
export function customerHashSecret(secret, env = process.env) {
  return secret ?? env[HASH_SECRET_SETTING] ?? LOCAL_CUSTOMER_HASH_SECRET;
}
