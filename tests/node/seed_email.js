// node seed_email.js REDIS_URL PREFIX QUEUE USER_JSON ORDER_JSON -> prints {added: true}
// The seed's producer code (SEED-background-jobs.md, "Email Job Example"), run as written:
// only `emailQueue`, `user` and `order` are made here, from the arguments.
const { Queue } = require("bullmq");
const { connect } = require("./common");

async function main() {
  const [url, prefix, queueName, userJson, orderJson] = process.argv.slice(2);
  const connection = connect(url);
  const emailQueue = new Queue(queueName, { connection, prefix });
  const user = JSON.parse(userJson);
  const order = JSON.parse(orderJson);

  // ---- verbatim from the seed ----
  // Add job to queue
  await emailQueue.add('send-order-confirmation', {
    to: user.email,
    subject: 'Order Confirmed',
    template: 'order_confirmation',
    data: {
      orderNumber: order.orderNumber,
      items: order.items,
      total: order.grandTotal
    }
  }, {
    attempts: 3,
    backoff: {
      type: 'exponential',
      delay: 2000  // 2s, 4s, 8s
    },
    removeOnComplete: true,
    removeOnFail: false
  });
  // ---- end of the seed's code ----

  console.log(JSON.stringify({ added: true }));
  await emailQueue.close();
  await connection.quit();
}

main().catch((err) => { console.error(err); process.exit(1); });
