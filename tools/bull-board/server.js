// bull-board (the Node dashboard of BullMQ queues) over orderflow's bridge queues.
//
// BULL_BOARD_CONFIG (JSON, written by config.py from orderflow's settings and bridge/specs.py):
//   {redisUrl, prefix, queues: [name...], user, password}
// BULL_BOARD_HOST / BULL_BOARD_PORT: where it listens (127.0.0.1:3000 by default).
// HTTP Basic with the ops dashboard's credential: the board can retry, clean and remove jobs.
const crypto = require("node:crypto");
const express = require("express");
const IORedis = require("ioredis");
const { Queue } = require("bullmq");
const { createBullBoard } = require("@bull-board/api");
const { BullMQAdapter } = require("@bull-board/api/bullMQAdapter");
const { ExpressAdapter } = require("@bull-board/express");

function config() {
  const raw = process.env.BULL_BOARD_CONFIG;
  if (!raw) {
    throw new Error("BULL_BOARD_CONFIG is not set: start it with `make bull-board`");
  }
  const parsed = JSON.parse(raw);
  for (const field of ["redisUrl", "prefix", "queues", "user", "password"]) {
    if (parsed[field] === undefined) throw new Error(`BULL_BOARD_CONFIG has no ${field}`);
  }
  return parsed;
}

function same(given, wanted) {
  const a = crypto.createHash("sha256").update(given).digest();
  const b = crypto.createHash("sha256").update(wanted).digest();
  return crypto.timingSafeEqual(a, b);
}

function basicAuth(user, password) {
  return (req, res, next) => {
    const [scheme, encoded] = (req.headers.authorization || "").split(" ");
    if (scheme === "Basic" && encoded) {
      const text = Buffer.from(encoded, "base64").toString("utf8");
      const colon = text.indexOf(":");
      if (colon >= 0 && same(text.slice(0, colon), user) & same(text.slice(colon + 1), password)) {
        return next();
      }
    }
    res.set("WWW-Authenticate", 'Basic realm="bull-board", charset="UTF-8"');
    res.status(401).send("authentication required");
  };
}

// redis+cluster://[user:pass@]h1:p1,h2:p2/0 (how orderflow's settings write a Redis Cluster's
// seed list, ORDERFLOW_REDIS_CLUSTER=true): an ioredis Cluster; the prefix carries a hash tag
function connect(url) {
  if (!/^rediss?\+cluster:\/\//.test(url)) return new IORedis(url, { maxRetriesPerRequest: null });
  const rest = url.split("://")[1];
  const at = rest.lastIndexOf("@");
  const auth = at >= 0 ? rest.slice(0, at) : "";
  const hosts = (at >= 0 ? rest.slice(at + 1) : rest).split("/")[0].split("?")[0];
  const nodes = hosts.split(",").map((h) => {
    const i = h.lastIndexOf(":");
    return { host: h.slice(0, i), port: Number(h.slice(i + 1)) };
  });
  const [username, password] = auth ? auth.split(":").map(decodeURIComponent) : [];
  const redisOptions = { maxRetriesPerRequest: null, username: username || undefined,
                         password: password || undefined };
  if (url.startsWith("rediss")) redisOptions.tls = {};
  return new IORedis.Cluster(nodes, { redisOptions });
}

async function main() {
  const cfg = config();
  const host = process.env.BULL_BOARD_HOST || "127.0.0.1";
  const port = Number(process.env.BULL_BOARD_PORT || 3000);
  const connection = connect(cfg.redisUrl);
  const queues = cfg.queues.map((name) => new Queue(name, { connection, prefix: cfg.prefix }));

  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath("/");
  createBullBoard({
    queues: queues.map((queue) => new BullMQAdapter(queue)),
    serverAdapter,
    options: { uiConfig: { boardTitle: "orderflow queues" } },
  });

  const app = express();
  app.use(basicAuth(cfg.user, cfg.password));
  app.use("/", serverAdapter.getRouter());
  const server = app.listen(port, host, () => {
    console.log(JSON.stringify({ listening: `http://${host}:${server.address().port}/` }));
  });
  const stop = async () => {
    server.close();
    await Promise.all(queues.map((queue) => queue.close()));
    await connection.quit();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err.message || err); process.exit(1); });
