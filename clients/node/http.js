// Orders through the HTTP order API (`/api/v1`, app/web/orders_api.py) with a bearer API key:
// the same calls as temporal.js, for a service that reaches orderflow only over HTTP.

import { loadContract, orderLines } from './contract.js';
import { ApiProblemError, OrderClosedError, UnknownOrderError } from './errors.js';

export const API_PREFIX = '/api/v1';

/** Start, pay, query and cancel orders through the HTTP API. */
export class HttpOrders {
  /**
   * @param {object} options
   * @param {string} options.baseUrl where the app listens (`http://127.0.0.1:8000`)
   * @param {string} options.apiKey one of ORDERFLOW_API_KEYS (local: `of_local_dev_api_key`)
   * @param {import('./contract.js').Contract} [options.contract] the wire types' validators
   * @param {typeof fetch} [options.fetch] the fetch to call (default Node's own)
   */
  constructor({ baseUrl, apiKey, contract = loadContract(), fetch = globalThis.fetch }) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.contract = contract;
    this.fetch = fetch;
  }

  /**
   * Start an order: the same call again answers with the same order; the same id with
   * other lines or email is refused (409).
   *
   * @param {string} orderId the order service's id (`order._id`)
   * @param {Array<{sku: string, quantity?: number, qty?: number}>} items
   * @param {string} email where the order's mails go
   * @param {object} [options]
   * @param {string} [options.customerId] default the email
   * @param {string} [options.currency] ISO 4217: refused unless it is the shop's
   * @param {boolean} [options.minimal] send `Prefer: return=minimal`: answered once the order is
   *   started, without waiting for its stock check (`{order_id, status: 'accepted'}`)
   * @returns {Promise<object>} the OrderState, or `{order_id, status: 'accepted'}` when the
   *   order started but had not answered yet (always, with `minimal`)
   * @throws {ApiProblemError} 409 id reused, 422 unknown SKU or bad line (naming it), 503
   */
  async start(orderId, items, email, { customerId = email, currency, minimal = false } = {}) {
    const order = { order_id: orderId, customer_id: customerId, email, items: orderLines(items) };
    this.contract.check('OrderInput', order, 'the order to start', orderId);
    const body = { ...order, ...(currency ? { currency } : {}) };
    const prefer = minimal ? { prefer: 'return=minimal' } : {};
    const { status, json } = await this.#call('POST', '/orders', orderId, body, prefer);
    if (status === 202) return json;
    return this.contract.check('OrderState', json, 'the order started', orderId);
  }

  /**
   * Report a payment and learn at once whether the order took it (the `pay` update).
   *
   * @param {string} orderId
   * @param {{payment_id: string, amount: number, currency: string, provider?: string,
   *   flagged?: boolean}} payment a PaymentReceived, the amount in minor units
   * @returns {Promise<{accepted: boolean, status: string | null, reason: string}>} a PaymentAck
   * @throws {UnknownOrderError} no such order
   */
  async paymentReceived(orderId, payment) {
    this.contract.check('PaymentReceived', payment, 'the payment to report', orderId);
    const body = {
      provider: payment.provider ?? 'simulated',
      payment_id: payment.payment_id,
      amount: payment.amount,
      currency: payment.currency,
      flagged: payment.flagged ?? false,
    };
    const path = `/orders/${encodeURIComponent(orderId)}/payments`;
    const { json } = await this.#call('POST', path, orderId, body);
    return this.contract.check('PaymentAck', json, 'the answer to the payment', orderId);
  }

  /**
   * The order's status, total (minor units), currency, history, payment and review.
   *
   * @param {string} orderId
   * @returns {Promise<object>} an OrderState
   * @throws {UnknownOrderError}
   */
  async status(orderId) {
    const { json } = await this.#call('GET', `/orders/${encodeURIComponent(orderId)}`, orderId);
    return this.contract.check('OrderState', json, 'the order status', orderId);
  }

  /**
   * Cancel the order (a paid one is refunded, a hold released).
   *
   * @param {string} orderId
   * @param {string} [reason]
   * @throws {UnknownOrderError | OrderClosedError}
   */
  async cancel(orderId, reason = 'cancelled by customer') {
    this.contract.check('CancelRequest', { reason }, 'the cancellation', orderId);
    await this.#call('POST', `/orders/${encodeURIComponent(orderId)}/cancel`, orderId, { reason });
  }

  /**
   * The warehouse shipped a confirmed order.
   *
   * @param {string} orderId
   * @param {{carrier?: string, tracking_number?: string}} [shipment]
   * @throws {UnknownOrderError | OrderClosedError}
   */
  async shipped(orderId, shipment = {}) {
    this.contract.check('Shipment', shipment, 'the shipment', orderId);
    await this.#call('POST', `/orders/${encodeURIComponent(orderId)}/shipment`, orderId, shipment);
  }

  async #call(method, path, orderId, body, extraHeaders = {}) {
    const answer = await this.fetch(`${this.baseUrl}${API_PREFIX}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.apiKey}`,
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...extraHeaders,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await answer.text();
    const json = text ? JSON.parse(text) : null;
    if (answer.ok) return { status: answer.status, json };
    const problem = json && typeof json === 'object' ? json : { detail: text };
    const retryAfter = answer.headers.get('retry-after') ?? '';
    const error = new ApiProblemError(answer.status, problem, retryAfter);
    if (answer.status === 404 && problem.type?.endsWith('#unknown-order')) {
      throw new UnknownOrderError(error.message, { orderId, cause: error });
    }
    if (answer.status === 409 && problem.type?.endsWith('#order-closed')) {
      throw new OrderClosedError(error.message, { orderId, cause: error });
    }
    throw error;
  }
}
