// node produce.js REDIS_URL PREFIX QUEUE NAME DATA_JSON OPTS_JSON -> prints the job id
const { Queue } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, name, data, opts] = process.argv.slice(2);
  const connection = connect(url);
  const queue = new Queue(queueName, { connection, prefix });
  const job = await queue.add(name, JSON.parse(data), JSON.parse(opts || "{}"));
  console.log(JSON.stringify({ id: job.id }));
  await queue.close();
  await connection.quit();
}

main().catch((err) => { console.error(err); process.exit(1); });
