import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

import javax.jms.DeliveryMode;
import javax.jms.MessageProducer;
import javax.jms.Session;
import javax.jms.TextMessage;

import org.apache.activemq.ActiveMQConnection;
import org.apache.activemq.ActiveMQConnectionFactory;
import org.apache.activemq.transport.TransportListener;

/**
 * The headline failover producer: `FailoverProducer URL QUEUE COUNT [SLEEP_MS]`
 * sends COUNT persistent text messages "m000001".. (int property "seq" =
 * 1..COUNT), one synchronous send at a time, on a `failover:(...)` URL. It
 * is an ordinary JMS application: when the broker goes away mid-run the
 * ActiveMQ client's failover transport reconnects and replays what was in
 * flight; a send() that throws is reported, never retried by hand (that
 * would be the application doubling messages, not the broker).
 *
 * stderr gets "progress sent=N" after every send so a harness can kill the
 * master mid-run; stdout gets the one JSON result line.
 */
public class FailoverProducer {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: FailoverProducer URL QUEUE COUNT [SLEEP_MS]");
            System.exit(2);
        }
        String url = args[0];
        String queue = args[1];
        int count = Integer.parseInt(args[2]);
        long sleep = args.length > 3 ? Long.parseLong(args[3]) : 0;
        AtomicInteger interrupted = new AtomicInteger();
        AtomicInteger resumed = new AtomicInteger();
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("check", "FailoverProducer");
        int sent = 0;
        String error = null;
        long t0 = System.nanoTime();
        ActiveMQConnection c = null;
        try {
            ActiveMQConnectionFactory f = Jms.factory(url);
            f.setAlwaysSyncSend(true); // a send returns once the broker has stored it
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
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageProducer p = s.createProducer(s.createQueue(queue));
            p.setDeliveryMode(DeliveryMode.PERSISTENT);
            for (int i = 1; i <= count; i++) {
                TextMessage m = s.createTextMessage(String.format("m%06d", i));
                m.setIntProperty("seq", i);
                p.send(m);
                sent = i;
                System.err.println("progress sent=" + i);
                if (sleep > 0) {
                    Thread.sleep(sleep);
                }
            }
        } catch (Exception e) {
            error = Jms.describe(e);
        } finally {
            Jms.closeQuietly(c);
        }
        out.put("ok", error == null && sent == count);
        out.put("errors", error == null ? java.util.List.of() : java.util.List.of(error));
        out.put("sent", sent);
        out.put("interrupted", interrupted.get());
        out.put("resumed", resumed.get());
        out.put("millis", (System.nanoTime() - t0) / 1_000_000);
        System.out.println(Jms.json(out));
        System.out.flush();
        System.exit(error == null && sent == count ? 0 : 1);
    }
}
