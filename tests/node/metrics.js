// node metrics.js REDIS_URL PREFIX QUEUE -> BullMQ's getMetrics('completed'/'failed') as Node reads them
const { Queue } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName] = process.argv.slice(2);
  const connection = connect(url);
  const queue = new Queue(queueName, { connection, prefix });
  const completed = await queue.getMetrics("completed");
  const failed = await queue.getMetrics("failed");
  const prometheus = await queue.exportPrometheusMetrics();
  console.log(JSON.stringify({ completed, failed, prometheus }));
  await queue.close();
  await connection.quit();
}

main().catch((err) => { console.error(err); process.exit(1); });
