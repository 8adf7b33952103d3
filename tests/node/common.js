// Shared by the interop scripts: argv parsing and an ioredis connection BullMQ accepts.
const IORedis = require("ioredis");

function connect(url) {
  return new IORedis(url, { maxRetriesPerRequest: null });
}

module.exports = { connect };
