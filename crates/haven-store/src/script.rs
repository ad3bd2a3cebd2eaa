//! Several writes sent as one script. On SQLite every statement is a hand-off to the
//! connection's thread and back, and in a group-commit batch those hand-offs cost more than the
//! SQL; SQLite runs a string of statements in one call, binding `?` placeholders in order
//! across all of them, so a script is one hand-off there. PostgreSQL's extended protocol takes
//! one statement per prepare, and each is a network round trip; there consecutive writes
//! (`INSERT`, `UPDATE` or `DELETE` without `RETURNING`) are sent as one statement, all but the
//! last as data-modifying `WITH` clauses, which PostgreSQL runs exactly once each, to
//! completion (unique keys are checked row by row as usual, foreign keys at the end of the
//! statement, so a row may refer to one inserted beside it); the others run on their own,
//! numbered `$1..`. Either way the statements run in order on the caller's connection
//! (inside its transaction), and the first failure stops the rest. Joined writes see the
//! database as it was before all of them, so a script must not join a write that depends on
//! an earlier one's effect, nor change one row twice.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, Type};

use crate::StoreResult;

/// Writes queued to run together; see the module documentation.
pub(crate) struct Script {
    joined: bool,
    /// The joined script (SQLite), or one entry per statement sent (PostgreSQL).
    statements: Vec<Entry>,
    error: Option<String>,
}

/// One statement as sent.
struct Entry {
    /// Its last (or only) part.
    sql: String,
    /// Earlier writes joined to it as `WITH` clauses (PostgreSQL).
    ctes: Vec<String>,
    args: AnyArguments,
    /// Placeholders so far (PostgreSQL).
    params: usize,
    /// Whether a following write may join it.
    open: bool,
}

impl Entry {
    fn text(self) -> (String, AnyArguments) {
        if self.ctes.is_empty() {
            return (self.sql, self.args);
        }
        let ctes: Vec<String> = self.ctes.iter().enumerate().map(|(i, c)| format!("w{i} AS ({c})")).collect();
        (format!("WITH {}\n{}", ctes.join(",\n"), self.sql), self.args)
    }
}

/// The most placeholders in one joined statement (PostgreSQL allows 65,535).
const MAX_JOINED_PARAMS: usize = 30_000;

/// Whether a statement can join others as a `WITH` clause: a write whose rows nobody reads.
fn joinable(sql: &str) -> bool {
    let head = sql.trim_start().get(..6).unwrap_or("").to_ascii_uppercase();
    matches!(head.as_str(), "INSERT" | "UPDATE" | "DELETE") && !sql.to_ascii_uppercase().contains("RETURNING")
}

/// `sql` with every placeholder `$n` renumbered `$(n + by)`. Every `$` followed by digits is
/// taken for a placeholder: the store's SQL has no `$` in literals or names.
fn shift(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
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
        self.repeat(rows, &format!("({})", vec!["?"; cols].join(", ")), ", ")
    }

    /// `template` `n` times, joined by `sep`, each `?` in it replaced by the next placeholder
    /// (e.g. `repeat(2, "(a = ? AND b = ?)", " OR ")`).
    pub(crate) fn repeat(&mut self, n: usize, template: &str, sep: &str) -> String {
        let parts: Vec<String> = (0..n)
            .map(|_| {
                let mut pieces = template.split('?');
                let mut one = pieces.next().unwrap_or_default().to_owned();
                for piece in pieces {
                    one.push_str(&self.next());
                    one.push_str(piece);
                }
                one
            })
            .collect();
        parts.join(sep)
    }
}

impl Script {
    /// An empty script for the database `c` is connected to.
    pub(crate) fn for_connection(c: &AnyConnection) -> Self {
        Self { joined: c.backend_name() == "SQLite", statements: Vec::new(), error: None }
    }

    /// Whether the statements go to the database as one string (SQLite).
    pub(crate) fn joined(&self) -> bool {
        self.joined
    }

    /// Adds a statement; `sql` writes it with placeholders from the given marks, and its
    /// values follow through [`Script::bind`] in the same order.
    pub(crate) fn statement(&mut self, sql: impl FnOnce(&mut Marks) -> String) -> &mut Self {
        let mut marks = Marks { joined: self.joined, next: 0 };
        let text = sql(&mut marks);
        let open = !self.joined && joinable(&text);
        match self.statements.last_mut() {
            Some(last) if self.joined => {
                last.sql.push_str(";\n");
                last.sql.push_str(&text);
            }
            Some(last) if open && last.open && last.params + marks.next <= MAX_JOINED_PARAMS => {
                let text = shift(&text, last.params);
                last.ctes.push(std::mem::replace(&mut last.sql, text));
                last.params += marks.next;
            }
            _ => self.statements.push(Entry {
                sql: text,
                ctes: Vec::new(),
                args: AnyArguments::default(),
                params: marks.next,
                open,
            }),
        }
        self
    }

    /// Binds the next value of the statement added last.
    pub(crate) fn bind<'t, T: Encode<'t, Any> + Type<Any>>(&mut self, value: T) -> &mut Self {
        let Some(Entry { args, .. }) = self.statements.last_mut() else {
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
        for entry in self.statements {
            let (sql, args) = entry.text();
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
        for entry in self.statements {
            let (sql, args) = entry.text();
            rows.extend(sqlx::query_with(sqlx::AssertSqlSafe(sql), args).fetch_all(&mut *c).await?);
        }
        Ok(rows)
    }

    /// [`Script::run`], with a unique violation reported as a conflict on `field`.
    pub(crate) async fn run_or_conflict(self, c: &mut AnyConnection, field: &'static str) -> StoreResult<()> {
        self.run(c).await.map_err(crate::rows::conflict(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_past_the_earlier_writes() {
        assert_eq!(
            shift("VALUES ($1, $2), ($10, CAST($3 AS BIGINT))", 4),
            "VALUES ($5, $6), ($14, CAST($7 AS BIGINT))"
        );
        assert_eq!(shift("no placeholders", 4), "no placeholders");
    }

    #[test]
    fn repeated_templates_take_placeholders_in_order() {
        let mut pg = Marks { joined: false, next: 2 };
        assert_eq!(pg.repeat(2, "(a = ? AND b = ?)", " OR "), "(a = $3 AND b = $4) OR (a = $5 AND b = $6)");
        assert_eq!(pg.rows(1, 3), "($7, $8, $9)");
        let mut sqlite = Marks { joined: true, next: 0 };
        assert_eq!(sqlite.rows(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn only_writes_whose_rows_nobody_reads_are_joined() {
        assert!(joinable("INSERT INTO t VALUES ($1)"));
        assert!(joinable("\n  update t SET a = $1"));
        assert!(!joinable("UPDATE t SET a = 1 RETURNING a"));
        assert!(!joinable("SELECT 1"));
        assert!(!joinable("COMMIT"));
    }
}
