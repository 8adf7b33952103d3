// node worker.js REDIS_URL PREFIX QUEUE COUNT -> processes COUNT jobs, prints what it saw
const { Worker } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, count] = process.argv.slice(2);
  const connection = connect(url);
  const seen = [];
  let worker;
  const done = new Promise((resolve) => {
    worker = new Worker(queueName, async (job) => {
      await job.updateProgress(30);
      seen.push({ id: job.id, name: job.name, data: job.data, opts: job.opts,
                  attemptsMade: job.attemptsMade });
      if (seen.length >= Number(count)) setImmediate(resolve);
      return { by: "node", id: job.id };
    }, { connection, prefix, concurrency: 5 });
  });
  const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);
  await done;
  clearTimeout(timer);
  await worker.close();
  await connection.quit();
  console.log(JSON.stringify(seen));
}

main().catch((err) => { console.error(err); process.exit(1); });
