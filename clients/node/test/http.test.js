// node --test test/http.test.js: what HttpOrders puts on the wire, with a recording fetch (the
// API itself is tested against the real app in tests/test_node_client.py and
// tests/test_order_api.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HttpOrders } from '../http.js';

function recording(status, answer) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    return new Response(JSON.stringify(answer), {
      status,
      headers: { 'content-type': 'application/json' },
    });
  };
  return { calls, fetch };
}

test('start with minimal sends Prefer: return=minimal and returns the 202 answer', async () => {
  const accepted = { order_id: 'web-1', status: 'accepted', detail: 'started' };
  const { calls, fetch } = recording(202, accepted);
  const orders = new HttpOrders({ baseUrl: 'http://shop/', apiKey: 'k', fetch });
  const answer = await orders.start('web-1', [{ sku: 'KITE', qty: 1 }], 'a@example.com', {
    minimal: true,
  });
  assert.deepEqual(answer, accepted);
  assert.equal(calls[0].url, 'http://shop/api/v1/orders');
  assert.equal(calls[0].init.headers.prefer, 'return=minimal');
  assert.equal(calls[0].init.headers.authorization, 'Bearer k');
});

test('start without minimal sends no Prefer header', async () => {
  const { calls, fetch } = recording(202, { order_id: 'web-2', status: 'accepted', detail: '' });
  const orders = new HttpOrders({ baseUrl: 'http://shop', apiKey: 'k', fetch });
  await orders.start('web-2', [{ sku: 'KITE', qty: 1 }], 'a@example.com');
  assert.equal('prefer' in calls[0].init.headers, false);
});
