import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Runs several checks in one JVM (JVM start-up costs a second or two of
 * CPU each time): `RunChecks BROKER_URL [CHECK...]`, every check by default.
 * Prints one JSON line per check, as the check's own main() would; a check
 * that does not finish within its time limit is reported as failed and the
 * others still run. Exit status 1 if any check failed.
 */
public class RunChecks {
    static final List<String> ALL = Arrays.asList(
            "MessageTypes", "AckModes", "Selectors", "DurableSubscribers", "RequestReply",
            "Browser", "MessageGroups", "PriorityExpiry", "ScheduledDelivery", "ProducerFlowControl");

    static final long LIMIT_SECONDS = Long.getLong("halyard.check.timeout", 60);

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: RunChecks BROKER_URL [CHECK...]   checks: " + ALL);
            System.exit(2);
        }
        String url = args[0];
        List<String> names = args.length > 1 ? Arrays.asList(args).subList(1, args.length) : ALL;
        boolean allOk = true;
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r);
            t.setDaemon(true); // a hung check must not keep the JVM alive
            return t;
        });
        for (String name : names) {
            Map<String, Object> out;
            Jms.Check check;
            try {
                check = (Jms.Check) Class.forName(name).getDeclaredConstructor().newInstance();
            } catch (ReflectiveOperationException | ClassCastException e) {
                System.err.println("unknown check " + name + "; checks: " + ALL);
                System.exit(2);
                return;
            }
            Future<Map<String, Object>> f = pool.submit(() -> Jms.runCheck(name, check, url));
            try {
                out = f.get(LIMIT_SECONDS, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                f.cancel(true);
                out = new LinkedHashMap<>();
                out.put("check", name);
                out.put("ok", false);
                out.put("errors", new ArrayList<>(List.of("did not finish within " + LIMIT_SECONDS + " s")));
            }
            allOk &= Boolean.TRUE.equals(out.get("ok"));
            System.out.println(Jms.json(out));
            System.out.flush();
        }
        System.exit(allOk ? 0 : 1);
    }
}
