//! Migrations: one folder per backend, embedded in the binary, applied in order inside one
//! transaction each. A shipped migration is never edited: the checksum of every applied one is
//! compared with the embedded file, and a mismatch stops the server.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection, Row};

use crate::{Backend, StoreError, StoreResult};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    /// Whether its SQLite script rebuilds a table others refer to (create the new one, copy,
    /// drop the old, rename), which SQLite allows only with foreign keys off: they are turned
    /// off for it, and every reference is checked before it commits.
    rebuilds: bool,
}

/// A migration whose two scripts are `migrations/{sqlite,postgres}/$file`; `rebuilds` marks one
/// that rebuilds a SQLite table (see [`Migration::rebuilds`]).
macro_rules! migration {
    ($version:literal, $name:literal, $file:literal $(, $rebuilds:ident)?) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $file)),
            postgres: include_str!(concat!("../migrations/postgres/", $file)),
            rebuilds: migration!(@rebuilds $($rebuilds)?),
        }
    };
    (@rebuilds rebuilds) => { true };
    (@rebuilds) => { false };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "identity", "0001_identity.sql"),
    migration!(2, "messaging", "0002_messaging.sql"),
    migration!(3, "texting", "0003_texting.sql"),
    migration!(4, "attachment_policy", "0004_attachment_policy.sql"),
    migration!(5, "patient_thread", "0005_patient_thread.sql"),
    migration!(6, "texts_by_patient", "0006_texts_by_patient.sql"),
    migration!(7, "audit_index_behind", "0007_audit_index_behind.sql"),
    migration!(8, "idempotency_key_first", "0008_idempotency_key_first.sql", rebuilds),
    migration!(9, "drop_audit_by_time", "0009_drop_audit_by_time.sql"),
    migration!(10, "texting_indexes", "0010_texting_indexes.sql"),
    migration!(11, "audit_index_keyed", "0011_audit_index_keyed.sql"),
    migration!(12, "audit_index_own_file", "0012_audit_index_own_file.sql"),
];

fn checksum(sql: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(sql.as_bytes()))
}

/// Applies every pending migration up to `up_to` (all of them when `None`); returns how many
/// were applied.
pub(crate) async fn run(
    conn: &mut AnyConnection,
    backend: Backend,
    up_to: Option<i64>,
) -> StoreResult<usize> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS haven_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL,
            checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| up_to.is_none_or(|v| m.version <= v)) {
        let fk_off = backend == Backend::Sqlite && m.rebuilds;
        if fk_off {
            // Only outside a transaction does this take effect.
            sqlx::raw_sql("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
        }
        let outcome = apply(conn, backend, m, fk_off).await;
        if fk_off {
            sqlx::raw_sql("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
        }
        if outcome? {
            tracing::info!(version = m.version, name = m.name, "applied migration");
            applied += 1;
        }
    }
    // Refuse a database written by a newer Haven.
    let newest: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM haven_migrations")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if newest.unwrap_or(0) > known {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {}, newer than this Haven ({known}); upgrade Haven",
            newest.unwrap_or(0)
        )));
    }
    Ok(applied)
}

/// Applies `m` in a transaction of its own unless it already was; whether it was applied now.
async fn apply(
    conn: &mut AnyConnection,
    backend: Backend,
    m: &Migration,
    check_references: bool,
) -> StoreResult<bool> {
    let sql = match backend {
        Backend::Sqlite => m.sqlite,
        Backend::Postgres => m.postgres,
    };
    let mut tx = conn.begin().await?;
    if backend == Backend::Postgres {
        // Serialises concurrent starters (several nodes) on the migrations table.
        sqlx::raw_sql("LOCK TABLE haven_migrations IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    }
    let existing = sqlx::query("SELECT checksum FROM haven_migrations WHERE version = $1")
        .bind(m.version)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = existing {
        let stored: String = row.try_get("checksum")?;
        if stored != checksum(sql) {
            return Err(StoreError::Migration(format!(
                "migration {} ({}) differs from the one applied to this database",
                m.version, m.name
            )));
        }
        return Ok(false);
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    if check_references {
        let broken = sqlx::raw_sql("PRAGMA foreign_key_check").fetch_all(&mut *tx).await?;
        if !broken.is_empty() {
            return Err(StoreError::Migration(format!(
                "migration {} ({}) would leave {} rows referring to rows that do not exist",
                m.version,
                m.name,
                broken.len()
            )));
        }
    }
    sqlx::query("INSERT INTO haven_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(sql))
        .bind(jiff::Timestamp::now().as_millisecond())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}
