import java.util.ArrayList;
import java.util.List;

import javax.jms.Connection;
import javax.jms.JMSException;
import javax.jms.Message;
import javax.jms.MessageProducer;
import javax.jms.Session;
import javax.jms.TextMessage;
import javax.jms.Topic;
import javax.jms.TopicSubscriber;

/**
 * Durable topic subscriptions (client id + subscription name): messages
 * published while the subscriber is offline are delivered when it comes
 * back; a second connection with the same client id is refused; a durable
 * subscriber with a selector keeps only what matches; unsubscribe() while
 * active is refused, afterwards it removes the subscription (what is
 * published next is not kept for it).
 */
public class DurableSubscribers implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("DurableSubscribers", new DurableSubscribers(), args);
    }

    /** The `expected` messages (up to 10 s each), then any extras within 200 ms. */
    static List<String> receiveAll(TopicSubscriber sub, int expected) throws Exception {
        List<String> out = new ArrayList<>();
        Message m;
        while ((m = sub.receive(out.size() < expected ? 10000 : 200)) != null) {
            out.add(((TextMessage) m).getText());
        }
        return out;
    }

    static void publish(String url, Topic t, String... bodies) throws Exception {
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageProducer p = s.createProducer(s.createTopic(t.getTopicName()));
            for (String b : bodies) {
                TextMessage m = s.createTextMessage(b);
                m.setIntProperty("n", Integer.parseInt(b.substring(b.length() - 1)));
                p.send(m); // persistent by default
            }
        } finally {
            Jms.closeQuietly(c);
        }
    }

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        String clientId = Jms.unique("client");
        String topicName = Jms.unique("durable");
        Connection c = Jms.connect(url, clientId);
        Topic t;
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            t = s.createTopic(topicName);
            TopicSubscriber sub = s.createDurableSubscriber(t, "sub1");
            TopicSubscriber odd = s.createDurableSubscriber(t, "odd", "n = 1 OR n = 3", false);
            publish(url, t, "online-1");
            r.expectEq(List.of("online-1"), receiveAll(sub, 1), "online delivery");
            r.expectEq(List.of("online-1"), receiveAll(odd, 1), "online delivery (selector)");
            sub.close();
            odd.close();

            // Same client id twice at once: refused (InvalidClientIDException).
            try {
                Connection dup = Jms.connect(url, clientId);
                Jms.closeQuietly(dup);
                r.expect(false, "a second connection with the same client id was accepted");
            } catch (JMSException e) {
                r.put("duplicate_client_id", e.getClass().getSimpleName());
            }
        } finally {
            Jms.closeQuietly(c);
        }

        publish(url, t, "offline-1", "offline-2", "offline-3");

        c = Jms.connect(url, clientId);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            TopicSubscriber sub = s.createDurableSubscriber(t, "sub1");
            List<String> offline = receiveAll(sub, 3);
            r.expectEq(List.of("offline-1", "offline-2", "offline-3"), offline, "offline messages after reconnect");
            r.put("offline_received", offline);
            TopicSubscriber odd = s.createDurableSubscriber(t, "odd", "n = 1 OR n = 3", false);
            List<String> oddGot = receiveAll(odd, 2);
            r.expectEq(List.of("offline-1", "offline-3"), oddGot, "offline messages after reconnect (selector)");
            try {
                s.unsubscribe("sub1");
                r.expect(false, "unsubscribe of an active durable subscription was accepted");
            } catch (JMSException e) {
                r.put("unsubscribe_active", e.getClass().getSimpleName());
            }
            sub.close();
            odd.close();
            s.unsubscribe("sub1");
            s.unsubscribe("odd");
            try {
                s.unsubscribe("never-existed");
                r.expect(false, "unsubscribe of an unknown subscription was accepted");
            } catch (JMSException e) {
                r.put("unsubscribe_unknown", e.getClass().getSimpleName());
            }
        } finally {
            Jms.closeQuietly(c);
        }

        publish(url, t, "after-unsubscribe-1");

        c = Jms.connect(url, clientId);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            TopicSubscriber sub = s.createDurableSubscriber(t, "sub1"); // a new, empty subscription
            r.expectEq(List.of(), receiveAll(sub, 0), "nothing kept for an unsubscribed subscription");
            sub.close();
            s.unsubscribe("sub1");
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
