// Orders through Temporal directly: start OrderWorkflow by name on the `orders` task queue with
// the JSON contract, report payments with its `pay` update, query `status`, signal `cancel`.
// The same choices as app/client.py's OrderClient (ids, id policies, search attribute), and the
// same encryption (codec.js): every payload sent is encrypted, `CustomerId` is a keyed hash.

import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowIdConflictPolicy,
  WorkflowIdReusePolicy,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
} from '@temporalio/client';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

import { codecDataConverter, customerHash, customerHashSecret, loadKeyring } from './codec.js';
import { loadContract, orderLines } from './contract.js';
import { OrderClosedError, OrderflowError, UnknownOrderError } from './errors.js';

/** orderflow/contracts/order.py: the task queue, the workflow's type and its handlers. */
export const ORDERS_TASK_QUEUE = 'orders';
export const ORDER_WORKFLOW = 'OrderWorkflow';
const PAY = 'pay';
const STATUS = 'status';
const CANCEL = 'cancel';
const SHIPPED = 'shipped';
export const CUSTOMER_ID = defineSearchAttributeKey('CustomerId', SearchAttributeType.KEYWORD);

/**
 * One workflow per order: starting it twice finds the same run.
 *
 * @param {string} orderId
 */
export const orderWorkflowId = (orderId) => `order-${orderId}`;

/** Start, pay, query and cancel orders through Temporal. */
export class TemporalOrders {
  /**
   * @param {Client} client a connected Temporal client
   * @param {object} [options]
   * @param {string} [options.taskQueue] where order workflows run (`orders`)
   * @param {import('./contract.js').Contract} [options.contract] the wire types' validators
   * @param {string} [options.customerHashSecret] keys the `CustomerId` hash (default
   *   ORDERFLOW_CUSTOMER_HASH_SECRET, else the local start's default)
   */
  constructor(
    client,
    { taskQueue = ORDERS_TASK_QUEUE, contract = loadContract(), customerHashSecret: secret } = {},
  ) {
    this.client = client;
    this.taskQueue = taskQueue;
    this.contract = contract;
    this.customerHashSecret = customerHashSecret(secret);
  }

  /**
   * Connect to a Temporal frontend with a client that encrypts every payload (codec.js).
   *
   * @param {object} [options]
   * @param {string} [options.address] host:port of the frontend (`localhost:7233`)
   * @param {string} [options.namespace] the namespace (`default`)
   * @param {string} [options.codecKey] the current key, `<id>:<base64 of 32 bytes>` (default
   *   ORDERFLOW_CODEC_KEY): the workers' key
   * @param {string} [options.codecOldKeys] older keys that still decrypt, comma-separated
   *   (default ORDERFLOW_CODEC_OLD_KEYS)
   * @param {string} [options.customerHashSecret]
   * @param {string} [options.taskQueue]
   * @param {import('./contract.js').Contract} [options.contract]
   * @returns {Promise<TemporalOrders>}
   * @throws {import('./codec.js').CodecKeyError} no key, or a malformed one (before connecting)
   */
  static async connect({
    address = 'localhost:7233',
    namespace = 'default',
    codecKey,
    codecOldKeys,
    ...options
  } = {}) {
    const dataConverter = codecDataConverter(loadKeyring({ key: codecKey, oldKeys: codecOldKeys }));
    const connection = await Connection.connect({ address });
    return new TemporalOrders(new Client({ connection, namespace, dataConverter }), options);
  }

  /** Close the connection (a client made by `connect`). */
  async close() {
    await this.client.connection.close();
  }

  /**
   * Start the order's workflow; starting the same order again finds the same run.
   *
   * @param {string} orderId the order service's id (`order._id`); the workflow id is `order-<id>`
   * @param {Array<{sku: string, quantity?: number, qty?: number}>} items lines; prices come from
   *   the catalogue
   * @param {string} email where the order's mails go
   * @param {object} [options]
   * @param {string} [options.customerId] the customer (default the email); the `CustomerId`
   *   search attribute is its keyed hash (codec.js customerHash), never the id itself
   * @param {object} [options.policy] OrderPolicy fields for this order (default the seed's rules)
   * @returns {Promise<import('@temporalio/client').WorkflowHandle>} the order's workflow
   * @throws {ContractError} the order is not a valid OrderInput (nothing is started)
   */
  async start(orderId, items, email, { customerId = email, policy } = {}) {
    const order = {
      order_id: orderId,
      customer_id: customerId,
      email,
      items: orderLines(items),
      ...(policy ? { policy } : {}),
    };
    this.contract.check('OrderInput', order, 'the order to start', orderId);
    const badLine = order.items.some((line) => !line.sku || line.quantity <= 0);
    if (!orderId || order.items.length === 0 || badLine) {
      const needs = 'needs an id and at least one line with a SKU and quantity > 0';
      throw new OrderflowError(`order ${JSON.stringify(orderId)}: ${needs}`, { orderId });
    }
    try {
      return await this.client.workflow.start(ORDER_WORKFLOW, {
        args: [order],
        workflowId: orderWorkflowId(orderId),
        taskQueue: this.taskQueue,
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
        typedSearchAttributes: [
          { key: CUSTOMER_ID, value: customerHash(customerId, this.customerHashSecret) },
        ],
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return this.handle(orderId);
      throw err;
    }
  }

  /**
   * Report a payment and learn at once whether the order accepted it (the `pay` update: an
   * accepted payment cancels the order's payment timer in the same call).
   *
   * @param {string} orderId the order paid for
   * @param {{payment_id: string, amount: number, currency: string, provider?: string,
   *   flagged?: boolean, authorised_only?: boolean}} payment a PaymentReceived: the amount in
   *   minor units of the currency
   * @param {object} [options]
   * @param {string} [options.updateId] the update's id; the same payment reported again gets
   *   the first answer (default: made from the provider and payment id)
   * @returns {Promise<{accepted: boolean, status: string | null, reason: string}>} a PaymentAck;
   *   a closed order refuses (accepted false) rather than throwing
   * @throws {UnknownOrderError} no such order
   */
  async paymentReceived(orderId, payment, { updateId } = {}) {
    this.contract.check('PaymentReceived', payment, 'the payment to report', orderId);
    const id = updateId ?? `pay-${payment.provider ?? 'simulated'}-${payment.payment_id}`;
    let ack;
    try {
      ack = await this.handle(orderId).executeUpdate(PAY, { args: [payment], updateId: id });
    } catch (err) {
      if (err instanceof WorkflowUpdateFailedError) {
        ack = { accepted: false, status: null, reason: String(err.cause?.message ?? err.message) };
      } else if (err instanceof WorkflowNotFoundError) {
        const { status } = await this.status(orderId); // throws UnknownOrderError if none
        ack = {
          accepted: false,
          status,
          reason: `order ${orderId} is ${status} and closed: payment ${payment.payment_id} refused`,
        };
      } else {
        throw err;
      }
    }
    return this.contract.check('PaymentAck', ack, 'the answer to the payment', orderId);
  }

  /**
   * The order's status and history (also after its workflow ended).
   *
   * @param {string} orderId
   * @returns {Promise<object>} an OrderState: status, total (minor units), currency, history
   * @throws {UnknownOrderError} no such order
   */
  async status(orderId) {
    let state;
    try {
      state = await this.handle(orderId).query(STATUS);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        throw new UnknownOrderError(`order ${orderId} is unknown`, { orderId, cause: err });
      }
      throw err;
    }
    return this.contract.check('OrderState', state, 'the order status', orderId);
  }

  /**
   * Cancel the order (a paid one is refunded, a hold released).
   *
   * @param {string} orderId
   * @param {string} [reason] kept in its history and put in the cancellation mail
   * @throws {UnknownOrderError | OrderClosedError}
   */
  async cancel(orderId, reason = 'cancelled by customer') {
    await this.#signal(orderId, CANCEL, 'CancelRequest', { reason });
  }

  /**
   * The warehouse shipped a confirmed order.
   *
   * @param {string} orderId
   * @param {{carrier?: string, tracking_number?: string}} [shipment] for the shipping mail
   * @throws {UnknownOrderError | OrderClosedError}
   */
  async shipped(orderId, shipment = {}) {
    await this.#signal(orderId, SHIPPED, 'Shipment', shipment);
  }

  /**
   * The order's workflow handle.
   *
   * @param {string} orderId
   */
  handle(orderId) {
    return this.client.workflow.getHandle(orderWorkflowId(orderId));
  }

  async #signal(orderId, name, type, value) {
    this.contract.check(type, value, `the ${name} signal`, orderId);
    try {
      await this.handle(orderId).signal(name, value);
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      const { status } = await this.status(orderId); // throws UnknownOrderError if none
      throw new OrderClosedError(`order ${orderId} is ${status} and closed: no ${name}`, {
        orderId,
        cause: err,
      });
    }
  }
}
