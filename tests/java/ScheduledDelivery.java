import java.util.ArrayList;
import java.util.List;

import javax.jms.Connection;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TextMessage;

/**
 * ActiveMQ's scheduled delivery properties: AMQ_SCHEDULED_DELAY holds a
 * message back (a message sent after it without delay overtakes it);
 * AMQ_SCHEDULED_PERIOD + AMQ_SCHEDULED_REPEAT deliver it 1 + REPEAT times.
 */
public class ScheduledDelivery implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("ScheduledDelivery", new ScheduledDelivery(), args);
    }

    static final long DELAY = 1500;

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue q = s.createQueue(Jms.unique("scheduled"));
            MessageProducer p = s.createProducer(q);
            MessageConsumer consumer = s.createConsumer(q);
            long t0 = System.currentTimeMillis();
            TextMessage late = s.createTextMessage("delayed");
            late.setLongProperty("AMQ_SCHEDULED_DELAY", DELAY);
            p.send(late);
            p.send(s.createTextMessage("immediate"));
            List<String> order = new ArrayList<>();
            Message first = consumer.receive(10000);
            long firstAt = System.currentTimeMillis() - t0;
            Message second = consumer.receive(10000);
            long secondAt = System.currentTimeMillis() - t0;
            if (first != null) {
                order.add(((TextMessage) first).getText());
            }
            if (second != null) {
                order.add(((TextMessage) second).getText());
            }
            r.expectEq(List.of("immediate", "delayed"), order, "the delayed message comes last");
            r.expect(firstAt < DELAY, "the immediate message came at once (" + firstAt + " ms)");
            r.expect(secondAt >= DELAY - 100, "the delayed message came after its delay (" + secondAt + " ms)");
            r.put("order", order);
            r.put("delayed_after_ms", secondAt);

            TextMessage rep = s.createTextMessage("repeated");
            rep.setLongProperty("AMQ_SCHEDULED_DELAY", 200);
            rep.setLongProperty("AMQ_SCHEDULED_PERIOD", 200);
            rep.setIntProperty("AMQ_SCHEDULED_REPEAT", 2);
            p.send(rep);
            int copies = 0;
            long wait = 10000;
            Message m;
            while ((m = consumer.receive(wait)) != null) {
                r.expectEq("repeated", ((TextMessage) m).getText(), "repeat body");
                copies++;
                wait = copies >= 3 ? 1000 : 10000;
            }
            r.expectEq(3, copies, "AMQ_SCHEDULED_REPEAT=2 delivers three copies");
            r.put("repeat_copies", copies);
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
