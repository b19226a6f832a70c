import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;

import org.apache.activemq.ActiveMQConnectionFactory;

/**
 * The OpenWire load program of bench/compare.sh (scenarios ow-a .. ow-d): the
 * same JMS code, ActiveMQ 5.17's own client with its defaults, against
 * ActiveMQ and against Halyard. See bench/README.md, "OpenWire scenarios".
 *
 * <pre>
 * java JmsLoad URL QUEUE [--producers N] [--consumers K] [--size BYTES]
 *      [--persistent] [--warmup S] [--duration S] [--drain-timeout S]
 * </pre>
 *
 * N producers, each on its own connection, send BytesMessages of BYTES bytes
 * to QUEUE for warmup + duration seconds; K consumers (own connections,
 * AUTO_ACKNOWLEDGE, the client's default prefetch of 1000) receive them all.
 * Persistent messages are sent with the client's default for a persistent
 * send outside a transaction: synchronously (send() returns after the
 * broker's answer, i.e. after the store write). Non-persistent ones are sent
 * asynchronously (send() returns once the frame is written). Nothing else
 * differs from an unmodified JMS application.
 *
 * Only messages whose send started after the warm-up count. The end-to-end
 * latency is measured from a long property stamped just before send()
 * (System.nanoTime: producers and consumers share this JVM's clock) to the
 * consumer's receive(). The send rate counts until each producer's
 * connection.close() returned: the client closes with a synchronous
 * RemoveInfo, so everything sent before it has reached the broker (like
 * `halyard bench` ending with a DISCONNECT receipt). After the producers
 * stop, consumers get drain-timeout seconds for the rest; whatever never
 * arrives is "missing", anything received twice is "extra".
 *
 * Prints ONE JSON line with the field names of `halyard bench --json`
 * (sent, received, send_rate, receive_rate, e2e_latency_us, missing, extra,
 * errors, ...) plus send_latency_us: the time send() took.
 */
public final class JmsLoad {
    private static final String STAMP = "bench_sent_ns";

    /** Set once the drain is over; the consumers' receive(100) loops check it. */
    private static volatile boolean stopConsumers;

    private JmsLoad() {}

    /** Everything one producer or consumer thread measured; merged at the end. */
    static final class Samples {
        long[] v = new long[1 << 14];
        int n;

        void add(long x) {
            if (n == v.length) {
                v = Arrays.copyOf(v, n * 2);
            }
            v[n++] = x;
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: JmsLoad URL QUEUE [--producers N] [--consumers K] [--size BYTES]"
                    + " [--persistent] [--warmup S] [--duration S] [--drain-timeout S]");
            System.exit(2);
        }
        final String url = args[0];
        final String queueName = args[1];
        int producers = 1, consumers = 1, size = 1024;
        boolean persistent = false;
        double warmupS = 2, durationS = 15, drainS = 10;
        for (int i = 2; i < args.length; i++) {
            switch (args[i]) {
                case "--producers": producers = Integer.parseInt(args[++i]); break;
                case "--consumers": consumers = Integer.parseInt(args[++i]); break;
                case "--size": size = Integer.parseInt(args[++i]); break;
                case "--persistent": persistent = true; break;
                case "--warmup": warmupS = Double.parseDouble(args[++i]); break;
                case "--duration": durationS = Double.parseDouble(args[++i]); break;
                case "--drain-timeout": drainS = Double.parseDouble(args[++i]); break;
                default:
                    System.err.println("JmsLoad: unknown option " + args[i]);
                    System.exit(2);
            }
        }
        if (size < 8 || producers < 1 || consumers < 1) {
            System.err.println("JmsLoad: need --size >= 8, at least one producer and one consumer");
            System.exit(2);
        }

        final ActiveMQConnectionFactory factory = new ActiveMQConnectionFactory(url);
        final ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
        final AtomicLong sentAll = new AtomicLong();      // warm-up included
        final AtomicLong receivedAll = new AtomicLong();  // warm-up included
        final int nProducers = producers, nConsumers = consumers, bodySize = size;
        final int mode = persistent ? DeliveryMode.PERSISTENT : DeliveryMode.NON_PERSISTENT;

        // Consumers first, so that nothing the producers send waits for one.
        final BitSet[][] seen = new BitSet[nConsumers][nProducers];
        final Samples[] e2e = new Samples[nConsumers];
        final long[] measuredReceived = new long[nConsumers];
        final long[] lastArrival = new long[nConsumers];
        final long[] receivedByConsumer = new long[nConsumers];
        final long[] measureStart = new long[1];
        final CountDownLatch consumersReady = new CountDownLatch(nConsumers);
        final CountDownLatch go = new CountDownLatch(1);
        List<Thread> consumerThreads = new ArrayList<>();
        for (int c = 0; c < nConsumers; c++) {
            final int me = c;
            for (int p = 0; p < nProducers; p++) {
                seen[me][p] = new BitSet();
            }
            e2e[me] = new Samples();
            Thread t = new Thread(() -> {
                Connection conn = null;
                try {
                    conn = factory.createConnection();
                    conn.start();
                    Session s = conn.createSession(false, Session.AUTO_ACKNOWLEDGE);
                    Queue q = s.createQueue(queueName);
                    MessageConsumer mc = s.createConsumer(q);
                    consumersReady.countDown();
                    go.await();
                    byte[] id = new byte[8];
                    while (!stopConsumers) {
                        Message m = mc.receive(100);
                        if (m == null) {
                            continue;
                        }
                        long now = System.nanoTime();
                        long sentNs = m.getLongProperty(STAMP);
                        ((BytesMessage) m).readBytes(id);
                        long key = 0;
                        for (byte b : id) {
                            key = (key << 8) | (b & 0xff);
                        }
                        int prod = (int) (key >>> 32);
                        int seq = (int) key;
                        if (prod >= 0 && prod < nProducers && seq >= 0) {
                            seen[me][prod].set(seq);
                        } else {
                            errors.add("consumer " + me + ": message with a foreign id " + key);
                        }
                        receivedByConsumer[me]++;
                        receivedAll.incrementAndGet();
                        if (sentNs >= measureStart[0]) {
                            measuredReceived[me]++;
                            lastArrival[me] = now;
                            e2e[me].add((now - sentNs) / 1000);
                        }
                    }
                } catch (Exception e) {
                    errors.add("consumer " + me + ": " + e);
                    consumersReady.countDown();
                } finally {
                    close(conn, errors, "consumer " + me);
                }
            }, "consumer-" + c);
            t.start();
            consumerThreads.add(t);
        }
        consumersReady.await();

        final long t0 = System.nanoTime();
        measureStart[0] = t0 + (long) (warmupS * 1e9);
        final long stopAt = measureStart[0] + (long) (durationS * 1e9);
        final Samples[] sendLat = new Samples[nProducers];
        final long[] measuredSent = new long[nProducers];
        final long[] closedAt = new long[nProducers];
        go.countDown();
        List<Thread> producerThreads = new ArrayList<>();
        for (int p = 0; p < nProducers; p++) {
            final int me = p;
            sendLat[me] = new Samples();
            Thread t = new Thread(() -> {
                Connection conn = null;
                try {
                    conn = factory.createConnection();
                    conn.start();
                    Session s = conn.createSession(false, Session.AUTO_ACKNOWLEDGE);
                    MessageProducer mp = s.createProducer(s.createQueue(queueName));
                    mp.setDeliveryMode(mode);
                    byte[] body = new byte[bodySize];
                    Arrays.fill(body, (byte) 'x');
                    for (int seq = 0; ; seq++) {
                        long start = System.nanoTime();
                        if (start >= stopAt) {
                            break;
                        }
                        long key = ((long) me << 32) | seq;
                        for (int i = 0; i < 8; i++) {
                            body[i] = (byte) (key >>> (56 - 8 * i));
                        }
                        BytesMessage m = s.createBytesMessage();
                        m.writeBytes(body);
                        m.setLongProperty(STAMP, start);
                        mp.send(m);
                        sentAll.incrementAndGet();
                        if (start >= measureStart[0]) {
                            measuredSent[me]++;
                            sendLat[me].add((System.nanoTime() - start) / 1000);
                        }
                    }
                    conn.close();
                    conn = null;
                    closedAt[me] = System.nanoTime();
                } catch (Exception e) {
                    errors.add("producer " + me + ": " + e);
                } finally {
                    close(conn, errors, "producer " + me);
                }
            }, "producer-" + p);
            t.start();
            producerThreads.add(t);
        }
        for (Thread t : producerThreads) {
            t.join();
        }
        long producersDone = System.nanoTime();

        // Drain: until everything sent has arrived, or the deadline.
        long drainDeadline = producersDone + (long) (drainS * 1e9);
        while (receivedAll.get() < sentAll.get() && System.nanoTime() < drainDeadline) {
            Thread.sleep(20);
        }
        stopConsumers = true;
        for (Thread t : consumerThreads) {
            t.join();
        }

        long sent = 0, received = 0, lastRecv = 0, lastClose = 0, got = 0;
        for (int p = 0; p < nProducers; p++) {
            sent += measuredSent[p];
            lastClose = Math.max(lastClose, closedAt[p]);
        }
        long unique = 0;
        for (int p = 0; p < nProducers; p++) {
            BitSet all = new BitSet();
            for (int c = 0; c < nConsumers; c++) {
                all.or(seen[c][p]);
            }
            unique += all.cardinality();
        }
        for (int c = 0; c < nConsumers; c++) {
            received += measuredReceived[c];
            lastRecv = Math.max(lastRecv, lastArrival[c]);
            got += receivedByConsumer[c];
        }
        long total = sentAll.get();
        double sendDur = lastClose > measureStart[0] ? (lastClose - measureStart[0]) / 1e9 : 0;
        double recvDur = lastRecv > measureStart[0] ? (lastRecv - measureStart[0]) / 1e9 : 0;

        StringBuilder j = new StringBuilder("{");
        field(j, "url", url);
        field(j, "destination", queueName);
        field(j, "client", "ActiveMQ 5.17 JMS (JmsLoad)");
        field(j, "producers", nProducers);
        field(j, "consumers", nConsumers);
        field(j, "size_bytes", bodySize);
        field(j, "persistent", persistent);
        field(j, "sync_send", persistent);
        field(j, "ack", "AUTO_ACKNOWLEDGE");
        field(j, "warmup_s", warmupS);
        field(j, "sent", sent);
        field(j, "received", received);
        field(j, "sent_incl_warmup", total);
        field(j, "received_incl_warmup", got);
        field(j, "expected", total);
        field(j, "missing", Math.max(0, total - unique));
        field(j, "extra", Math.max(0, got - unique));
        field(j, "send_duration_s", sendDur);
        field(j, "receive_duration_s", recvDur);
        field(j, "send_rate", sendDur > 0 ? sent / sendDur : 0.0);
        field(j, "receive_rate", recvDur > 0 ? received / recvDur : 0.0);
        j.append("\"send_latency_us\":").append(percentiles(sendLat)).append(',');
        j.append("\"receipt_latency_us\":null,");
        j.append("\"e2e_latency_us\":").append(percentiles(e2e)).append(',');
        j.append("\"errors\":[");
        int i = 0;
        for (String e : errors) {
            j.append(i++ == 0 ? "" : ",").append(quote(e));
        }
        j.append("]}");
        System.out.println(j);
        System.exit(errors.isEmpty() && total == unique ? 0 : 1);
    }

    private static void close(Connection c, ConcurrentLinkedQueue<String> errors, String who) {
        if (c == null) {
            return;
        }
        try {
            c.close();
        } catch (Exception e) {
            errors.add(who + ": close: " + e);
        }
    }

    /** p50/p90/p99/p999/max/mean in µs, as `halyard bench` reports them, or null. */
    private static String percentiles(Samples[] parts) {
        int n = 0;
        for (Samples s : parts) {
            n += s.n;
        }
        if (n == 0) {
            return "null";
        }
        long[] all = new long[n];
        int k = 0;
        double sum = 0;
        for (Samples s : parts) {
            System.arraycopy(s.v, 0, all, k, s.n);
            k += s.n;
        }
        Arrays.sort(all);
        for (long v : all) {
            sum += v;
        }
        return String.format(Locale.ROOT,
                "{\"count\":%d,\"p50\":%d,\"p90\":%d,\"p99\":%d,\"p999\":%d,\"max\":%d,\"mean\":%.0f}",
                n, q(all, 0.50), q(all, 0.90), q(all, 0.99), q(all, 0.999), all[n - 1], sum / n);
    }

    private static long q(long[] sorted, double p) {
        int i = (int) Math.ceil(p * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
    }

    private static void field(StringBuilder j, String k, Object v) {
        j.append(quote(k)).append(':');
        if (v instanceof String) {
            j.append(quote((String) v));
        } else if (v instanceof Double) {
            j.append(String.format(Locale.ROOT, "%.6f", (Double) v));
        } else {
            j.append(v);
        }
        j.append(',');
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') {
                b.append('\\').append(ch);
            } else if (ch < 0x20) {
                b.append(String.format("\\u%04x", (int) ch));
            } else {
                b.append(ch);
            }
        }
        return b.append('"').toString();
    }
}
