// node retry.js REDIS_URL PREFIX QUEUE JOB_ID -> retries a failed job as Node tools do (job.retry)
const { Queue } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, id] = process.argv.slice(2);
  const connection = connect(url);
  const queue = new Queue(queueName, { connection, prefix });
  const job = await queue.getJob(id);
  await job.retry("failed");
  console.log(JSON.stringify({ retried: id }));
  await queue.close();
  await connection.quit();
}

main().catch((err) => { console.error(err); process.exit(1); });
