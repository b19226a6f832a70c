import java.util.ArrayList;
import java.util.Enumeration;
import java.util.List;

import javax.jms.Connection;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.QueueBrowser;
import javax.jms.Session;
import javax.jms.TextMessage;

/**
 * QueueBrowser: sees every message in order without consuming it (twice,
 * then a consumer still gets them all); a browser with a selector sees only
 * the matching ones; an empty queue browses empty.
 */
public class Browser implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("Browser", new Browser(), args);
    }

    static List<String> browse(Session s, Queue q, String selector) throws Exception {
        QueueBrowser b = selector == null ? s.createBrowser(q) : s.createBrowser(q, selector);
        List<String> out = new ArrayList<>();
        Enumeration<?> e = b.getEnumeration();
        while (e.hasMoreElements()) {
            out.add(((TextMessage) e.nextElement()).getText());
        }
        b.close();
        return out;
    }

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection c = Jms.connect(url);
        try {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue q = s.createQueue(Jms.unique("browse"));
            MessageProducer p = s.createProducer(q);
            List<String> sent = new ArrayList<>();
            for (int i = 1; i <= 5; i++) {
                TextMessage m = s.createTextMessage("b" + i);
                m.setIntProperty("i", i);
                p.send(m);
                sent.add("b" + i);
            }
            List<String> first = browse(s, q, null);
            r.expectEq(sent, first, "first browse");
            r.expectEq(sent, browse(s, q, null), "second browse (nothing consumed)");
            List<String> even = browse(s, q, "i = 2 OR i = 4");
            r.expectEq(List.of("b2", "b4"), even, "browse with a selector");
            r.put("browsed", first);
            r.put("browsed_selector", even);
            MessageConsumer consumer = s.createConsumer(q);
            List<String> consumed = new ArrayList<>();
            long wait = 10000;
            Message m;
            while ((m = consumer.receive(wait)) != null) {
                consumed.add(((TextMessage) m).getText());
                wait = 500;
            }
            consumer.close();
            r.expectEq(sent, consumed, "consumed after browsing");
            r.expectEq(List.of(), browse(s, q, null), "browse of the drained queue");
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
