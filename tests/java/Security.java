import java.util.ArrayList;
import java.util.List;

import javax.jms.Connection;
import javax.jms.JMSException;
import javax.jms.JMSSecurityException;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TemporaryQueue;
import javax.jms.TextMessage;

/**
 * Authentication and authorization as a JMS application meets them:
 * `Security URL USER PASSWORD WRONG_PASSWORD ALLOWED_QUEUE DENIED_QUEUE`.
 * USER may read and write ALLOWED_QUEUE and may neither write nor read
 * DENIED_QUEUE. A wrong password fails createConnection()/start() with
 * JMSSecurityException; the right one connects (the client's advisory
 * subscription included); a denied send or consumer throws
 * JMSSecurityException and the connection goes on with what the user may
 * do, temporary queues included.
 */
public class Security {
    public static void main(String[] args) {
        if (args.length != 6) {
            System.err.println("usage: Security URL USER PASSWORD WRONG_PASSWORD ALLOWED_QUEUE DENIED_QUEUE");
            System.exit(2);
        }
        Jms.printAndExit(Jms.runCheck("Security", (url, r) -> run(url, args, r), args[0]));
    }

    static void run(String url, String[] a, Jms.Result r) throws Exception {
        String user = a[1];
        String password = a[2];
        String wrong = a[3];

        // A wrong password: the client fails at createConnection() or start().
        Connection bad = null;
        try {
            bad = Jms.factory(url).createConnection(user, wrong);
            bad.start();
            r.expect(false, "a wrong password connected");
        } catch (JMSSecurityException e) {
            r.put("wrong_password", Jms.describe(e));
        } catch (JMSException e) {
            r.expect(false, "a wrong password failed with " + Jms.describe(e) + ", not JMSSecurityException");
        } finally {
            Jms.closeQuietly(bad);
        }
        // No credentials at all, once there are users.
        Connection anon = null;
        try {
            anon = Jms.factory(url).createConnection();
            anon.start();
            r.expect(false, "a connection without credentials connected");
        } catch (JMSSecurityException e) {
            r.put("anonymous", Jms.describe(e));
        } catch (JMSException e) {
            r.expect(false, "no credentials failed with " + Jms.describe(e) + ", not JMSSecurityException");
        } finally {
            Jms.closeQuietly(anon);
        }

        Connection c = Jms.factory(url).createConnection(user, password);
        try {
            c.start();
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue allowed = s.createQueue(a[4]);
            Queue denied = s.createQueue(a[5]);
            List<String> refusals = new ArrayList<>();

            // An anonymous producer: the check can only come with the send.
            MessageProducer anyDest = s.createProducer(null);
            try {
                anyDest.send(denied, s.createTextMessage("not allowed"));
                r.expect(false, "a send to " + denied + " without the write right was accepted");
            } catch (JMSSecurityException e) {
                refusals.add("send: " + Jms.describe(e));
            }
            // A producer on the destination: ActiveMQ refuses it when it is
            // created; either there or at the send is a JMSSecurityException.
            String stage = "createProducer";
            try {
                MessageProducer p = s.createProducer(denied);
                stage = "send";
                p.send(s.createTextMessage("not allowed either"));
                r.expect(false, "a producer on " + denied + " sent without the write right");
            } catch (JMSSecurityException e) {
                refusals.add("producer (at " + stage + "): " + Jms.describe(e));
            }
            try {
                s.createConsumer(denied).close();
                r.expect(false, "a consumer on " + denied + " without the read right was created");
            } catch (JMSSecurityException e) {
                refusals.add("consumer: " + Jms.describe(e));
            }
            r.put("refusals", refusals);

            // The connection and its session carry on with what the user may do.
            anyDest.send(allowed, s.createTextMessage("allowed 1"));
            MessageProducer p = s.createProducer(allowed);
            p.send(s.createTextMessage("allowed 2"));
            MessageConsumer consumer = s.createConsumer(allowed);
            List<String> got = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                Message m = consumer.receive(10000);
                if (!r.expect(m != null, "allowed message " + (i + 1) + " after the refusals")) {
                    break;
                }
                got.add(((TextMessage) m).getText());
            }
            r.expectEq(List.of("allowed 1", "allowed 2"), got, "allowed messages");
            r.expect(consumer.receive(200) == null, "only the allowed messages arrived");

            // Temporary queues need no entry ([security.temporary] unset).
            TemporaryQueue tq = s.createTemporaryQueue();
            MessageConsumer tc = s.createConsumer(tq);
            anyDest.send(tq, s.createTextMessage("to my temp queue"));
            Message tm = tc.receive(10000);
            r.expect(tm != null, "a message through a temporary queue");
        } finally {
            Jms.closeQuietly(c);
        }
    }
}
