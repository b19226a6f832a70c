import java.util.ArrayList;
import java.util.List;

import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TextMessage;

/**
 * JMSPriority: messages queued before a consumer arrives are delivered
 * highest priority first (FIFO within a priority). Expiry: a message whose
 * time to live has passed is not delivered; one with a long TTL carries
 * its JMSExpiration.
 */
public class PriorityExpiry implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("PriorityExpiry", new PriorityExpiry(), args);
    }

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue q = s.createQueue(Jms.unique("priority"));
            MessageProducer p = s.createProducer(q);
            int[] priorities = {3, 9, 0, 7, 4, 9, 1};
            for (int i = 0; i < priorities.length; i++) {
                p.send(s.createTextMessage("p" + priorities[i] + "-" + i), DeliveryMode.PERSISTENT, priorities[i], 0);
            }
            MessageConsumer consumer = s.createConsumer(q);
            List<String> order = new ArrayList<>();
            List<Integer> got = new ArrayList<>();
            for (int i = 0; i < priorities.length; i++) {
                Message m = consumer.receive(10000);
                if (m == null) {
                    break;
                }
                order.add(((TextMessage) m).getText());
                got.add(m.getJMSPriority());
            }
            consumer.close();
            r.expectEq(List.of("p9-1", "p9-5", "p7-3", "p4-4", "p3-0", "p1-6", "p0-2"), order, "priority order");
            r.put("priority_order", order);

            Queue eq = s.createQueue(Jms.unique("expiry"));
            MessageProducer ep = s.createProducer(eq);
            long t0 = System.currentTimeMillis();
            ep.send(s.createTextMessage("short-ttl"), DeliveryMode.PERSISTENT, 4, 100);
            ep.send(s.createTextMessage("long-ttl"), DeliveryMode.PERSISTENT, 4, 60000);
            ep.send(s.createTextMessage("no-ttl"), DeliveryMode.PERSISTENT, 4, 0);
            // Let the short TTL pass: time itself is what is awaited here.
            Thread.sleep(Math.max(0, 400 - (System.currentTimeMillis() - t0)));
            MessageConsumer ec = s.createConsumer(eq);
            List<String> alive = new ArrayList<>();
            long wait = 10000;
            Message m;
            while ((m = ec.receive(wait)) != null) {
                String b = ((TextMessage) m).getText();
                alive.add(b);
                if (b.equals("long-ttl")) {
                    long exp = m.getJMSExpiration();
                    r.expect(exp >= t0 + 59000 && exp <= System.currentTimeMillis() + 60000,
                            "long-ttl JMSExpiration about now + 60 s: " + exp);
                } else if (b.equals("no-ttl")) {
                    r.expectEq(0L, m.getJMSExpiration(), "no-ttl JMSExpiration");
                }
                wait = 500;
            }
            r.expectEq(List.of("long-ttl", "no-ttl"), alive, "expired message not delivered");
            r.put("expiry_delivered", alive);
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
