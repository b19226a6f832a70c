import java.util.ArrayList;
import java.util.List;

import javax.jms.Connection;
import javax.jms.Destination;
import javax.jms.JMSException;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Queue;
import javax.jms.Session;
import javax.jms.TemporaryQueue;
import javax.jms.TemporaryTopic;
import javax.jms.TextMessage;

/**
 * Request/reply over a temporary queue (and a temporary topic): a responder
 * on its own connection answers each request to its JMSReplyTo with the
 * request's JMSMessageID as JMSCorrelationID. A temporary queue is usable
 * only by its own connection's consumers, and is gone once deleted.
 */
public class RequestReply implements Jms.Check {
    public static void main(String[] args) {
        Jms.main1("RequestReply", new RequestReply(), args);
    }

    @Override
    public void run(String url, Jms.Result r) throws Exception {
        Connection server = Jms.connect(url);
        Connection client = Jms.connect(url);
        try {
            Session ss = server.createSession(false, Session.AUTO_ACKNOWLEDGE);
            Queue requests = ss.createQueue(Jms.unique("requests"));
            MessageConsumer serverConsumer = ss.createConsumer(requests);
            MessageProducer replier = ss.createProducer(null);
            serverConsumer.setMessageListener(m -> {
                try {
                    TextMessage reply = ss.createTextMessage("re: " + ((TextMessage) m).getText());
                    reply.setJMSCorrelationID(m.getJMSMessageID());
                    replier.send(m.getJMSReplyTo(), reply);
                } catch (JMSException e) {
                    System.err.println("responder: " + e);
                }
            });

            Session cs = client.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageProducer p = cs.createProducer(requests);
            List<String> replies = new ArrayList<>();
            TemporaryQueue tq = cs.createTemporaryQueue();
            TemporaryTopic tt = cs.createTemporaryTopic();
            for (Destination replyTo : new Destination[] {tq, tt}) {
                MessageConsumer replies_ = cs.createConsumer(replyTo);
                for (int i = 1; i <= 3; i++) {
                    TextMessage req = cs.createTextMessage("q" + i);
                    req.setJMSReplyTo(replyTo);
                    p.send(req);
                    Message reply = replies_.receive(10000);
                    if (!r.expect(reply != null, "reply to q" + i + " via " + replyTo)) {
                        continue;
                    }
                    r.expectEq("re: q" + i, ((TextMessage) reply).getText(), "reply body");
                    r.expectEq(req.getJMSMessageID(), reply.getJMSCorrelationID(), "reply JMSCorrelationID");
                    replies.add(((TextMessage) reply).getText());
                }
                replies_.close();
            }
            r.put("replies", replies);

            // Another connection may not consume from our temporary queue.
            try {
                Session other = server.createSession(false, Session.AUTO_ACKNOWLEDGE);
                other.createConsumer(tq).close();
                r.expect(false, "another connection consumed from a temporary queue");
            } catch (JMSException e) {
                r.put("foreign_temp_consumer", e.getClass().getSimpleName());
            }
            tq.delete();
            tt.delete();
            // Sending to a deleted temporary queue fails.
            try {
                MessageProducer gone = cs.createProducer(tq);
                gone.send(cs.createTextMessage("to a deleted temp queue"));
                r.expect(false, "a send to a deleted temporary queue was accepted");
            } catch (JMSException e) {
                r.put("send_to_deleted_temp", e.getClass().getSimpleName());
            }
        } finally {
            Jms.closeQuietly(client);
            Jms.closeQuietly(server);
        }
    }
}
