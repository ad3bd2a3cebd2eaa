//! Several writes sent as one script. On SQLite every statement is a hand-off to the
//! connection's thread and back, and in a group-commit batch those hand-offs cost more than the
//! SQL; SQLite runs a string of statements in one call, binding `?` placeholders in order
//! across all of them, so a script is one hand-off there. PostgreSQL's extended protocol takes
//! one statement per prepare, so there each statement runs on its own, numbered `$1..`.
//! Either way the statements run in order on the caller's connection (inside its transaction),
//! and the first failure stops the rest.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, Type};

use crate::StoreResult;

/// Writes queued to run together; see the module documentation.
pub(crate) struct Script {
    joined: bool,
    /// The joined script (SQLite), or one entry per statement (PostgreSQL).
    statements: Vec<(String, AnyArguments)>,
    error: Option<String>,
}

/// Placeholders of one statement, in the order their values are bound.
pub(crate) struct Marks {
    joined: bool,
    next: usize,
}

impl Marks {
    /// The next placeholder.
    pub(crate) fn next(&mut self) -> String {
        if self.joined {
            "?".to_owned()
        } else {
            self.next += 1;
            format!("${}", self.next)
        }
    }

    /// `(.., ..), (..)`: placeholders for `rows` rows of `cols` values.
    pub(crate) fn rows(&mut self, rows: usize, cols: usize) -> String {
        (0..rows)
            .map(|_| {
                let cells: Vec<String> = (0..cols).map(|_| self.next()).collect();
                format!("({})", cells.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Script {
    /// An empty script for the database `c` is connected to.
    pub(crate) fn for_connection(c: &AnyConnection) -> Self {
        Self { joined: c.backend_name() == "SQLite", statements: Vec::new(), error: None }
    }

    /// Adds a statement; `sql` writes it with placeholders from the given marks, and its
    /// values follow through [`Script::bind`] in the same order.
    pub(crate) fn statement(&mut self, sql: impl FnOnce(&mut Marks) -> String) -> &mut Self {
        let text = sql(&mut Marks { joined: self.joined, next: 0 });
        match self.statements.last_mut() {
            Some((joined, _)) if self.joined => {
                joined.push_str(";\n");
                joined.push_str(&text);
            }
            _ => self.statements.push((text, AnyArguments::default())),
        }
        self
    }

    /// Binds the next value of the statement added last.
    pub(crate) fn bind<'t, T: Encode<'t, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        let Some((_, args)) = self.statements.last_mut() else {
            self.error.get_or_insert_with(|| "a value bound before any statement".to_owned());
            return self;
        };
        if let Err(e) = args.add(value) {
            self.error.get_or_insert_with(|| format!("a value could not be encoded: {e}"));
        }
        self
    }

    /// Runs the statements in order on `c`.
    pub(crate) async fn run(self, c: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Protocol(e));
        }
        for (sql, args) in self.statements {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args).execute(&mut *c).await?;
        }
        Ok(())
    }

    /// Runs the statements in order on `c` and returns the rows all of them return, in order.
    pub(crate) async fn fetch_all(self, c: &mut AnyConnection) -> Result<Vec<AnyRow>, sqlx::Error> {
        if let Some(e) = self.error {
            return Err(sqlx::Error::Protocol(e));
        }
        let mut rows = Vec::new();
        for (sql, args) in self.statements {
            rows.extend(sqlx::query_with(sqlx::AssertSqlSafe(sql), args).fetch_all(&mut *c).await?);
        }
        Ok(rows)
    }

    /// [`Script::run`], with a unique violation reported as a conflict on `field`.
    pub(crate) async fn run_or_conflict(self, c: &mut AnyConnection, field: &'static str) -> StoreResult<()> {
        self.run(c).await.map_err(crate::rows::conflict(field))
    }
}
