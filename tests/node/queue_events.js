// node queue_events.js REDIS_URL PREFIX QUEUE [node-worker]
// A BullMQ QueueEvents listener from the start of the queue's event stream (a new queue): it
// records every event until one of the job "sentinel", and prints them (a JSON list).
// With "node-worker" it also runs a Node worker that does what each job's data asks
// ({progress: [...], fail: "message", failAttempts: n, unrecoverable: bool, result: {...}}),
// the baseline our Python worker's events are compared with.
const { QueueEvents, Worker, UnrecoverableError } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, mode] = process.argv.slice(2);
  const queueEvents = new QueueEvents(queueName,
    { connection: connect(url), prefix, lastEventId: "0-0" });
  const seen = [];
  const finished = new Promise((resolve) => {
    const emit = queueEvents.emit.bind(queueEvents);
    queueEvents.emit = (event, args, ...rest) => {
      if (event !== "error" && !event.includes(":") && typeof args === "object") {
        if (args.jobId === "sentinel") setImmediate(resolve);
        else seen.push({ event, ...args });
      }
      return emit(event, args, ...rest);
    };
  });
  await queueEvents.waitUntilReady();
  let worker;
  if (mode === "node-worker") {
    const connection = connect(url);
    worker = new Worker(queueName, async (job) => {
      const plan = job.data;
      for (const step of plan.progress || []) await job.updateProgress(step);
      if (plan.fail && job.attemptsMade < (plan.failAttempts || Infinity)) {
        throw plan.unrecoverable ? new UnrecoverableError(plan.fail) : new Error(plan.fail);
      }
      return plan.result ?? null;
    }, { connection, prefix, concurrency: 1 });
    worker.on("error", (err) => console.error(err));
  }
  const timer = setTimeout(() => { console.error("timed out", JSON.stringify(seen)); process.exit(2); }, 30000);
  await finished;
  clearTimeout(timer);
  if (worker) await worker.close();
  await queueEvents.close();
  console.log(JSON.stringify(seen));
  process.exit(0);
}

main().catch((err) => { console.error(err); process.exit(1); });
