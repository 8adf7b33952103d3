// node limited.js REDIS_URL PREFIX QUEUE MAX DURATION TOTAL -> a worker with BullMQ's `limiter`
// option; runs until TOTAL jobs of the queue are completed (by anyone), prints how many it did
const { Queue, Worker } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, max, duration, total] = process.argv.slice(2);
  const connection = connect(url);
  const queue = new Queue(queueName, { connection, prefix });
  let processed = 0;
  const worker = new Worker(queueName, async () => {
    processed += 1;
    return { by: "node" };
  }, { connection: connect(url), prefix, concurrency: 5,
       limiter: { max: Number(max), duration: Number(duration) } });
  const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 120000);
  for (;;) {
    const counts = await queue.getJobCounts("completed");
    if (counts.completed >= Number(total)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  clearTimeout(timer);
  console.log(JSON.stringify({ processed }));
  // a worker waiting out the limiter may take its time to close: do not hold the test on it
  await Promise.race([worker.close(), new Promise((resolve) => setTimeout(resolve, 2000))]);
  process.exit(0);
}

main().catch((err) => { console.error(err); process.exit(1); });
