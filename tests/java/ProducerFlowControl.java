import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;

/**
 * Producer flow control: an async-sending producer with a 64 KiB
 * `jms.producerWindowSize` sends 5,000 non-persistent 1 KiB messages (about
 * 80 windows' worth) with no consumer yet, then a consumer gets them all.
 * The client blocks a send once a window's worth is unacknowledged and
 * waits for the broker's ProducerAck to give it back: if the broker never
 * sent one, the sends would hang, so they run under a deadline.
 */
public class ProducerFlowControl implements Jms.Check {
    static final int COUNT = 5000;
    static final int SIZE = 1024;
    static final long SEND_DEADLINE_S = 60;

    public static void main(String[] args) {
        Jms.main1("ProducerFlowControl", new ProducerFlowControl(), args);
    }

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        String windowed = url + (url.contains("?") ? "&" : "?")
                + "jms.producerWindowSize=65536&jms.useAsyncSend=true";
        Connection c = Jms.connect(windowed);
        ExecutorService sender = Executors.newSingleThreadExecutor(t -> {
            Thread th = new Thread(t);
            th.setDaemon(true); // a send blocked for good must not keep the JVM alive
            return th;
        });
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue q = s.createQueue(Jms.unique("window"));
            MessageProducer p = s.createProducer(q);
            p.setDeliveryMode(DeliveryMode.NON_PERSISTENT);
            byte[] payload = new byte[SIZE];
            int[] sent = {0};
            long t0 = System.nanoTime();
            Future<?> sending = sender.submit(() -> {
                for (int i = 0; i < COUNT; i++) {
                    BytesMessage m = s.createBytesMessage();
                    m.writeBytes(payload);
                    m.setIntProperty("n", i);
                    p.send(m);
                    sent[0] = i + 1;
                }
                return null;
            });
            try {
                sending.get(SEND_DEADLINE_S, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                r.expect(false, "the sends blocked: " + sent[0] + " of " + COUNT + " sent after "
                        + SEND_DEADLINE_S + " s (no ProducerAck gave the window back?)");
                sending.cancel(true);
                return;
            }
            r.put("send_millis", (System.nanoTime() - t0) / 1_000_000);
            r.put("sent", sent[0]);

            MessageConsumer consumer = s.createConsumer(q);
            int got = 0;
            int outOfOrder = 0;
            while (got < COUNT) {
                Message m = consumer.receive(10000);
                if (m == null) {
                    break;
                }
                if (m.getIntProperty("n") != got) {
                    outOfOrder++;
                }
                if (((BytesMessage) m).getBodyLength() != SIZE) {
                    r.expect(false, "message " + got + " has " + ((BytesMessage) m).getBodyLength() + " bytes");
                }
                got++;
            }
            r.put("received", got);
            r.expectEq(COUNT, got, "messages received");
            r.expectEq(0, outOfOrder, "messages out of order");
        } finally {
            sender.shutdownNow();
            Jms.closeQuietly(c);
        }
    }
}
