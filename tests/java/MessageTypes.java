import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.MapMessage;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.ObjectMessage;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.StreamMessage;
import javax.jms.TextMessage;

/**
 * Every JMS message type (Text, Bytes, Map, Stream, Object, plain Message),
 * persistent and not, each with one property of every JMS property type and
 * the settable headers; what comes back must be equal, types included.
 */
public class MessageTypes implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("MessageTypes", new MessageTypes(), args);
    }

    private static final byte[] BYTES = {0, 1, 2, (byte) 0xfe, (byte) 0xff, 0x7f, (byte) 0x80};

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue q = s.createQueue(Jms.unique("types"));
            MessageProducer p = s.createProducer(q);
            MessageConsumer consumer = s.createConsumer(q);
            List<String> kinds = new ArrayList<>();
            for (int mode : new int[] {DeliveryMode.PERSISTENT, DeliveryMode.NON_PERSISTENT}) {
                for (String kind : new String[] {"text", "bytes", "map", "stream", "object", "plain"}) {
                    Message m = build(s, kind);
                    setProperties(m, kind);
                    m.setJMSType("type-" + kind);
                    m.setJMSCorrelationID("corr-" + kind);
                    p.send(m, mode, 4, 0);
                    String tag = kind + (mode == DeliveryMode.PERSISTENT ? "/persistent" : "/non-persistent");
                    Message got = consumer.receive(10000);
                    if (!r.expect(got != null, tag + ": not received")) {
                        continue;
                    }
                    kinds.add(tag);
                    r.expectEq(m.getJMSMessageID(), got.getJMSMessageID(), tag + " JMSMessageID");
                    r.expectEq(mode, got.getJMSDeliveryMode(), tag + " JMSDeliveryMode");
                    r.expectEq("type-" + kind, got.getJMSType(), tag + " JMSType");
                    r.expectEq("corr-" + kind, got.getJMSCorrelationID(), tag + " JMSCorrelationID");
                    r.expectEq(q.getQueueName(), ((Queue) got.getJMSDestination()).getQueueName(), tag + " JMSDestination");
                    r.expect(got.getJMSTimestamp() > 0, tag + " JMSTimestamp set");
                    r.expect(!got.getJMSRedelivered(), tag + " JMSRedelivered false");
                    checkProperties(r, tag, got, kind);
                    checkBody(r, tag, kind, got);
                }
            }
            r.put("received", kinds);
            r.expect(consumer.receive(200) == null, "nothing more on the queue");
        } finally {
            Jms.closeQuietly(c);
        }
    }

    static Message build(Session s, String kind) throws Exception {
        switch (kind) {
            case "text":
                return s.createTextMessage("héllo wörld ✓ \u0000 end");
            case "bytes": {
                BytesMessage m = s.createBytesMessage();
                m.writeBytes(BYTES);
                m.writeInt(-42);
                m.writeUTF("utf");
                return m;
            }
            case "map": {
                MapMessage m = s.createMapMessage();
                m.setBoolean("bool", true);
                m.setByte("byte", (byte) -7);
                m.setShort("short", (short) 1234);
                m.setChar("char", 'x');
                m.setInt("int", 123456);
                m.setLong("long", 1L << 40);
                m.setFloat("float", 1.5f);
                m.setDouble("double", -2.25);
                m.setString("string", "map ✓");
                m.setBytes("bytes", BYTES);
                return m;
            }
            case "stream": {
                StreamMessage m = s.createStreamMessage();
                m.writeBoolean(false);
                m.writeInt(7);
                m.writeLong(-9L);
                m.writeDouble(3.5);
                m.writeString("stream");
                m.writeBytes(BYTES);
                return m;
            }
            case "object":
                return s.createObjectMessage(new ArrayList<>(Arrays.asList("a", "b", "ç")));
            default:
                return s.createMessage();
        }
    }

    static void setProperties(Message m, String kind) throws Exception {
        m.setBooleanProperty("pBool", true);
        m.setByteProperty("pByte", (byte) -1);
        m.setShortProperty("pShort", (short) -300);
        m.setIntProperty("pInt", 70000);
        m.setLongProperty("pLong", 1L << 50);
        m.setFloatProperty("pFloat", 0.25f);
        m.setDoubleProperty("pDouble", 1e-3);
        m.setStringProperty("pString", "prop ✓ " + kind);
    }

    static void checkProperties(Jms.Result r, String tag, Message m, String kind) throws Exception {
        r.expectEq(Boolean.TRUE, m.getObjectProperty("pBool"), tag + " pBool");
        r.expectEq((byte) -1, m.getObjectProperty("pByte"), tag + " pByte");
        r.expectEq((short) -300, m.getObjectProperty("pShort"), tag + " pShort");
        r.expectEq(70000, m.getObjectProperty("pInt"), tag + " pInt");
        r.expectEq(1L << 50, m.getObjectProperty("pLong"), tag + " pLong");
        r.expectEq(0.25f, m.getObjectProperty("pFloat"), tag + " pFloat");
        r.expectEq(1e-3, m.getObjectProperty("pDouble"), tag + " pDouble");
        r.expectEq("prop ✓ " + kind, m.getObjectProperty("pString"), tag + " pString");
    }

    static void checkBody(Jms.Result r, String tag, String kind, Message got) throws Exception {
        switch (kind) {
            case "text":
                if (r.expect(got instanceof TextMessage, tag + " is a TextMessage")) {
                    r.expectEq("héllo wörld ✓ \u0000 end", ((TextMessage) got).getText(), tag + " text");
                }
                break;
            case "bytes":
                if (r.expect(got instanceof BytesMessage, tag + " is a BytesMessage")) {
                    BytesMessage m = (BytesMessage) got;
                    r.expectEq((long) BYTES.length + 4 + 5, m.getBodyLength(), tag + " body length");
                    byte[] b = new byte[BYTES.length];
                    m.readBytes(b);
                    r.expect(Arrays.equals(BYTES, b), tag + " bytes");
                    r.expectEq(-42, m.readInt(), tag + " int");
                    r.expectEq("utf", m.readUTF(), tag + " utf");
                }
                break;
            case "map":
                if (r.expect(got instanceof MapMessage, tag + " is a MapMessage")) {
                    MapMessage m = (MapMessage) got;
                    r.expectEq(Boolean.TRUE, m.getObject("bool"), tag + " bool");
                    r.expectEq((byte) -7, m.getObject("byte"), tag + " byte");
                    r.expectEq((short) 1234, m.getObject("short"), tag + " short");
                    r.expectEq('x', m.getObject("char"), tag + " char");
                    r.expectEq(123456, m.getObject("int"), tag + " int");
                    r.expectEq(1L << 40, m.getObject("long"), tag + " long");
                    r.expectEq(1.5f, m.getObject("float"), tag + " float");
                    r.expectEq(-2.25, m.getObject("double"), tag + " double");
                    r.expectEq("map ✓", m.getObject("string"), tag + " string");
                    r.expect(Arrays.equals(BYTES, m.getBytes("bytes")), tag + " bytes");
                }
                break;
            case "stream":
                if (r.expect(got instanceof StreamMessage, tag + " is a StreamMessage")) {
                    StreamMessage m = (StreamMessage) got;
                    r.expectEq(false, m.readBoolean(), tag + " boolean");
                    r.expectEq(7, m.readInt(), tag + " int");
                    r.expectEq(-9L, m.readLong(), tag + " long");
                    r.expectEq(3.5, m.readDouble(), tag + " double");
                    r.expectEq("stream", m.readString(), tag + " string");
                    byte[] b = new byte[BYTES.length];
                    r.expectEq(BYTES.length, m.readBytes(b), tag + " bytes length");
                    r.expect(Arrays.equals(BYTES, b), tag + " bytes");
                }
                break;
            case "object":
                if (r.expect(got instanceof ObjectMessage, tag + " is an ObjectMessage")) {
                    r.expectEq(Arrays.asList("a", "b", "ç"), ((ObjectMessage) got).getObject(), tag + " object");
                }
                break;
            default:
                r.expect(!(got instanceof TextMessage || got instanceof BytesMessage || got instanceof MapMessage
                        || got instanceof StreamMessage || got instanceof ObjectMessage), tag + " is a plain Message");
        }
    }
}
