//! Test support: throwaway databases on both backends, a settable clock, and a Haven server
//! running in-process on a free loopback port.
//!
//! PostgreSQL is never optional: when it cannot be reached the tests fail loudly. The admin URL
//! comes from `HAVEN_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test gets its own database, dropped afterwards.

pub mod clinic;
mod server;
pub mod twilio;

use std::sync::{Arc, Mutex};

use haven_domain::Clock;
use jiff::{SignedDuration, Timestamp};
use sqlx::Executor;

pub use server::{TestServer, TestUser};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in a temporary directory.
    Sqlite,
    /// A throwaway PostgreSQL database.
    Postgres,
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    cleanup: Cleanup,
    scratch: std::path::PathBuf,
}

#[derive(Debug)]
enum Cleanup {
    Dir(std::path::PathBuf),
    Database { admin_url: String, name: String },
}

/// The PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("HAVEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn unique_suffix() -> String {
    let mut b = [0u8; 8];
    haven_domain::Entropy::fill(&mut haven_app::OsEntropy, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TestDb {
    /// A fresh database on `backend`.
    pub async fn new(backend: Backend) -> Self {
        let scratch = std::env::temp_dir().join(format!("haven-test-{}", unique_suffix()));
        std::fs::create_dir_all(&scratch).expect("create temp dir");
        match backend {
            Backend::Sqlite => {
                let url = haven_store::sqlite_url_for(&scratch);
                TestDb { url, cleanup: Cleanup::Dir(scratch.clone()), scratch }
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let admin_url = postgres_admin_url();
                let name = format!("haven_test_{}", unique_suffix());
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL is required for the test suite and could not be reached at \
                             {admin_url}: {e}. Run the tests through scripts/test, which starts one."
                        )
                    });
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let url = match admin_url.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("HAVEN_TEST_POSTGRES_URL must end with /database"),
                };
                TestDb { url, cleanup: Cleanup::Database { admin_url, name }, scratch }
            }
        }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A directory that lives as long as the database (blobs go under `blobs/`).
    pub fn scratch(&self) -> &std::path::Path {
        &self.scratch
    }

    /// The blob store of this test's server.
    pub fn blobs(&self) -> Arc<dyn haven_store::blob::BlobStore> {
        Arc::new(haven_store::blob::FsBlobStore::new(&self.scratch.join("blobs")).expect("blob dir"))
    }

    /// The directory of a SQLite test database.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self.cleanup {
            Cleanup::Dir(d) => Some(d),
            Cleanup::Database { .. } => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
        match &self.cleanup {
            Cleanup::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Cleanup::Database { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime: use a thread with its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    if let Ok(rt) = rt {
                        rt.block_on(async move {
                            if let Ok(mut c) =
                                <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await
                            {
                                let _ = c
                                    .execute(sqlx::AssertSqlSafe(format!(
                                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                    )))
                                    .await;
                            }
                        });
                    }
                })
                .join();
            }
        }
    }
}

/// Fixed keys for tests.
pub fn test_keys() -> haven_app::Keys {
    haven_app::Keys {
        masters: vec![(1, haven_crypto::seal::MasterKey::from_bytes([7; 32]))],
        audit_signer: haven_audit::checkpoint::NoteSigner::new("haven.test/audit", &[3; 32])
            .expect("valid name"),
    }
}

/// A clock that stands still until told to move.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<Mutex<Timestamp>>);

impl TestClock {
    /// A clock at a fixed instant (2026-11-02 09:00:00 UTC).
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Timestamp::from_second(1_793_610_000).expect("valid"))))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: SignedDuration) {
        let mut t = self.0.lock().expect("clock lock");
        *t += by;
    }

    /// Sets the clock to an instant.
    pub fn set(&self, at: Timestamp) {
        *self.0.lock().expect("clock lock") = at;
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.advance(SignedDuration::from_secs(secs));
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}

/// Runs one async test body on both backends: `both_backends!(name, |backend| async { … })`
/// expands to a module `name` with tests `sqlite` and `postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::Backend::Postgres).await
            }
        }
    };
}
