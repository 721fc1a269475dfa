//! The embedded key store: SQLite in WAL mode with `synchronous = FULL` (a transaction is
//! on disk when it commits) and `secure_delete = ON` (freed pages are overwritten, so
//! erased key material does not linger in the file). The store's logic and its group
//! commit are in [`crate::sql`]; this module is the SQLite connection under it.

use crate::sql::{Arg, Conn, Db, SqlStore, Val};
use crate::StoreError;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use std::path::Path;
use zeroize::Zeroizing;

pub use crate::sql::{CHUNK_BYTES, MAX_BATCH};

/// The SQLite store (the SQL store over an SQLite connection).
pub type SqliteStore = SqlStore;

impl SqlStore {
    /// Opens (or creates) an SQLite store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::sqlite(conn, &path.display().to_string())
    }

    /// An SQLite store in memory (tests, simulations that need no durability).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::sqlite(Connection::open_in_memory()?, ":memory:")
    }

    fn sqlite(conn: Connection, what: &str) -> Result<Self, StoreError> {
        // journal_mode returns a row; the others return nothing.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;",
        )?;
        conn.execute_batch(&crate::sql::schema("INTEGER", "BLOB"))?;
        // Room for every statement the store uses (rusqlite keeps 16 by default; past
        // that, statements were evicted and parsed again on every operation).
        conn.set_prepared_statement_cache_capacity(64);
        let mut lite = Lite(conn);
        crate::sql::check_version(&mut lite, what)?;
        SqlStore::start(lite, "sqlite", true)
    }
}

/// The writer's SQLite connection. Every statement is prepared once and cached: parsing
/// per operation cost more than the operations themselves.
struct Lite(Connection);

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::I(v) => ValueRef::Integer(v),
            Arg::T(s) => ValueRef::Text(s.as_bytes()),
            Arg::B(b) => ValueRef::Blob(b),
        }))
    }
}

impl Lite {
    fn control(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.0.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
}

impl Db for Lite {
    fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn rows(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Vec<Val>>, StoreError> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::I(v),
                    ValueRef::Real(v) => Val::I(v as i64),
                    ValueRef::Text(t) => Val::T(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Val::B(Zeroizing::new(b.to_vec())),
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}

impl Conn for Lite {
    fn as_db(&mut self) -> &mut dyn Db {
        self
    }
    fn begin(&mut self) -> Result<(), StoreError> {
        self.control("BEGIN IMMEDIATE")
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        self.control("COMMIT")
    }
    fn rollback(&mut self) -> Result<(), StoreError> {
        self.control("ROLLBACK")
    }
    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.control("SAVEPOINT op")
    }
    fn release(&mut self) -> Result<(), StoreError> {
        self.control("RELEASE op")
    }
    fn rollback_to(&mut self) -> Result<(), StoreError> {
        self.control("ROLLBACK TO op")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite;

    /// The store suite on SQLite files in a fresh directory per scenario.
    #[test]
    fn sqlite_store_passes_the_store_suite() {
        let root = std::env::temp_dir().join(format!("qkdnet-kms-suite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let open_for = |i: usize| -> suite::Opener {
            let dir = root.join(i.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            Box::new(move |name: &str| SqlStore::open(&dir.join(format!("{name}.sqlite"))).unwrap())
        };
        suite::run_all(&open_for, 24);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_store_of_another_schema_version_is_refused() {
        let dir = std::env::temp_dir().join(format!("qkdnet-kms-ver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.sqlite");
        let _ = std::fs::remove_file(&path);
        drop(SqlStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE meta SET v = 1 WHERE k = 'schema'", [])
            .unwrap();
        let err = SqlStore::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("schema version 1") && err.contains("old.sqlite"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
