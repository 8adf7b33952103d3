// The wire types' JSON Schemas (contracts/schemas/, generated from the Python contracts by
// `make schemas`): every value the client sends or receives is checked against them.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

import { ContractError } from './errors.js';

/** Where the committed schemas are, beside this package in the repository. */
export const SCHEMA_DIR = fileURLToPath(new URL('../../contracts/schemas/', import.meta.url));
const SUFFIX = '.schema.json';

/**
 * The wire types' validators.
 *
 * @typedef {object} Contract
 * @property {string[]} types the wire types known (`OrderInput`, `PaymentAck`, ...)
 * @property {(type: string, value: unknown, what: string, orderId?: string) => any} check
 *   returns the value if it is a valid `type`, else throws ContractError
 */

/**
 * Load every schema of a folder.
 *
 * @param {string} [dir] the schemas' folder; default the repository's contracts/schemas/
 * @returns {Contract}
 */
export function loadContract(dir = SCHEMA_DIR) {
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats(ajv);
  const validators = new Map();
  for (const file of readdirSync(dir).filter((f) => f.endsWith(SUFFIX)).sort()) {
    const schema = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    validators.set(file.slice(0, -SUFFIX.length), ajv.compile(schema));
  }
  if (validators.size === 0) throw new Error(`no *${SUFFIX} in ${dir}: run \`make schemas\``);
  return {
    types: [...validators.keys()],
    check(type, value, what, orderId = '') {
      const validate = validators.get(type);
      if (!validate) throw new Error(`no schema ${type}${SUFFIX} in ${dir}`);
      if (!validate(value)) throw new ContractError(type, what, validate.errors ?? [], orderId);
      return value;
    },
  };
}

/**
 * Order lines as the contract has them, from ours (`{sku, quantity}`) or the seed's (`qty`).
 *
 * @param {Array<{sku: string, quantity?: number, qty?: number}>} items
 * @returns {Array<{sku: string, quantity: number}>}
 */
export function orderLines(items) {
  return items.map((item) => ({ sku: item.sku, quantity: item.quantity ?? item.qty }));
}
