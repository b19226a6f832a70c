// @stomp/stompjs under node against a real halyard, over STOMP over
// WebSocket. Run by tests/python/test_websocket.py; prints progress lines
// ("receipted N") and, last, one JSON summary line; exits 0 when every
// message arrived as expected.
//
//   node stomp-client.mjs roundtrip ws://HOST:PORT/ QUEUE COUNT
//       a producer and a consumer on one broker: COUNT messages sent with
//       receipts, all received in order, with heart-beats both ways.
//   node stomp-client.mjs failover ws://A/,ws://B/ QUEUE COUNT
//       the same across a takeover: each client's brokerURL rotates through
//       the URLs in beforeConnect; a send whose receipt did not come is sent
//       again (same _AMQ_DUPL_ID) once reconnected; the consumer subscribes
//       again on every connect and acks each message with a receipt. A
//       duplicate is expected only for a message whose ack got no receipt.

import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

Object.assign(globalThis, { WebSocket });

const [mode, urlList, queue, countText] = process.argv.slice(2);
const urls = (urlList || '').split(',').filter(Boolean);
const count = Number(countText);
if (!['roundtrip', 'failover'].includes(mode) || !urls.length || !queue || !(count > 0)) {
  console.error('usage: node stomp-client.mjs roundtrip|failover URL[,URL...] QUEUE COUNT');
  process.exit(2);
}
const DEADLINE_MS = 60_000;
const run = `${process.pid}-${Date.now()}`;
const failover = mode === 'failover';

/** A stompjs client whose brokerURL rotates through `urls`. */
function client(name) {
  let next = 0;
  const c = new Client({
    reconnectDelay: 100,
    connectionTimeout: 2000,
    heartbeatIncoming: failover ? 0 : 500,
    heartbeatOutgoing: failover ? 0 : 500,
    debug: () => {},
  });
  c.beforeConnect = () => {
    c.brokerURL = urls[next % urls.length];
    next += 1;
  };
  c.onStompError = (frame) => log(`${name}: ERROR ${frame.headers.message} ${frame.body}`);
  return c;
}

const events = [];
function log(line) {
  events.push(line);
}

// -- consumer --
const seen = new Map(); // body -> deliveries
const ackReceipted = new Set(); // bodies whose ack got a receipt
let unexpectedDuplicates = 0;
let redeliveredAfterLostAck = 0;
let outOfOrder = 0;
let lastIndex = -1;
let consumerConnects = 0;
let allReceived;
const received = new Promise((resolve) => (allReceived = resolve));

const consumer = client('consumer');
consumer.onConnect = (frame) => {
  consumerConnects += 1;
  log(`consumer connected to ${consumer.brokerURL} (subprotocol ${consumer.webSocket?.protocol || '-'}, server ${frame.headers.server})`);
  consumer.subscribe(
    queue,
    (message) => {
      const body = message.body;
      const index = Number(body.split('-').pop());
      const before = seen.get(body) || 0;
      seen.set(body, before + 1);
      if (before > 0) {
        if (ackReceipted.has(body)) unexpectedDuplicates += 1;
        else redeliveredAfterLostAck += 1;
      } else if (!failover && index !== lastIndex + 1) {
        outOfOrder += 1;
      }
      lastIndex = Math.max(lastIndex, index);
      const receipt = `ack-${body}-${before}`;
      // An ack's receipt may be lost with the broker that had it stored:
      // done is when every message has arrived, not when every ack is
      // confirmed.
      consumer.watchForReceipt(receipt, () => ackReceipted.add(body));
      message.ack({ receipt });
      if (seen.size === count) allReceived();
    },
    { ack: 'client-individual' },
  );
};

// -- producer --
const producer = client('producer');
let producerConnects = 0;
let closes = 0; // connections (or attempts) that ended
let onClose = () => {};
let resends = 0;
producer.onConnect = () => {
  producerConnects += 1;
  log(`producer connected to ${producer.brokerURL}`);
};
producer.onWebSocketClose = () => {
  closes += 1;
  onClose();
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sends `body` once connected; true when its receipt came, false when
 * the connection ended first. */
async function sendOnce(body, receipt) {
  while (!producer.connected) await sleep(10);
  const generation = closes;
  return new Promise((resolve) => {
    producer.watchForReceipt(receipt, () => resolve(true));
    onClose = () => resolve(false);
    try {
      producer.publish({
        destination: queue,
        body,
        headers: { persistent: 'true', receipt, _AMQ_DUPL_ID: `js-${body}` },
      });
    } catch {
      resolve(false);
    }
    if (closes !== generation) resolve(false);
  });
}

async function produce() {
  for (let i = 0; i < count; i += 1) {
    const body = `${run}-${i}`;
    for (let attempt = 0; !(await sendOnce(body, `send-${i}-${attempt}`)); attempt += 1) {
      resends += 1; // sent again on the next connection, same _AMQ_DUPL_ID
      await sleep(10);
    }
    console.log(`receipted ${i + 1}`);
  }
}

consumer.activate();
producer.activate();
const timer = setTimeout(() => finish(false, 'deadline passed'), DEADLINE_MS);
try {
  await produce();
  await received;
  if (!failover) {
    // Idle for three heart-beat periods: EOLs must flow both ways through
    // the WebSocket bridge, or a side gives up on the other.
    await sleep(1500);
    if (producerConnects !== 1 || consumerConnects !== 1 || !producer.connected || !consumer.connected) {
      throw new Error('a connection dropped while idle: heart-beats did not get through');
    }
  }
  finish(true);
} catch (e) {
  finish(false, String(e));
}

function finish(done, why) {
  clearTimeout(timer);
  const distinct = seen.size;
  const summary = {
    mode,
    done,
    why: why || null,
    count,
    distinct,
    unexpectedDuplicates,
    redeliveredAfterLostAck,
    outOfOrder,
    acksReceipted: ackReceipted.size,
    resends,
    producerConnects,
    consumerConnects,
    events,
  };
  console.log(JSON.stringify(summary));
  const ok = done && distinct === count && unexpectedDuplicates === 0 && outOfOrder === 0;
  Promise.allSettled([producer.deactivate(), consumer.deactivate()]).finally(() =>
    process.exit(ok ? 0 : 1),
  );
}
