// The orderflow client for Node: two doors on one contract (contracts/schemas/).
export { HttpOrders, API_PREFIX } from './http.js';
export { TemporalOrders, ORDERS_TASK_QUEUE, ORDER_WORKFLOW, orderWorkflowId } from './temporal.js';
export {
  CodecKey,
  CodecKeyError,
  codecDataConverter,
  customerHash,
  customerHashSecret,
  EncryptionCodec,
  Keyring,
  loadKeyring,
  parseKey,
} from './codec.js';
export { loadContract, orderLines, SCHEMA_DIR } from './contract.js';
export {
  ApiProblemError,
  ContractError,
  OrderClosedError,
  OrderflowError,
  UnknownOrderError,
} from './errors.js';
