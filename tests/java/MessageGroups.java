import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import javax.jms.Connection;
import javax.jms.JMSException;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TextMessage;

import org.apache.activemq.ActiveMQConnectionFactory;

/**
 * Message groups: messages with the same JMSXGroupID all go to one
 * consumer, in order, while two consumers compete for the queue (prefetch 1,
 * so the broker chooses per message, not per batch).
 */
public class MessageGroups implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("MessageGroups", new MessageGroups(), args);
    }

    static final String[] GROUPS = {"A", "B", "C", "D"};
    static final int PER_GROUP = 10;

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        ActiveMQConnectionFactory f = Jms.factory(url);
        f.getPrefetchPolicy().setQueuePrefetch(1);
        Connection c = f.createConnection();
        c.start();
        try {
            String name = Jms.unique("groups");
            int total = GROUPS.length * PER_GROUP;
            CountDownLatch all = new CountDownLatch(total);
            // group -> consumer -> bodies, filled by the listeners
            Map<String, Map<String, List<String>>> seen = new TreeMap<>();
            List<MessageConsumer> consumers = new ArrayList<>();
            for (String who : new String[] {"c1", "c2"}) {
                Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
                MessageConsumer mc = s.createConsumer(s.createQueue(name));
                mc.setMessageListener(m -> {
                    try {
                        synchronized (seen) {
                            seen.computeIfAbsent(m.getStringProperty("JMSXGroupID"), g -> new TreeMap<>())
                                    .computeIfAbsent(who, w -> new ArrayList<>())
                                    .add(((TextMessage) m).getText());
                        }
                    } catch (JMSException e) {
                        System.err.println("listener: " + e);
                    }
                    all.countDown();
                });
                consumers.add(mc);
            }
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue q = s.createQueue(name);
            MessageProducer p = s.createProducer(q);
            for (int i = 0; i < PER_GROUP; i++) {
                for (String g : GROUPS) {
                    TextMessage m = s.createTextMessage(g + i);
                    m.setStringProperty("JMSXGroupID", g);
                    p.send(m);
                }
            }
            r.expect(all.await(20, TimeUnit.SECONDS), "all " + total + " group messages delivered; left " + all.getCount());
            Map<String, Object> owners = new LinkedHashMap<>();
            synchronized (seen) {
                for (String g : GROUPS) {
                    Map<String, List<String>> byConsumer = seen.getOrDefault(g, Map.of());
                    r.expectEq(1, byConsumer.size(), "group " + g + " delivered to exactly one consumer " + byConsumer.keySet());
                    List<String> want = new ArrayList<>();
                    for (int i = 0; i < PER_GROUP; i++) {
                        want.add(g + i);
                    }
                    for (List<String> got : byConsumer.values()) {
                        r.expectEq(want, got, "group " + g + " in order");
                    }
                    owners.put(g, new ArrayList<>(byConsumer.keySet()));
                }
            }
            r.put("owners", owners);
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
