// Shared by the interop scripts: argv parsing and an ioredis connection BullMQ accepts.
// A redis+cluster://h1:p1,h2:p2/0 URL (as orderflow's settings write a cluster's seed list)
// gives an ioredis Cluster: BullMQ then needs a prefix with a hash tag, e.g. {bull}.
const IORedis = require("ioredis");

function connect(url) {
  if (url.startsWith("redis+cluster://") || url.startsWith("rediss+cluster://")) {
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
  return new IORedis(url, { maxRetriesPerRequest: null });
}

module.exports = { connect };
