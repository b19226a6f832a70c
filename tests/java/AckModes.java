import java.util.ArrayList;
import java.util.List;

import javax.jms.Connection;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TextMessage;

import org.apache.activemq.ActiveMQSession;

/**
 * Every acknowledge mode and local transactions, on queues:
 * AUTO and DUPS_OK (consumed once, gone); CLIENT (unacked messages come back
 * with JMSRedelivered after the session closes; acknowledge() acks every
 * message the session received); INDIVIDUAL (only the acked one is gone);
 * a transacted producer (rollback discards, commit delivers) and a
 * transacted consumer (rollback redelivers with JMSRedelivered and
 * JMSXDeliveryCount 2, commit consumes).
 */
public class AckModes implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("AckModes", new AckModes(), args);
    }

    private static final long WAIT = 10000;

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection c = Jms.connect(url);
        try {
            auto(c, r, Session.AUTO_ACKNOWLEDGE, "auto");
            auto(c, r, Session.DUPS_OK_ACKNOWLEDGE, "dups_ok");
            client(c, r);
            individual(c, r);
            transactedProducer(c, r);
            transactedConsumer(c, r);
        } finally {
            Jms.closeQuietly(c);
        }
    }

    static Queue fill(Connection c, String name, int n) throws Exception {
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(Jms.unique(name));
        MessageProducer p = s.createProducer(q);
        for (int i = 1; i <= n; i++) {
            p.send(s.createTextMessage(name + "-" + i));
        }
        s.close();
        return q;
    }

    static List<String> take(MessageConsumer consumer, int n, List<Message> into) throws Exception {
        List<String> bodies = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Message m = consumer.receive(WAIT);
            if (m == null) {
                break;
            }
            if (into != null) {
                into.add(m);
            }
            bodies.add(((TextMessage) m).getText());
        }
        return bodies;
    }

    /**
     * Consumes `expected` messages from q on a new AUTO session (up to 10 s
     * for each), then whatever else arrives within 200 ms: the ones that
     * should not have been there.
     */
    static List<String> drain(Connection c, Queue q, List<Message> into, int expected) throws Exception {
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer consumer = s.createConsumer(q);
        List<String> bodies = new ArrayList<>();
        Message m;
        while ((m = consumer.receive(bodies.size() < expected ? WAIT : 200)) != null) {
            bodies.add(((TextMessage) m).getText());
            if (into != null) {
                into.add(m);
            }
        }
        s.close();
        return bodies;
    }

    void auto(Connection c, Jms.Result r, int mode, String name) throws Exception {
        Queue q = fill(c, name, 3);
        Session s = c.createSession(false, mode);
        List<String> got = take(s.createConsumer(q), 3, null);
        r.expectEq(List.of(name + "-1", name + "-2", name + "-3"), got, name + " received");
        s.close();
        List<String> left = drain(c, q, null, 0);
        r.expectEq(List.of(), left, name + " nothing left after close");
        r.put(name, got);
    }

    void client(Connection c, Jms.Result r) throws Exception {
        Queue q = fill(c, "client", 3);
        Session s = c.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        List<String> got = take(s.createConsumer(q), 3, null);
        r.expectEq(List.of("client-1", "client-2", "client-3"), got, "client first delivery");
        s.close(); // nothing acknowledged: all three come back
        Session s2 = c.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        List<Message> msgs = new ArrayList<>();
        List<String> again = take(s2.createConsumer(q), 3, msgs);
        r.expectEq(got, again, "client redelivery after close without ack");
        int redelivered = 0;
        for (Message m : msgs) {
            if (m.getJMSRedelivered()) {
                redelivered++;
            }
        }
        r.expectEq(3, redelivered, "client: redelivered messages flagged JMSRedelivered");
        if (msgs.size() == 3) {
            msgs.get(1).acknowledge(); // acknowledges all three (JMS 1.1: the session's messages)
        }
        s2.close();
        r.expectEq(List.of(), drain(c, q, null, 0), "client: acknowledge() of the 2nd acked all three");
        r.put("client", again);
        r.put("client_redelivered", redelivered);
    }

    void individual(Connection c, Jms.Result r) throws Exception {
        Queue q = fill(c, "individual", 3);
        Session s = c.createSession(false, ActiveMQSession.INDIVIDUAL_ACKNOWLEDGE);
        List<Message> msgs = new ArrayList<>();
        List<String> got = take(s.createConsumer(q), 3, msgs);
        r.expectEq(List.of("individual-1", "individual-2", "individual-3"), got, "individual received");
        if (msgs.size() == 3) {
            msgs.get(1).acknowledge(); // only this one
        }
        s.close();
        List<Message> back = new ArrayList<>();
        List<String> left = drain(c, q, back, 2);
        r.expectEq(List.of("individual-1", "individual-3"), left, "individual: the unacked ones come back");
        for (Message m : back) {
            r.expect(m.getJMSRedelivered(), "individual: " + ((TextMessage) m).getText() + " flagged JMSRedelivered");
        }
        r.put("individual_left", left);
    }

    void transactedProducer(Connection c, Jms.Result r) throws Exception {
        Session s = c.createSession(true, Session.SESSION_TRANSACTED);
        Queue q = s.createQueue(Jms.unique("txp"));
        MessageProducer p = s.createProducer(q);
        p.send(s.createTextMessage("rolled-back-1"));
        p.send(s.createTextMessage("rolled-back-2"));
        s.rollback();
        p.send(s.createTextMessage("committed-1"));
        p.send(s.createTextMessage("committed-2"));
        s.commit();
        s.close();
        List<String> got = drain(c, q, null, 2);
        r.expectEq(List.of("committed-1", "committed-2"), got, "transacted producer: only the committed sends arrive");
        r.put("tx_producer", got);
    }

    void transactedConsumer(Connection c, Jms.Result r) throws Exception {
        Queue q = fill(c, "txc", 2);
        Session s = c.createSession(true, Session.SESSION_TRANSACTED);
        MessageConsumer consumer = s.createConsumer(q);
        List<Message> first = new ArrayList<>();
        r.expectEq(List.of("txc-1", "txc-2"), take(consumer, 2, first), "transacted consumer first delivery");
        s.rollback();
        List<Message> second = new ArrayList<>();
        List<String> again = take(consumer, 2, second);
        r.expectEq(List.of("txc-1", "txc-2"), again, "transacted consumer: redelivered after rollback");
        for (Message m : second) {
            String b = ((TextMessage) m).getText();
            r.expect(m.getJMSRedelivered(), "rollback: " + b + " flagged JMSRedelivered");
            r.expectEq(2, m.getIntProperty("JMSXDeliveryCount"), "rollback: " + b + " JMSXDeliveryCount");
        }
        s.commit();
        s.close();
        r.expectEq(List.of(), drain(c, q, null, 0), "transacted consumer: nothing left after commit");
        r.put("tx_consumer_redelivered", again);
    }
}
