// node test/scenario.js NAME CONFIG_JSON: one step of an order service in Node, for
// tests/test_node_client.py. Prints one JSON line: what it saw, each value already checked
// against contracts/schemas/ by the client (and the mail job here).
//   start        start the order, wait until it waits for payment
//   pay          start, wait, pay `total - short` (refused) or the total (then CONFIRMED and
//                its confirmation mail job on the email queue)
//   wait-status  wait until the order has `status`
//   refuse       send values that break the contract: each is refused before anything is sent
//   raw-update   send update `update` with `args` past the contract checks; the error it got
// CONFIG: {door: "temporal" | "http", address, namespace | baseUrl, apiKey, orderId, sku,
//          quantity, email, short?, status?, redisUrl?, prefix?, queue?, update?, args?}
// The codec key comes from ORDERFLOW_CODEC_KEY (and _OLD_KEYS), the CustomerId hash's secret
// from ORDERFLOW_CUSTOMER_HASH_SECRET, as for any caller of TemporalOrders.connect.

import { Queue } from 'bullmq';
import IORedis from 'ioredis';

import { HttpOrders, loadContract, TemporalOrders } from '../index.js';

const WITHIN_MS = 20_000;
const contract = loadContract();

/** Poll `check` until it returns a truthy value; fail after `within` ms naming `what`. */
async function eventually(check, what, within = WITHIN_MS) {
  const deadline = Date.now() + within;
  let last;
  for (;;) {
    last = await check();
    if (last?.ok) return last.value;
    if (Date.now() > deadline) {
      throw new Error(`${what} not met within ${within} ms: ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50)); // the poll interval
  }
}

async function reaches(orders, orderId, status) {
  return eventually(async () => {
    const state = await orders.status(orderId);
    return { ok: state.status === status, value: state, status: state.status };
  }, `order ${orderId} reaching ${status}`);
}

async function mailJob(config) {
  const connection = new IORedis(config.redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(config.queue, { connection, prefix: config.prefix });
  try {
    const id = `order-confirmation-${config.orderId}`;
    const job = await eventually(async () => {
      const found = await queue.getJob(id);
      return { ok: Boolean(found), value: found };
    }, `mail job ${id}`);
    contract.check('EmailJobData', job.data, 'the confirmation mail job', config.orderId);
    return { id: job.id, name: job.name, data: job.data };
  } finally {
    await queue.close();
    await connection.quit();
  }
}

const scenarios = {
  async start(orders, config) {
    await orders.start(config.orderId, [{ sku: config.sku, qty: config.quantity }], config.email);
    return { pending: await reaches(orders, config.orderId, 'PENDING_PAYMENT') };
  },

  async pay(orders, config) {
    const { pending } = await scenarios.start(orders, config);
    const payment = {
      provider: 'stripe',
      payment_id: `pi_${config.orderId}`,
      amount: pending.total - (config.short ?? 0),
      currency: pending.currency,
    };
    const ack = await orders.paymentReceived(config.orderId, payment);
    if (!ack.accepted) return { pending, ack, after: await orders.status(config.orderId) };
    const confirmed = await reaches(orders, config.orderId, 'CONFIRMED');
    return { pending, ack, confirmed, mail: await mailJob(config) };
  },

  async 'wait-status'(orders, config) {
    return { state: await reaches(orders, config.orderId, config.status) };
  },

  async 'raw-update'(orders, config) {
    const handle = orders.handle(config.orderId);
    try {
      return { answer: await handle.executeUpdate(config.update, { args: config.args }) };
    } catch (err) {
      const { name, message, stack } = err.cause ?? {};
      const cause = err.cause && { name, message, stack };
      return { error: { name: err.name, message: err.message, cause } };
    }
  },

  async refuse(_, config) {
    const sent = [];
    const record = async (...args) => sent.push(args);
    const offline = new TemporalOrders(
      { workflow: { start: record, getHandle: () => ({ executeUpdate: record, signal: record }) } },
      { contract },
    );
    const attempts = {
      misspeltLine: () => offline.start(config.orderId, [{ sku: 'KITE', quanity: 2 }], 'a@b.in'),
      moneyAsText: () =>
        offline.paymentReceived(config.orderId, { payment_id: 'pi_1', amount: '900.00' }),
      camelCase: () =>
        offline.paymentReceived(config.orderId, { paymentId: 'pi_1', amount: 1, currency: 'INR' }),
    };
    const refused = {};
    for (const [name, attempt] of Object.entries(attempts)) {
      refused[name] = await attempt().then(
        () => null,
        (err) => ({ name: err.name, type: err.type, message: err.message }),
      );
    }
    return { refused, sent: sent.length };
  },
};

async function main() {
  const [name, raw] = process.argv.slice(2);
  const config = JSON.parse(raw);
  const { address, namespace, baseUrl, apiKey } = config;
  let orders = null; // `refuse` sends nothing
  if (name !== 'refuse') {
    orders =
      config.door === 'http'
        ? new HttpOrders({ baseUrl, apiKey, contract })
        : await TemporalOrders.connect({ address, namespace, contract });
  }
  try {
    console.log(JSON.stringify(await scenarios[name](orders, config)));
  } finally {
    if (orders instanceof TemporalOrders) await orders.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
