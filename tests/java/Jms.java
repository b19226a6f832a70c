import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import javax.jms.Connection;
import javax.jms.JMSException;

import org.apache.activemq.ActiveMQConnectionFactory;

/**
 * Shared helpers for the JMS test programs (tests/java/README.md).
 *
 * Every program is a {@link Check}: it takes a broker URL, does its JMS work
 * with the real ActiveMQ 5.17 client and returns a map of results, printed as
 * ONE JSON line so that the pytest harness (tests/python/test_openwire_jms.py)
 * can assert on it. A check records what it found wrong in "errors" instead
 * of stopping at the first surprise, so one run reports everything; "ok" is
 * true only when that list is empty. The process exits 1 when a check fails,
 * 2 on bad usage.
 */
public final class Jms {
    private Jms() {}

    /** One test program: runs against a broker URL and reports results. */
    public interface Check {
        void run(String url, Result r) throws Exception;
    }

    /** What a check reports: named values plus a list of failed expectations. */
    public static final class Result {
        final Map<String, Object> values = new LinkedHashMap<>();
        final List<String> errors = new ArrayList<>();

        public void put(String key, Object value) {
            values.put(key, value);
        }

        /** Records a failed expectation unless cond holds; returns cond. */
        public boolean expect(boolean cond, String what) {
            if (!cond) {
                errors.add(what);
            }
            return cond;
        }

        public boolean expectEq(Object want, Object got, String what) {
            boolean same = want == null ? got == null : want.equals(got);
            return expect(same, what + ": want " + want + ", got " + got);
        }

        public boolean ok() {
            return errors.isEmpty();
        }
    }

    /**
     * The connection factory every program uses. Object messages of our
     * own (java.util) classes are allowed; everything else is the client's
     * default, as an unmodified JMS application would have it.
     */
    public static ActiveMQConnectionFactory factory(String url) {
        ActiveMQConnectionFactory f = new ActiveMQConnectionFactory(url);
        f.setTrustedPackages(new ArrayList<>(Arrays.asList("java.lang", "java.util")));
        return f;
    }

    public static Connection connect(String url) throws JMSException {
        Connection c = factory(url).createConnection();
        c.start();
        return c;
    }

    public static Connection connect(String url, String clientId) throws JMSException {
        Connection c = factory(url).createConnection();
        c.setClientID(clientId);
        c.start();
        return c;
    }

    /** A destination name no earlier run on the same broker used. */
    public static String unique(String prefix) {
        return "jms." + prefix + "." + UUID.randomUUID().toString().substring(0, 8);
    }

    public static void closeQuietly(Connection c) {
        if (c != null) {
            try {
                c.close();
            } catch (Exception ignored) {
                // the check's outcome is already recorded
            }
        }
    }

    /** Runs one check and prints its JSON line; the exit status is the verdict. */
    public static Map<String, Object> runCheck(String name, Check check, String url) {
        Result r = new Result();
        long t0 = System.nanoTime();
        try {
            check.run(url, r);
        } catch (Throwable e) {
            r.errors.add("exception: " + describe(e));
            StringWriter sw = new StringWriter();
            e.printStackTrace(new PrintWriter(sw));
            r.put("stack", sw.toString());
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("check", name);
        out.put("ok", r.ok());
        out.put("errors", r.errors);
        out.put("millis", (System.nanoTime() - t0) / 1_000_000);
        out.putAll(r.values);
        return out;
    }

    public static String describe(Throwable e) {
        return e.getClass().getName() + ": " + e.getMessage();
    }

    /** main() of a single-check program: `java -cp ... Name BROKER_URL`. */
    public static void main1(String name, Check check, String[] args) {
        if (args.length != 1) {
            System.err.println("usage: " + name + " BROKER_URL");
            System.exit(2);
        }
        printAndExit(runCheck(name, check, args[0]));
    }

    /** Prints a check's JSON line and exits with its verdict. */
    public static void printAndExit(Map<String, Object> out) {
        System.out.println(json(out));
        System.out.flush();
        System.exit(Boolean.TRUE.equals(out.get("ok")) ? 0 : 1);
    }

    // ---------------------------------------------------------------- JSON

    public static String json(Object v) {
        StringBuilder sb = new StringBuilder();
        write(sb, v);
        return sb.toString();
    }

    private static void write(StringBuilder sb, Object v) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long
                || v instanceof Short || v instanceof Byte) {
            sb.append(v);
        } else if (v instanceof Float || v instanceof Double) {
            double d = ((Number) v).doubleValue();
            sb.append(Double.isFinite(d) ? Double.toString(d) : "null");
        } else if (v instanceof Map) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                writeString(sb, String.valueOf(e.getKey()));
                sb.append(':');
                write(sb, e.getValue());
            }
            sb.append('}');
        } else if (v instanceof Collection) {
            sb.append('[');
            boolean first = true;
            for (Object x : (Collection<?>) v) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                write(sb, x);
            }
            sb.append(']');
        } else {
            writeString(sb, v.toString());
        }
    }

    private static void writeString(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        sb.append('"');
    }
}
