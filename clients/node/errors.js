// The client's errors: one base, each named for what happened and saying which order.

/** Anything the order client refuses or the order system answers with an error. */
export class OrderflowError extends Error {
  /**
   * @param {string} message what was wrong, naming the order
   * @param {{orderId?: string, cause?: unknown}} [details]
   */
  constructor(message, { orderId = '', cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    /** The order concerned ('' when none). */
    this.orderId = orderId;
  }
}

/** A value does not match its JSON Schema in contracts/schemas/ (nothing was sent). */
export class ContractError extends OrderflowError {
  /**
   * @param {string} type the wire type (`OrderInput`, `PaymentAck`, ...)
   * @param {string} what what the value was (`the order sent`, `the status answered`)
   * @param {Array<{instancePath: string, message?: string, params?: any}>} errors ajv's errors
   * @param {string} [orderId]
   */
  constructor(type, what, errors, orderId = '') {
    const why = errors
      .map((e) => {
        const extra = e.params?.additionalProperty;
        return `${e.instancePath || '/'} ${e.message}${extra ? ` (${extra})` : ''}`;
      })
      .join('; ');
    super(`${what}${orderId ? ` (order ${orderId})` : ''} is not a valid ${type}: ${why}`, {
      orderId,
    });
    this.type = type;
    this.errors = errors;
  }
}

/** No order has this id. */
export class UnknownOrderError extends OrderflowError {}

/** The order's workflow has ended: it takes no more signals. */
export class OrderClosedError extends OrderflowError {}

/** The HTTP API answered with a problem (RFC 9457 `application/problem+json`). */
export class ApiProblemError extends OrderflowError {
  /**
   * @param {number} status the HTTP status
   * @param {{type?: string, title?: string, detail?: string, field?: string,
   *   order_id?: string}} problem the problem's body
   * @param {string} [retryAfter] the Retry-After header of a 503
   */
  constructor(status, problem, retryAfter = '') {
    super(`${status} ${problem.title ?? 'error'}: ${problem.detail ?? ''}`.trim(), {
      orderId: problem.order_id ?? '',
    });
    this.status = status;
    this.problem = problem;
    /** The field the problem names ('' when none). */
    this.field = problem.field ?? '';
    /** Seconds to wait before asking again (503). */
    this.retryAfter = retryAfter;
  }
}
