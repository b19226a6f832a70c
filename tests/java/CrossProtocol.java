import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.Destination;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Session;
import javax.jms.TextMessage;

/**
 * The JMS half of the STOMP/JMS interop test (test_openwire_jms.py):
 * `CrossProtocol URL IN_QUEUE COUNT OUT_QUEUE REPLY_TO_QUEUE`.
 *
 * Receives COUNT messages a STOMP client sent to IN_QUEUE and reports each
 * as JMS sees it (message class, body, every property with its Java type,
 * the JMS header fields), so that the Python side asserts the mapping; it
 * answers every message that has a JMSReplyTo there (a STOMP
 * `/temp-queue/` reply-to included). Then it sends to OUT_QUEUE, for a
 * STOMP subscriber, a TextMessage with typed properties, JMSCorrelationID,
 * JMSReplyTo (queue REPLY_TO_QUEUE) and JMSType, and a BytesMessage.
 */
public class CrossProtocol {
    public static void main(String[] args) {
        if (args.length != 5) {
            System.err.println("usage: CrossProtocol URL IN_QUEUE COUNT OUT_QUEUE REPLY_TO_QUEUE");
            System.exit(2);
        }
        Jms.printAndExit(Jms.runCheck("CrossProtocol", (url, r) -> run(url, args, r), args[0]));
    }

    static void run(String url, String[] args, Jms.Result r) throws Exception {
        int count = Integer.parseInt(args[2]);
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageConsumer in = s.createConsumer(s.createQueue(args[1]));
            MessageProducer replier = s.createProducer(null);
            List<Map<String, Object>> received = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                Message m = in.receive(10000);
                if (!r.expect(m != null, "message " + (i + 1) + " of " + count + " from STOMP")) {
                    break;
                }
                received.add(describe(m));
                Destination replyTo = m.getJMSReplyTo();
                if (replyTo != null) {
                    TextMessage reply = s.createTextMessage("reply from JMS");
                    reply.setJMSCorrelationID(m.getJMSCorrelationID());
                    replier.send(replyTo, reply);
                }
            }
            r.put("received", received);

            MessageProducer p = s.createProducer(s.createQueue(args[3]));
            TextMessage t = s.createTextMessage("text from JMS");
            t.setIntProperty("i", 5);
            t.setLongProperty("l", 1234567890123L);
            t.setBooleanProperty("b", true);
            t.setDoubleProperty("d", 1.5);
            t.setStringProperty("s", "a string");
            t.setJMSCorrelationID("jms-corr-1");
            t.setJMSReplyTo(s.createQueue(args[4]));
            t.setJMSType("jms-type-1");
            p.send(t);
            BytesMessage b = s.createBytesMessage();
            b.writeBytes(new byte[] {0, 1, 2, 'a', (byte) 0xff});
            b.setStringProperty("kind", "bytes");
            p.send(b);
            r.put("sent", Collections.singletonList(t.getJMSMessageID()));
        } finally {
            Jms.closeQuietly(c);
        }
    }

    /** A message as JMS sees it, for the Python side to assert on. */
    static Map<String, Object> describe(Message m) throws Exception {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("class", m instanceof TextMessage ? "TextMessage"
                : m instanceof BytesMessage ? "BytesMessage" : m.getClass().getSimpleName());
        if (m instanceof TextMessage) {
            d.put("text", ((TextMessage) m).getText());
        } else if (m instanceof BytesMessage) {
            BytesMessage b = (BytesMessage) m;
            byte[] bytes = new byte[(int) b.getBodyLength()];
            b.readBytes(bytes);
            StringBuilder hex = new StringBuilder();
            for (byte x : bytes) {
                hex.append(String.format("%02x", x & 0xff));
            }
            d.put("hex", hex.toString());
        }
        Map<String, Object> props = new LinkedHashMap<>();
        for (java.util.Enumeration<?> e = m.getPropertyNames(); e.hasMoreElements();) {
            String n = (String) e.nextElement();
            Object v = m.getObjectProperty(n);
            props.put(n, v == null ? null : v.getClass().getSimpleName() + ":" + v);
        }
        d.put("properties", props);
        d.put("JMSCorrelationID", m.getJMSCorrelationID());
        d.put("JMSReplyTo", m.getJMSReplyTo() == null ? null : m.getJMSReplyTo().toString());
        d.put("JMSType", m.getJMSType());
        d.put("JMSPriority", m.getJMSPriority());
        d.put("JMSDeliveryMode", m.getJMSDeliveryMode());
        d.put("JMSExpiration", m.getJMSExpiration());
        d.put("JMSMessageID", m.getJMSMessageID());
        return d;
    }
}
