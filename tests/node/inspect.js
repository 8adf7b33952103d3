// node inspect.js REDIS_URL PREFIX QUEUE JOB_ID... -> prints counts, the named jobs and the
// queue's workers (getWorkers: connection names) as Node sees them
const { Queue } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, ...ids] = process.argv.slice(2);
  const connection = connect(url);
  const queue = new Queue(queueName, { connection, prefix });
  const counts = await queue.getJobCounts("waiting", "active", "completed", "failed", "delayed");
  const jobs = {};
  for (const id of ids) {
    const job = await queue.getJob(id);
    jobs[id] = job && {
      name: job.name, data: job.data, progress: job.progress, returnvalue: job.returnvalue,
      failedReason: job.failedReason, attemptsMade: job.attemptsMade,
      stacktrace: job.stacktrace, state: await job.getState(), telemetry: job.opts.telemetry,
    };
  }
  const workers = (await queue.getWorkers()).map((w) => w.rawname);
  console.log(JSON.stringify({ counts, jobs, workers }));
  await queue.close();
  await connection.quit();
}

main().catch((err) => { console.error(err); process.exit(1); });
