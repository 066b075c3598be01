package org.ksymgraph.neo4j;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.QueryExecutionException;

/**
 * Neo4j Community, embedded, serving Bolt on 127.0.0.1 only: a real Neo4j server for ksymgraph on
 * machines without Docker (ksymgraph.graph.neo4j_server builds and runs it).
 *
 * <p>Everything comes from the environment:
 * <ul>
 *   <li>{@code KSYMGRAPH_NEO4J_HOME} (required): the server's home; databases go to {@code data/},
 *       logs to {@code logs/}. {@code conf/neo4j.conf} there, if present, is read first (memory
 *       settings; {@code neo4j-admin} run with {@code NEO4J_HOME} set to the same directory reads it
 *       too and finds the same databases).</li>
 *   <li>{@code KSYMGRAPH_NEO4J_PORT}: the Bolt port (default 7687).</li>
 *   <li>{@code NEO4J_PASSWORD} (required, 8 characters or more): the password of user {@code neo4j},
 *       set at every start.</li>
 * </ul>
 * HTTP and HTTPS are off. The listen address is fixed to 127.0.0.1 whatever the configuration file
 * says. SIGTERM (or Ctrl-C) runs the shutdown hook, which stops the databases cleanly: running
 * transactions are rolled back and the store is left consistent.
 *
 * <p>It prints one line {@code ksymgraph-neo4j ready bolt://127.0.0.1:PORT VERSION} on standard
 * output once the default database is available and the password is set, and
 * {@code ksymgraph-neo4j stopped} after a clean stop. A configuration it cannot use exits with status 2
 * and one line on standard error saying what to set.
 */
public final class KsymgraphNeo4j {
    private KsymgraphNeo4j() {}

    public static void main(String[] args) {
        try {
            run();
        } catch (Throwable e) {
            // Anything that stops the start: say it, and exit (the shutdown hook stops what runs).
            e.printStackTrace();
            System.err.println("ksymgraph-neo4j: failed to start: " + e);
            System.exit(1);
        }
    }

    private static void run() throws Exception {
        String home = System.getenv("KSYMGRAPH_NEO4J_HOME");
        String password = System.getenv("NEO4J_PASSWORD");
        String portText = System.getenv().getOrDefault("KSYMGRAPH_NEO4J_PORT", "7687");
        if (home == null || home.isEmpty()) {
            fail("KSYMGRAPH_NEO4J_HOME is not set: give the server's home directory (data, logs, conf/neo4j.conf)");
        }
        if (password == null || password.length() < 8) {
            fail("NEO4J_PASSWORD is not set or shorter than 8 characters: Neo4j needs a password of 8 or more");
        }
        int port = 0;
        try {
            port = Integer.parseInt(portText);
        } catch (NumberFormatException e) {
            fail("KSYMGRAPH_NEO4J_PORT=" + portText + " is not a port number");
        }
        if (port < 1 || port > 65535) {
            fail("KSYMGRAPH_NEO4J_PORT=" + portText + " is not a port number (1-65535)");
        }

        Path homeDir = Path.of(home).toAbsolutePath();
        Files.createDirectories(homeDir);
        DatabaseManagementServiceBuilder builder = new DatabaseManagementServiceBuilder(homeDir);
        Path conf = homeDir.resolve("conf").resolve("neo4j.conf");
        if (Files.isRegularFile(conf)) {
            builder.loadPropertiesFromFile(conf);
        }
        DatabaseManagementService dbms = builder
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                dbms.shutdown();
                System.out.println("ksymgraph-neo4j stopped");
                System.out.flush();
            } finally {
                stopped.countDown();
            }
        }, "ksymgraph-neo4j-shutdown"));

        // The password is set through the system database, as `ALTER USER` from cypher-shell would.
        GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        try {
            system.executeTransactionally("ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        } catch (QueryExecutionException e) {
            // A restart with the same password: Neo4j refuses to "change" it to itself, and it is already set.
            if (e.getMessage() == null || !e.getMessage().contains("Old password and new password cannot be the same")) {
                throw e;
            }
        }
        GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        if (!db.isAvailable(Duration.ofMinutes(5).toMillis())) {
            System.err.println("ksymgraph-neo4j: database " + db.databaseName() + " did not become available in 5 minutes; "
                    + "see " + homeDir.resolve("logs").resolve("debug.log"));
            System.exit(1);
        }
        String version = org.neo4j.kernel.internal.Version.getNeo4jVersion();
        System.out.println("ksymgraph-neo4j ready bolt://127.0.0.1:" + port + " " + version);
        System.out.flush();
        stopped.await();
    }

    private static void fail(String message) {
        System.err.println("ksymgraph-neo4j: " + message);
        System.exit(2);
    }
}
