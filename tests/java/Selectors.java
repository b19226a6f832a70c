import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import javax.jms.Connection;
import javax.jms.InvalidSelectorException;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TextMessage;
import javax.jms.Topic;

/**
 * JMS message selectors on queues (the messages a selector does not match
 * stay for other consumers) and on a topic; an invalid selector is refused
 * with InvalidSelectorException.
 */
public class Selectors implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("Selectors", new Selectors(), args);
    }

    /** selector -> the bodies (of m1..m6 below) it must select, in order. */
    static final Map<String, List<String>> CASES = new LinkedHashMap<>();

    static {
        CASES.put("color = 'red'", List.of("m1", "m3"));
        CASES.put("color = 'red' AND weight > 2", List.of("m3"));
        CASES.put("weight BETWEEN 2 AND 4", List.of("m2", "m3", "m4"));
        CASES.put("color IN ('blue', 'green')", List.of("m2", "m4"));
        CASES.put("name LIKE 'a\\_%' ESCAPE '\\'", List.of("m5"));
        CASES.put("color IS NULL", List.of("m5", "m6"));
        CASES.put("NOT (weight > 1) OR ratio < 0.5", List.of("m1", "m6"));
        CASES.put("JMSType = 'special'", List.of("m6"));
        CASES.put("JMSPriority > 6", List.of("m4"));
        CASES.put("flag = TRUE", List.of("m2"));
    }

    static void send(Session s, MessageProducer p) throws Exception {
        Object[][] rows = {
            // body, color, weight, name, ratio, flag, type, priority
            {"m1", "red", 1, "b", 0.9, false, null, 4},
            {"m2", "blue", 2, "c", 0.9, true, null, 4},
            {"m3", "red", 3, "d", 0.9, false, null, 4},
            {"m4", "green", 4, "e", 0.9, false, null, 9},
            {"m5", null, 5, "a_x", 0.9, false, null, 4},
            {"m6", null, 6, "ab", 0.1, false, "special", 4},
        };
        for (Object[] row : rows) {
            TextMessage m = s.createTextMessage((String) row[0]);
            if (row[1] != null) {
                m.setStringProperty("color", (String) row[1]);
            }
            m.setIntProperty("weight", (Integer) row[2]);
            m.setStringProperty("name", (String) row[3]);
            m.setDoubleProperty("ratio", (Double) row[4]);
            m.setBooleanProperty("flag", (Boolean) row[5]);
            if (row[6] != null) {
                m.setJMSType((String) row[6]);
            }
            p.send(m, javax.jms.DeliveryMode.PERSISTENT, (Integer) row[7], 0);
        }
    }

    /**
     * Receives the `expected` messages (waiting up to 5 s for each), then
     * whatever else arrives within 200 ms: the extras a broker should not
     * have sent.
     */
    static List<String> receiveAll(MessageConsumer c, int expected) throws Exception {
        List<String> out = new ArrayList<>();
        Message m;
        while ((m = c.receive(out.size() < expected ? 5000 : 200)) != null) {
            out.add(((TextMessage) m).getText());
        }
        return out;
    }

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Map<String, Object> results = new LinkedHashMap<>();
            for (Map.Entry<String, List<String>> e : CASES.entrySet()) {
                Queue q = s.createQueue(Jms.unique("sel"));
                send(s, s.createProducer(q));
                MessageConsumer consumer = s.createConsumer(q, e.getKey());
                List<String> got = receiveAll(consumer, e.getValue().size());
                consumer.close();
                // The priority-9 message may overtake others; compare as sets in order of body.
                got.sort(null);
                r.expectEq(e.getValue(), got, "selector [" + e.getKey() + "]");
                results.put(e.getKey(), got);
                // What the selector did not take is still there for a plain consumer.
                MessageConsumer rest = s.createConsumer(q);
                List<String> left = receiveAll(rest, 6 - e.getValue().size());
                rest.close();
                List<String> want = new ArrayList<>(List.of("m1", "m2", "m3", "m4", "m5", "m6"));
                want.removeAll(e.getValue());
                left.sort(null);
                r.expectEq(want, left, "selector [" + e.getKey() + "]: the rest stays on the queue");
            }
            r.put("queue", results);

            // A topic subscriber with a selector gets only what matches.
            Topic t = s.createTopic(Jms.unique("seltopic"));
            MessageConsumer sub = s.createConsumer(t, "weight >= 5");
            MessageConsumer all = s.createConsumer(t);
            send(s, s.createProducer(t));
            List<String> got = receiveAll(sub, 2);
            got.sort(null);
            r.expectEq(List.of("m5", "m6"), got, "topic selector");
            List<String> everything = receiveAll(all, 6);
            everything.sort(null);
            r.expectEq(List.of("m1", "m2", "m3", "m4", "m5", "m6"), everything, "topic subscriber without selector");
            r.put("topic", got);

            // Invalid selectors are refused.
            List<String> refused = new ArrayList<>();
            for (String bad : new String[] {"color = = 'red'", "weight >", "name LIKE", "(a = 1"}) {
                try {
                    s.createConsumer(s.createQueue(Jms.unique("badsel")), bad).close();
                    r.expect(false, "invalid selector [" + bad + "] was accepted");
                } catch (InvalidSelectorException ex) {
                    refused.add(bad);
                }
            }
            r.put("invalid_refused", refused);
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
