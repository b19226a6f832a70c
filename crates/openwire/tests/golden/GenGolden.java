// Writes OpenWire frames marshalled by ActiveMQ's own OpenWireFormat, as hex,
// for the Rust codec's golden tests (tests/golden.rs). Not run by CI; see
// README.md in this directory for how to regenerate.

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.DeflaterOutputStream;

import org.apache.activemq.command.*;
import org.apache.activemq.openwire.OpenWireFormat;
import org.apache.activemq.openwire.OpenWireFormatFactory;
import org.apache.activemq.util.ByteSequence;
import org.apache.activemq.util.MarshallingSupport;

public class GenGolden {
    static final ConnectionId CONN = new ConnectionId("ID:golden-host-40123-1700000000000-0:1");
    static final SessionId SESSION = new SessionId(CONN, 1);
    static final ProducerId PRODUCER = new ProducerId(SESSION, 1);
    static final ConsumerId CONSUMER = new ConsumerId(SESSION, 1);
    static final ActiveMQQueue QUEUE = new ActiveMQQueue("orders");
    static final ActiveMQTopic REPLIES = new ActiveMQTopic("replies");

    static List<Object[]> commands() throws Exception {
        List<Object[]> out = new ArrayList<>();

        ConnectionInfo ci = new ConnectionInfo(CONN);
        ci.setClientId("golden-client");
        ci.setUserName("user");
        ci.setPassword("secret");
        ci.setManageable(true);
        ci.setCommandId(1);
        ci.setResponseRequired(true);
        out.add(new Object[] {"connection_info", ci});

        SessionInfo si = new SessionInfo(SESSION);
        si.setCommandId(2);
        si.setResponseRequired(true);
        out.add(new Object[] {"session_info", si});

        ProducerInfo pi = new ProducerInfo(PRODUCER);
        pi.setDestination(QUEUE);
        pi.setCommandId(3);
        pi.setResponseRequired(true);
        out.add(new Object[] {"producer_info", pi});

        MessageId mid = new MessageId(PRODUCER, 1);
        ActiveMQTextMessage tm = new ActiveMQTextMessage();
        tm.setProducerId(PRODUCER);
        tm.setDestination(QUEUE);
        tm.setMessageId(mid);
        tm.setText("h\u00e9llo w\u00f6rld \u2713 \ud834\udd1e and a NUL \u0000 end");
        tm.setStringProperty("color", "blue");
        tm.setIntProperty("n", 42);
        tm.setLongProperty("big", 1L << 40);
        tm.setBooleanProperty("flag", true);
        tm.setDoubleProperty("pi", 3.25);
        tm.setByteProperty("b", (byte) -3);
        tm.setShortProperty("s", (short) 300);
        tm.setFloatProperty("f", 1.5f);
        tm.setTimestamp(1700000000000L);
        tm.setPersistent(true);
        tm.setPriority((byte) 4);
        tm.setCorrelationId("corr-1");
        tm.setJMSType("golden");
        tm.setReplyTo(REPLIES);
        tm.setCommandId(4);
        tm.setResponseRequired(true);
        out.add(new Object[] {"text_message", tm});

        ConsumerInfo coi = new ConsumerInfo(CONSUMER);
        coi.setDestination(QUEUE);
        coi.setPrefetchSize(1000);
        coi.setSelector("color = 'blue'");
        coi.setCommandId(5);
        coi.setResponseRequired(true);
        out.add(new Object[] {"consumer_info", coi});

        MessageDispatch md = new MessageDispatch();
        md.setConsumerId(CONSUMER);
        md.setDestination(QUEUE);
        md.setMessage(tm);
        md.setRedeliveryCounter(2);
        out.add(new Object[] {"message_dispatch", md});

        MessageAck ack = new MessageAck();
        ack.setDestination(QUEUE);
        ack.setConsumerId(CONSUMER);
        ack.setAckType(MessageAck.STANDARD_ACK_TYPE);
        ack.setFirstMessageId(mid);
        ack.setLastMessageId(mid);
        ack.setMessageCount(1);
        ack.setTransactionId(new LocalTransactionId(CONN, 7));
        ack.setCommandId(6);
        out.add(new Object[] {"message_ack", ack});

        IllegalStateException inner = new IllegalStateException("inner");
        inner.setStackTrace(new StackTraceElement[0]);
        IOException boom = new IOException("boom \u2713", inner);
        boom.setStackTrace(new StackTraceElement[] {
            new StackTraceElement("org.example.Broker", "send", "Broker.java", 42),
            new StackTraceElement("org.example.Main", "main", null, -1),
        });
        ExceptionResponse er = new ExceptionResponse(boom);
        er.setCorrelationId(6);
        er.setCommandId(7);
        out.add(new Object[] {"exception_response", er});

        RemoveInfo ri = new RemoveInfo(CONSUMER);
        ri.setLastDeliveredSequenceId(5);
        ri.setCommandId(8);
        ri.setResponseRequired(true);
        out.add(new Object[] {"remove_info", ri});

        // A compressed text body, deflated as the Java client does.
        ByteArrayOutputStream raw = new ByteArrayOutputStream();
        DataOutputStream dos = new DataOutputStream(new DeflaterOutputStream(raw));
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 50; i++) sb.append("compressed text ");
        MarshallingSupport.writeUTF8(dos, sb.toString());
        dos.close();
        ActiveMQTextMessage ctm = new ActiveMQTextMessage();
        ctm.setProducerId(PRODUCER);
        ctm.setDestination(QUEUE);
        ctm.setMessageId(new MessageId(PRODUCER, 2));
        ctm.setContent(new ByteSequence(raw.toByteArray()));
        ctm.setCompressed(true);
        ctm.setCommandId(9);
        out.add(new Object[] {"compressed_text_message", ctm});

        ActiveMQMapMessage mm = new ActiveMQMapMessage();
        mm.setProducerId(PRODUCER);
        mm.setDestination(new ActiveMQTopic("prices"));
        mm.setMessageId(new MessageId(PRODUCER, 3));
        mm.setString("a", "x");
        mm.setInt("b", 1);
        mm.setCommandId(10);
        out.add(new Object[] {"map_message", mm});

        ActiveMQBytesMessage bm = new ActiveMQBytesMessage();
        bm.setProducerId(PRODUCER);
        bm.setDestination(new ActiveMQTempQueue(CONN, 1));
        bm.setMessageId(new MessageId(PRODUCER, 4));
        bm.setContent(new ByteSequence(new byte[] {0, 1, 2, (byte) 0xff}));
        bm.setExpiration(-1L);
        bm.setCommandId(11);
        out.add(new Object[] {"bytes_message", bm});

        Response resp = new Response();
        resp.setCorrelationId(1);
        out.add(new Object[] {"response", resp});

        out.add(new Object[] {"keep_alive", new KeepAliveInfo()});
        out.add(new Object[] {"shutdown", new ShutdownInfo()});
        return out;
    }

    static String hex(ByteSequence b) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < b.length; i++) sb.append(String.format("%02x", b.data[b.offset + i] & 0xff));
        return sb.toString();
    }

    public static void main(String[] args) throws Exception {
        String dir = args.length > 0 ? args[0] : ".";
        for (boolean tight : new boolean[] {false, true}) {
            for (boolean cache : new boolean[] {false, true}) {
                OpenWireFormat wf = new OpenWireFormat(12);
                wf.setTightEncodingEnabled(tight);
                wf.setCacheEnabled(cache);
                wf.setStackTraceEnabled(true);
                String name = (tight ? "tight" : "loose") + "-" + (cache ? "cache" : "nocache") + ".hex";
                try (PrintWriter w = new PrintWriter(Files.newBufferedWriter(Paths.get(dir, name)))) {
                    for (Object[] c : commands()) {
                        w.println(c[0] + " " + hex(wf.marshal(c[1])));
                    }
                }
            }
        }
        // The WireFormatInfo a default client sends first, in the initial format.
        OpenWireFormatFactory f = new OpenWireFormatFactory();
        f.setPlatformDetails("golden");
        f.setProviderVersion("5.x");
        OpenWireFormat initial = (OpenWireFormat) f.createWireFormat();
        WireFormatInfo info = initial.getPreferedWireFormatInfo();
        try (PrintWriter w = new PrintWriter(Files.newBufferedWriter(Paths.get(dir, "wireformat.hex")))) {
            w.println("wire_format_info " + hex(initial.marshal(info)));
        }
    }
}
