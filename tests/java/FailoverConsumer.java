import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicInteger;

import javax.jms.JMSException;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.Session;

import org.apache.activemq.ActiveMQConnection;
import org.apache.activemq.ActiveMQConnectionFactory;
import org.apache.activemq.transport.TransportListener;

/**
 * The headline failover consumer:
 * `FailoverConsumer URL QUEUE COUNT client|transacted [IDLE_MS] [DEADLINE_S]`
 * consumes the "seq"-numbered messages of FailoverProducer on a
 * `failover:(...)` URL, either acknowledging each one (CLIENT_ACKNOWLEDGE,
 * synchronous acks) or committing every 10 (a transacted session). A message
 * counts as consumed when its acknowledge() / commit() returned: a commit
 * that fails because the broker went away in the middle
 * (TransactionRolledBackException) consumed nothing, those messages come
 * again. It stops once it has COUNT distinct messages and nothing more came
 * for IDLE_MS (default 2000; a duplicate would show up then), or at the
 * deadline (default 120 s).
 *
 * Result: every seq consumed, the duplicates and the missing ones; ok when
 * each of 1..COUNT was consumed exactly once. stderr gets
 * "progress consumed=N".
 */
public class FailoverConsumer {
    public static void main(String[] args) throws Exception {
        if (args.length < 4 || !(args[3].equals("client") || args[3].equals("transacted"))) {
            System.err.println("usage: FailoverConsumer URL QUEUE COUNT client|transacted [IDLE_MS] [DEADLINE_S]");
            System.exit(2);
        }
        String url = args[0];
        String queue = args[1];
        int count = Integer.parseInt(args[2]);
        boolean transacted = args[3].equals("transacted");
        long idle = args.length > 4 ? Long.parseLong(args[4]) : 2000;
        long deadline = System.nanoTime() + (args.length > 5 ? Long.parseLong(args[5]) : 120) * 1_000_000_000L;
        AtomicInteger interrupted = new AtomicInteger();
        AtomicInteger resumed = new AtomicInteger();
        TreeMap<Integer, Integer> consumed = new TreeMap<>();
        List<String> errors = new ArrayList<>();
        int deliveries = 0;
        int redelivered = 0;
        int rollbacks = 0;
        int ackFailures = 0;
        long t0 = System.nanoTime();
        ActiveMQConnection c = null;
        try {
            ActiveMQConnectionFactory f = Jms.factory(url);
            f.setSendAcksAsync(false); // acknowledge() returns once the broker has the ack
            c = (ActiveMQConnection) f.createConnection();
            c.addTransportListener(new TransportListener() {
                public void onCommand(Object command) {}

                public void onException(IOException error) {}

                public void transportInterupted() {
                    interrupted.incrementAndGet();
                    System.err.println("transport interrupted");
                }

                public void transportResumed() {
                    resumed.incrementAndGet();
                    System.err.println("transport resumed");
                }
            });
            c.start();
            Session s = transacted ? c.createSession(true, Session.SESSION_TRANSACTED)
                    : c.createSession(false, Session.CLIENT_ACKNOWLEDGE);
            MessageConsumer mc = s.createConsumer(s.createQueue(queue));
            List<Integer> batch = new ArrayList<>();
            long lastMessage = System.nanoTime();
            while (System.nanoTime() < deadline) {
                Message m = mc.receive(200);
                if (m != null) {
                    lastMessage = System.nanoTime();
                    deliveries++;
                    if (m.getJMSRedelivered()) {
                        redelivered++;
                    }
                    int seq = m.getIntProperty("seq");
                    if (transacted) {
                        batch.add(seq);
                    } else {
                        try {
                            m.acknowledge();
                            consumed.merge(seq, 1, Integer::sum);
                            System.err.println("progress consumed=" + consumed.size());
                        } catch (JMSException e) {
                            ackFailures++;
                            System.err.println("acknowledge failed: " + e);
                        }
                    }
                }
                if (transacted && !batch.isEmpty() && (batch.size() >= 10 || m == null)) {
                    try {
                        s.commit();
                        for (int seq : batch) {
                            consumed.merge(seq, 1, Integer::sum);
                        }
                        System.err.println("progress consumed=" + consumed.size());
                    } catch (JMSException e) {
                        rollbacks++; // TransactionRolledBackException: they will come again
                        System.err.println("commit failed: " + e);
                    }
                    batch.clear();
                }
                if (consumed.size() >= count && batch.isEmpty()
                        && System.nanoTime() - lastMessage > idle * 1_000_000L) {
                    break;
                }
            }
        } catch (Exception e) {
            errors.add(Jms.describe(e));
        } finally {
            Jms.closeQuietly(c);
        }
        List<Integer> duplicates = new ArrayList<>();
        for (Map.Entry<Integer, Integer> e : consumed.entrySet()) {
            if (e.getValue() > 1) {
                duplicates.add(e.getKey());
            }
        }
        List<Integer> missing = new ArrayList<>();
        for (int i = 1; i <= count; i++) {
            if (!consumed.containsKey(i)) {
                missing.add(i);
            }
        }
        if (!duplicates.isEmpty()) {
            errors.add(duplicates.size() + " consumed more than once");
        }
        if (!missing.isEmpty()) {
            errors.add(missing.size() + " never consumed");
        }
        int extra = 0;
        for (int k : consumed.keySet()) {
            if (k < 1 || k > count) {
                extra++;
            }
        }
        if (extra > 0) {
            errors.add(extra + " consumed that were never in 1.." + count);
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("check", "FailoverConsumer");
        out.put("ok", errors.isEmpty());
        out.put("errors", errors);
        out.put("mode", transacted ? "transacted" : "client");
        out.put("distinct", consumed.size());
        out.put("deliveries", deliveries);
        out.put("redelivered", redelivered);
        out.put("rollbacks", rollbacks);
        out.put("ack_failures", ackFailures);
        out.put("duplicates", duplicates);
        out.put("missing", missing.size() > 50 ? missing.subList(0, 50) : missing);
        out.put("missing_count", missing.size());
        out.put("interrupted", interrupted.get());
        out.put("resumed", resumed.get());
        out.put("millis", (System.nanoTime() - t0) / 1_000_000);
        System.out.println(Jms.json(out));
        System.out.flush();
        System.exit(errors.isEmpty() ? 0 : 1);
    }
}
