//! The audit log's search index: written behind the log, on SQLite in a file of its own, and
//! always the index of the log it sits beside.

use super::*;

both_backends!(the_background_indexer_covers_the_log_without_a_search, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    // Several indexing transactions' worth, all appended before the indexer's first round.
    for i in 0..700 {
        let read = rec(Some(a), "read")
            .entity("patient", "p-bg")
            .entity("conversation", "c-bg")
            .entity("message", format!("m-{i}"))
            .entity("session", "s-bg");
        s.record_audit(&read, t(i)).await.unwrap();
    }
    let mut c = raw(&db).await;
    let lag = "SELECT (SELECT size FROM audit_head) - (SELECT indexed_seq FROM audit_index_head) AS n";
    let rows = "SELECT COUNT(*) AS n FROM audit_index WHERE kind = 'patient' AND ref_id = 'p-bg'";
    // Only the kinds searched by are kept: nothing searches by message or session.
    let unsearched = "SELECT COUNT(*) AS n FROM audit_index WHERE kind IN ('message', 'session')";
    let conversation =
        "SELECT COUNT(*) AS n FROM audit_index WHERE kind = 'conversation' AND ref_id = 'c-bg'";
    let count = async |c: &mut sqlx::AnyConnection, sql: &'static str| -> i64 {
        let row = sqlx::query(sql).fetch_one(&mut *c).await.unwrap();
        sqlx::Row::get(&row, "n")
    };
    // One round takes everything the log held when it began, in as many transactions as that
    // needs; no search is made here to help it along.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(&mut c, lag).await > 0 {
        assert!(std::time::Instant::now() < deadline, "the background indexer fell behind");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count(&mut c, rows).await, 700);
    assert_eq!(count(&mut c, conversation).await, 700);
    assert_eq!(count(&mut c, unsearched).await, 0);
});

both_backends!(the_audit_search_index_follows_the_log_and_misses_nothing, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    // More entries than one indexing round takes, alternating between two patients.
    for i in 0..1205 {
        let who = if i % 2 == 0 { "p-even" } else { "p-odd" };
        s.record_audit(&rec(Some(a), "read").entity("patient", who), t(i)).await.unwrap();
    }
    let by = |who: &str| haven_store::AuditQuery {
        refs: vec![(haven_store::AuditRef::Patient, who.into())],
        ..Default::default()
    };
    // A search sees every committed entry, however far behind the background indexer is.
    let found = s.search_audit(a, &by("p-odd"), 1000).await.unwrap();
    assert_eq!(found.len(), 602);
    assert!(found.iter().all(|e| e.record.entities.iter().any(|en| en.id == "p-odd")));
    let mut c = raw(&db).await;
    let indexed = |who: &'static str| {
        format!("SELECT COUNT(*) AS n FROM audit_index WHERE kind = 'patient' AND ref_id = '{who}'")
    };
    let count = async |c: &mut sqlx::AnyConnection, sql: String| -> i64 {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *c).await.unwrap();
        sqlx::Row::get(&row, "n")
    };
    // Each entry is indexed once, whoever got there first (the search or the background task).
    assert_eq!(s.index_audit().await.unwrap(), 0, "nothing left to index");
    assert_eq!(count(&mut c, indexed("p-odd")).await, 602);
    assert_eq!(count(&mut c, indexed("p-even")).await, 603);
    let head = "SELECT (SELECT size FROM audit_head) - (SELECT indexed_seq FROM audit_index_head) AS n";
    assert_eq!(count(&mut c, head.into()).await, 0);
    // A new entry is found at once, before any indexer has run for it.
    s.record_audit(&rec(Some(a), "read").entity("patient", "p-odd"), t(2000)).await.unwrap();
    assert_eq!(s.search_audit(a, &by("p-odd"), 1000).await.unwrap().len(), 603);
    assert_eq!(s.search_audit(a, &by("p-none"), 1000).await.unwrap().len(), 0);
    // Another organisation's search finds none of them.
    let other = org(&s, "B").await;
    assert!(s.search_audit(other, &by("p-odd"), 1000).await.unwrap().is_empty());
});

both_backends!(schemas_11_and_12_key_the_audit_index_and_carry_its_rows_over, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = Store::connect(db.url(), &StoreOptions::default()).await.unwrap();
    s.migrate_to(10).await.unwrap();
    let a = org(&s, "A").await;
    for i in 0..30 {
        s.record_audit(&rec(Some(a), "read").entity("patient", "p1"), t(i)).await.unwrap();
    }
    let mut c = raw(&db).await;
    // Indexed as schema 10 did (this build's indexer writes schema 12's head, which keeps a
    // leaf hash).
    let indexed = format!(
        "INSERT INTO audit_index (seq, org_id, kind, ref_id) SELECT seq, org_id, 'patient', 'p1' FROM audit_log WHERE org_id = '{a}' AND subtype = 'read'; \
         UPDATE audit_index_head SET indexed_seq = (SELECT size FROM audit_head)"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(indexed)).execute(&mut c).await.unwrap();
    // What schema 10 could also hold: rows of an entry without an organisation, and the same
    // row twice.
    s.record_audit(&rec(None, "system").entity("patient", "p1"), t(40)).await.unwrap();
    let seq = s.audit_head().await.unwrap().size;
    let first: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM audit_index WHERE ref_id = 'p1'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let old = format!(
        "INSERT INTO audit_index (seq, org_id, kind, ref_id) VALUES ({seq}, NULL, 'patient', 'p1'), ({first}, '{a}', 'patient', 'p1')"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(old)).execute(&mut c).await.unwrap();
    let rows = async |c: &mut sqlx::AnyConnection| -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_index").fetch_one(&mut *c).await.unwrap()
    };
    let before = rows(&mut c).await;

    assert_eq!(s.migrate_to(11).await.unwrap(), 1);
    assert_eq!(rows(&mut c).await, before - 2, "the organisation-less row and the repeat are gone");
    // The key refuses what it exists to rule out.
    let null_org =
        format!("INSERT INTO audit_index (seq, org_id, kind, ref_id) VALUES ({seq}, NULL, 'patient', 'p2')");
    assert!(sqlx::raw_sql(sqlx::AssertSqlSafe(null_org)).execute(&mut c).await.is_err());
    let twice = format!(
        "INSERT INTO audit_index (seq, org_id, kind, ref_id) VALUES ({first}, '{a}', 'patient', 'p1')"
    );
    assert!(sqlx::raw_sql(sqlx::AssertSqlSafe(twice)).execute(&mut c).await.is_err());

    // Schema 12 carries the rows over (on SQLite into the index's own file), and the head
    // learns the leaf of the last entry it covers: nothing is indexed again.
    assert_eq!(s.migrate_to(12).await.unwrap(), 1);
    let mut c = raw(&db).await;
    assert_eq!(rows(&mut c).await, before - 2);
    let by = |who: &str| haven_store::AuditQuery {
        refs: vec![(haven_store::AuditRef::Patient, who.into())],
        ..Default::default()
    };
    assert_eq!(s.search_audit(a, &by("p1"), 100).await.unwrap().len(), 30);
    assert_eq!(s.index_audit().await.unwrap(), 0, "the carried-over head was trusted");
    let main_tables = "SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'audit_index%'";
    if b == Backend::Sqlite {
        let mut own = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url()).await.unwrap();
        let left: i64 = sqlx::query_scalar(main_tables).fetch_one(&mut own).await.unwrap();
        assert_eq!(left, 0, "the index left the log's file");
    }
    // New entries are indexed under the new key: one naming its patient twice, and one without
    // an organisation, which no search can ask for.
    let twice_named = rec(Some(a), "read").entity("patient", "p1").entity("patient", "p1");
    s.record_audit(&twice_named, t(50)).await.unwrap();
    s.record_audit(&rec(None, "system").entity("patient", "p1"), t(51)).await.unwrap();
    assert_eq!(s.search_audit(a, &by("p1"), 100).await.unwrap().len(), 31);
    assert_eq!(s.index_audit().await.unwrap(), 0, "the search brought the index up to the log");
    assert_eq!(rows(&mut c).await, before - 2 + 1);
    // The lookup is the key itself (PostgreSQL scans a table this small whole unless told not to).
    if b == Backend::Postgres {
        sqlx::raw_sql("SET enable_seqscan = off").execute(&mut c).await.unwrap();
    }
    let sql =
        format!("SELECT seq FROM audit_index WHERE org_id = '{a}' AND kind = 'patient' AND ref_id = 'p1'");
    let plan = plan(&mut c, b, &sql, None).await;
    let key = if b == Backend::Sqlite { "PRIMARY KEY" } else { "audit_index_pkey" };
    assert!(plan.contains(key), "{plan}");
    s.close().await;
});

/// `n` entries about patient `who`, from time `from` on.
async fn about(s: &Store, a: OrgId, who: &str, from: i64, n: i64) {
    for i in 0..n {
        s.record_audit(&rec(Some(a), "read").entity("patient", who), t(from + i)).await.unwrap();
    }
}

/// How many of organisation `a`'s entries a search finds by patient `who`, and whether every
/// one of them names `who`.
async fn found(s: &Store, a: OrgId, who: &str) -> (usize, bool) {
    let q = haven_store::AuditQuery {
        refs: vec![(haven_store::AuditRef::Patient, who.into())],
        ..Default::default()
    };
    let found = s.search_audit(a, &q, 10_000).await.unwrap();
    let all_name_it = found.iter().all(|e| e.record.entities.iter().any(|en| en.id == who));
    (found.len(), all_name_it)
}

/// A store without the background indexer (which `Store::open` starts, every quarter second),
/// for tests that count what their own `index_audit` does: a round of the indexer in between
/// would do it first, and on a busy machine sometimes does.
async fn open_alone(db: &TestDb) -> Store {
    let s = Store::connect(db.url(), &StoreOptions::default()).await.expect("connect");
    s.migrate().await.expect("migrate");
    s
}

/// The entries in `audit_index`.
async fn index_rows(c: &mut sqlx::AnyConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_index").fetch_one(&mut *c).await.unwrap()
}

/// On SQLite the index is a file beside the log's, so the two can come from different copies.
#[tokio::test]
async fn sqlite_an_index_not_built_from_this_log_is_built_again() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = open_alone(&db).await;
    let a = org(&s, "A").await;
    about(&s, a, "p1", 0, 300).await;
    s.index_audit().await.unwrap();
    let size = s.audit_head().await.unwrap().size as u64;
    let mut c = raw(&db).await;
    let indexed = index_rows(&mut c).await;
    // The entry the head says it covers is not the one the log has there: rebuilt from the
    // first entry, each row once.
    c.execute("UPDATE audit_index_head SET leaf = X'00'").await.unwrap();
    assert_eq!(s.index_audit().await.unwrap(), size);
    assert_eq!(index_rows(&mut c).await, indexed);
    assert_eq!(found(&s, a, "p1").await, (300, true));
    // An index ahead of the log (an older copy of the log beside a newer index).
    c.execute("UPDATE audit_index_head SET indexed_seq = indexed_seq + 10").await.unwrap();
    assert_eq!(s.index_audit().await.unwrap(), size);
    assert_eq!(index_rows(&mut c).await, indexed);
    // A head that names no leaf but covers entries is not trusted either.
    c.execute("UPDATE audit_index_head SET leaf = NULL").await.unwrap();
    assert_eq!(s.index_audit().await.unwrap(), size);
    // Its own, correct head is: nothing is done twice.
    assert_eq!(s.index_audit().await.unwrap(), 0);
    assert_eq!(found(&s, a, "p1").await, (300, true));
    s.close().await;
}

/// On PostgreSQL the index is in the log's database and is restored with it. A head without a
/// leaf is what a node still on schema 11 writes during a rolling upgrade: it is not a reason
/// to start again (which, with such a node indexing every quarter second, would never end).
#[tokio::test]
async fn postgres_a_head_without_a_leaf_is_not_started_again() {
    let db = TestDb::new(Backend::Postgres).await;
    let s = open_alone(&db).await;
    let a = org(&s, "A").await;
    about(&s, a, "p1", 0, 300).await;
    s.index_audit().await.unwrap();
    let mut c = raw(&db).await;
    let indexed = index_rows(&mut c).await;
    c.execute("UPDATE audit_index_head SET leaf = NULL").await.unwrap();
    // Caught up, without a leaf: nothing to do.
    let idle = tokio::time::timeout(std::time::Duration::from_secs(5), s.index_audit()).await;
    assert_eq!(idle.expect("indexing a caught-up index ends").unwrap(), 0);
    assert_eq!(index_rows(&mut c).await, indexed);
    about(&s, a, "p1", 300, 10).await;
    assert_eq!(s.index_audit().await.unwrap(), 10);
    assert_eq!(index_rows(&mut c).await, indexed + 10, "only the new entries are indexed");
    assert_eq!(found(&s, a, "p1").await, (310, true));
    s.close().await;
}

/// A backup of the log's file restored beside a newer index: the entries written since reuse
/// the sequence numbers of those the index saw, and the index must not answer for them.
#[tokio::test]
async fn sqlite_a_restored_log_is_not_answered_from_a_newer_index() {
    let db = TestDb::new(Backend::Sqlite).await;
    let file = db.dir().unwrap().join("haven.db");
    let s = open(&db).await;
    let a = org(&s, "A").await;
    about(&s, a, "p1", 0, 100).await;
    s.close().await;
    // Closing checkpoints the log into its file: the file alone is the backup.
    let backup = db.scratch().join("backup.db");
    std::fs::copy(&file, &backup).unwrap();

    let s = open(&db).await;
    about(&s, a, "p2", 200, 50).await;
    assert_eq!(found(&s, a, "p2").await, (50, true));
    s.close().await;

    std::fs::copy(&backup, &file).unwrap();
    let s = open(&db).await;
    about(&s, a, "p3", 300, 60).await;
    assert_eq!(found(&s, a, "p3").await, (60, true));
    assert_eq!(found(&s, a, "p2").await, (0, true), "p2's entries are not in this log");
    assert_eq!(found(&s, a, "p1").await, (100, true));
    s.close().await;

    // An index file lost or deleted is built again from the log.
    for f in std::fs::read_dir(db.dir().unwrap()).unwrap() {
        let path = f.unwrap().path();
        if path.to_string_lossy().contains("-audit-index") {
            std::fs::remove_file(path).unwrap();
        }
    }
    // Opened as an operator would write the URL, without `mode=rwc` (which lets SQLite create
    // files): the index's file is made by Haven.
    let url = db.url().split('?').next().unwrap().to_owned();
    assert!(!url.contains("mode=rwc"));
    let s = Store::open(&url, &StoreOptions::default()).await.expect("open without mode=rwc");
    assert_eq!(found(&s, a, "p3").await, (60, true));
    assert_eq!(found(&s, a, "p1").await, (100, true));
    s.close().await;
}

/// Indexing takes the index file's write lock, never the log's: it goes on while another
/// connection holds the log's (as group commit's writer does while it writes a batch).
#[tokio::test]
async fn sqlite_indexing_does_not_wait_for_the_logs_writer() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = open_alone(&db).await;
    let a = org(&s, "A").await;
    about(&s, a, "p1", 0, 500).await;
    let mut writer = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url()).await.unwrap();
    writer.execute("BEGIN IMMEDIATE").await.unwrap();
    let indexing = tokio::time::timeout(std::time::Duration::from_secs(5), s.index_audit()).await;
    assert!(indexing.expect("indexing waited for the log's write lock").unwrap() > 0);
    writer.execute("ROLLBACK").await.unwrap();
    assert_eq!(found(&s, a, "p1").await, (500, true));
    s.close().await;
}
