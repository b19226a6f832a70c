//! The database schema, created and migrated at start.
//!
//! Migrations are numbered and applied in order, each in a transaction that
//! also records it, all under a transaction-scoped advisory lock: two
//! brokers starting at once take turns, and the second finds nothing to do.
//! Every statement is idempotent as well, so a half-applied migration from
//! an older version (which cannot happen with the transaction, but costs
//! nothing) is completed rather than failed.

use tokio_postgres::Client;

/// The advisory lock key migrations run under ("HLYD-MIG").
const MIGRATION_LOCK: i64 = 0x484c_5944_2d4d_4947;

/// The advisory lock key the master holds for its session ("HLYD-MST"), so
/// that a waiting slave wakes the moment the master's connection drops.
/// Combined with the schema's name (`hashtextextended(current_schema(), …)`)
/// so that groups of brokers in different schemas of one database have
/// locks of their own.
pub(crate) const MASTER_LOCK: i64 = 0x484c_5944_2d4d_5354;

/// Schema version this code writes.
pub(crate) const VERSION: i32 = 6;

/// Migration `n` brings the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: messages, durable subscriptions, duplicate-detection ids, the
    // master's lease, and the fencing check every write runs first.
    r#"
    CREATE TABLE IF NOT EXISTS halyard_messages (
        seq          bigint   PRIMARY KEY,
        key_kind     smallint NOT NULL,   -- 1: queue, 2: durable subscription
        key_a        text     NOT NULL,   -- queue name, or the subscriber's client id
        key_b        text     NOT NULL,   -- '' for a queue, or the subscription name
        priority     smallint NOT NULL,
        persistent   boolean  NOT NULL,
        expires      bigint   NOT NULL,   -- ms since the epoch, 0 = never
        timestamp    bigint   NOT NULL,
        destination  text     NOT NULL,
        id_prefix    text     NOT NULL,
        id_n         bigint   NOT NULL,
        headers      jsonb    NOT NULL,   -- [[name, value], ...] (typed values since version 3)
        body         bytea    NOT NULL,
        deliveries   integer  NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS halyard_subscriptions (
        client_id text NOT NULL,
        name      text NOT NULL,
        topic     text NOT NULL,
        PRIMARY KEY (client_id, name)
    );
    CREATE TABLE IF NOT EXISTS halyard_duplicate_ids (
        queue text   NOT NULL,
        id    text   NOT NULL,
        seq   bigint NOT NULL,            -- of the message that brought it: its age
        PRIMARY KEY (queue, id)
    );
    CREATE INDEX IF NOT EXISTS halyard_duplicate_ids_age ON halyard_duplicate_ids (queue, seq);
    CREATE TABLE IF NOT EXISTS halyard_lock (
        id             integer     PRIMARY KEY CHECK (id = 1),
        epoch          bigint      NOT NULL,
        owner          text        NOT NULL,  -- JSON: name, host, pid, started_at_ms, epoch
        owner_backend  integer     NOT NULL,  -- pg_backend_pid() of the master's lock session
        postmaster     timestamptz NOT NULL,  -- pg_postmaster_start_time() when it was taken
        expires_at     timestamptz NOT NULL,  -- the lease, in database time
        max_seq        bigint      NOT NULL   -- highest message sequence number ever used
    );
    INSERT INTO halyard_lock VALUES (1, 0, '', 0, '-infinity', '-infinity', 0)
        ON CONFLICT (id) DO NOTHING;
    CREATE OR REPLACE FUNCTION halyard_fence(e bigint, s bigint) RETURNS void AS $$
    BEGIN
        UPDATE halyard_lock SET max_seq = GREATEST(max_seq, s) WHERE id = 1 AND epoch = e;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'halyard: epoch % is no longer the master''s', e
                USING ERRCODE = 'HY001';
        END IF;
    END $$ LANGUAGE plpgsql;
    "#,
    // 2: when each duplicate-detection id was learned, so that ids can be
    // forgotten by age (destinations.duplicate-window-ms).
    r#"
    ALTER TABLE halyard_duplicate_ids ADD COLUMN IF NOT EXISTS at timestamptz NOT NULL DEFAULT now();
    CREATE INDEX IF NOT EXISTS halyard_duplicate_ids_at ON halyard_duplicate_ids (at);
    "#,
    // 3: typed application properties in `headers` (see properties.rs). No
    // row changes: a version 2 row, every value a string, is a version 3
    // row as it is. The new version is what matters: a broker that knows
    // only version 2 would misread typed values, and now refuses the
    // database at start instead. The comment says what the column holds.
    //
    // Since version 6 the column is in `halyard_message_bodies` (which
    // sets the same comment there); the condition keeps this migration
    // idempotent on a database of version 6.
    r#"
    DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'halyard_messages' AND column_name = 'headers') THEN
            COMMENT ON COLUMN halyard_messages.headers IS
                'application properties: [[name, value], ...]; a value is a JSON string, or an object with one member naming its type, e.g. {"i32": 7} (docs/STORAGE.md)';
        END IF;
    END $$;
    "#,
    // 4: declared queues, which exist (and are recovered) even when empty.
    // `ord` is the declaration order: a queue declared again keeps its row
    // (and place); one dropped and declared again gets a new place. A
    // broker that knows only version 3 would neither keep nor honour the
    // declarations, and refuses the database instead.
    r#"
    CREATE TABLE IF NOT EXISTS halyard_queues (
        name text      PRIMARY KEY,         -- the queue's canonical name (/queue/NAME)
        ord  bigserial NOT NULL UNIQUE      -- declaration order
    );
    "#,
    // 5: a durable subscription's selector; a message's redelivery delay
    // (not delivered before `not_before`, ms since the epoch); scheduled
    // messages (key_kind 3), due at `sched_due` and fired `sched_fired`
    // times so far. A broker that knows only version 4 would deliver
    // delayed and scheduled messages at once, and refuses the database.
    r#"
    ALTER TABLE halyard_subscriptions ADD COLUMN IF NOT EXISTS selector text;
    ALTER TABLE halyard_messages ADD COLUMN IF NOT EXISTS not_before bigint NOT NULL DEFAULT 0;
    ALTER TABLE halyard_messages ADD COLUMN IF NOT EXISTS sched_due bigint NOT NULL DEFAULT 0;
    ALTER TABLE halyard_messages ADD COLUMN IF NOT EXISTS sched_fired integer NOT NULL DEFAULT 0;
    "#,
    // 6: `halyard_messages` keeps only what recovery reads (key, priority,
    // expiry, delivery count, schedule, and `size`: the body's and the
    // properties' bytes, once computed from them at every recovery); the
    // rest of a message — its body above all, ~90 % of the bytes — moves
    // to `halyard_message_bodies`, read when a consumer needs the message.
    // Recovery's sequential scan then reads ~100 bytes a row instead of
    // ~1.2 KB (a 1 KiB message). Existing rows are moved here, once, and
    // `halyard_messages` is rebuilt narrow rather than altered (dropped
    // columns would keep their bytes in every row until it is rewritten).
    // A broker that knows only version 5 would find no bodies, and refuses
    // the database.
    r#"
    CREATE TABLE IF NOT EXISTS halyard_message_bodies (
        seq          bigint  PRIMARY KEY,   -- halyard_messages.seq
        timestamp    bigint  NOT NULL,
        id_n         bigint  NOT NULL,
        persistent   boolean NOT NULL,
        destination  text    NOT NULL,
        id_prefix    text    NOT NULL,
        headers      jsonb   NOT NULL,      -- as halyard_messages.headers was (comment below)
        body         bytea   NOT NULL
    );
    COMMENT ON COLUMN halyard_message_bodies.headers IS
        'application properties: [[name, value], ...]; a value is a JSON string, or an object with one member naming its type, e.g. {"i32": 7} (docs/STORAGE.md)';
    DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'halyard_messages' AND column_name = 'body') THEN
            INSERT INTO halyard_message_bodies
                (seq, timestamp, id_n, persistent, destination, id_prefix, headers, body)
                SELECT seq, timestamp, id_n, persistent, destination, id_prefix, headers, body
                FROM halyard_messages ON CONFLICT (seq) DO NOTHING;
            CREATE TABLE halyard_messages_v6 (
                seq          bigint   PRIMARY KEY,
                expires      bigint   NOT NULL,   -- ms since the epoch, 0 = never
                not_before   bigint   NOT NULL DEFAULT 0,
                sched_due    bigint   NOT NULL DEFAULT 0,
                deliveries   integer  NOT NULL DEFAULT 0,
                sched_fired  integer  NOT NULL DEFAULT 0,
                size         integer  NOT NULL DEFAULT 0,
                key_kind     smallint NOT NULL,   -- 1: queue, 2: durable subscription, 3: scheduled
                priority     smallint NOT NULL,
                key_a        text     NOT NULL,   -- queue name, or the subscriber's client id
                key_b        text     NOT NULL    -- '' for a queue, or the subscription name
            );
            INSERT INTO halyard_messages_v6 (seq, expires, not_before, sched_due, deliveries,
                    sched_fired, size, key_kind, priority, key_a, key_b)
                SELECT seq, expires, not_before, sched_due, deliveries, sched_fired,
                    octet_length(body) + pg_column_size(headers), key_kind, priority, key_a, key_b
                FROM halyard_messages;
            DROP TABLE halyard_messages;
            ALTER TABLE halyard_messages_v6 RENAME TO halyard_messages;
            ALTER INDEX halyard_messages_v6_pkey RENAME TO halyard_messages_pkey;
        END IF;
    END $$;
    COMMENT ON COLUMN halyard_messages.size IS
        'bytes of the body and the application properties (halyard_message_bodies): the memory accounting''s weight, read by recovery without the bodies';
    "#,
];

/// The SQLSTATE `halyard_fence` raises when a newer master has taken over.
pub(crate) const FENCED_SQLSTATE: &str = "HY001";

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database refused.
    #[error("cannot migrate the database schema: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A newer Halyard wrote it.
    #[error(
        "the database schema is version {found}, newer than this broker understands ({VERSION}); upgrade the broker"
    )]
    Newer {
        /// The version found.
        found: i32,
    },
}

/// Brings the schema up to date. Refuses a database whose schema is newer
/// than this code knows.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), SchemaError> {
    migrate_to(client, VERSION).await
}

/// Brings the schema up to version `target` (tests make databases as
/// older releases left them this way).
pub(super) async fn migrate_to(client: &mut Client, target: i32) -> Result<(), SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS halyard_schema (version integer NOT NULL);")
        .await?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM halyard_schema", &[])
        .await?
        .get(0);
    if current > VERSION {
        return Err(SchemaError::Newer { found: current });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(current as usize)
    {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO halyard_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every migration can run again on a database it has already
    /// brought up to date (the promise the module documentation makes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_migration_is_idempotent() {
        let url = tokio::task::spawn_blocking(|| halyard_testkit::database("idempotent"))
            .await
            .unwrap();
        let mut c = super::super::connect(&url).await.unwrap();
        migrate(&mut c).await.unwrap();
        for sql in MIGRATIONS {
            c.batch_execute(sql).await.unwrap();
        }
        let comment: Option<String> = c
            .query_one(
                "SELECT col_description('halyard_message_bodies'::regclass, \
                 (SELECT attnum FROM pg_attribute WHERE attrelid = 'halyard_message_bodies'::regclass \
                  AND attname = 'headers'))",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(comment.is_some_and(|c| c.contains("{\"i32\": 7}")));
    }
}
