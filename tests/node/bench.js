// node bench.js REDIS_URL PREFIX QUEUE N CONCURRENCY [METRICS_POINTS] -> {"enqueue": jobs/s, "process": jobs/s, "cpuMsPer1k"}
const { Queue, Worker } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, n, concurrency, metricsPoints] = process.argv.slice(2);
  const metrics = Number(metricsPoints || 0) > 0 ? { maxDataPoints: Number(metricsPoints) } : undefined;
  const total = Number(n);
  const connection = connect(url);
  const queue = new Queue(queueName, { connection, prefix });
  const batch = 1000;
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < total; i += batch) {
    const jobs = [];
    for (let j = i; j < Math.min(total, i + batch); j++) {
      jobs.push({ name: "noop", data: { i: j }, opts: { removeOnComplete: true } });
    }
    await queue.addBulk(jobs);
  }
  const enqueue = total / (Number(process.hrtime.bigint() - t0) / 1e9);
  let processed = 0;
  let worker;
  const workerConnection = connect(url);
  t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  await new Promise((resolve) => {
    worker = new Worker(queueName, async () => {
      processed += 1;
      if (processed === total) resolve();
    }, { connection: workerConnection, prefix, concurrency: Number(concurrency), metrics });
  });
  const proc = total / (Number(process.hrtime.bigint() - t0) / 1e9);
  const used = process.cpuUsage(cpu0);
  const cpuMsPer1k = (used.user + used.system) / 1000 / (total / 1000);
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  await connection.quit();
  await workerConnection.quit();
  console.log(JSON.stringify({ enqueue, process: proc, cpuMsPer1k }));
}

main().catch((err) => { console.error(err); process.exit(1); });
