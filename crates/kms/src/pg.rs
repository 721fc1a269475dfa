//! The PostgreSQL key store: the same logic and group commit as SQLite ([`crate::sql`])
//! over a PostgreSQL connection, for operators who keep their state in a database server
//! (replication, backups, monitoring they already run).
//!
//! Durability: every batch commits with the server's `synchronous_commit` (default `on`:
//! the commit record is flushed before the answer). One store owns one database: the
//! store takes a session advisory lock on connecting and refuses to start while another
//! process holds it.
//!
//! Erasure: PostgreSQL keeps deleted rows as dead tuples until `VACUUM` reclaims their
//! space, and has no equivalent of SQLite's `secure_delete`; key bytes that were fetched
//! or expired stay in the data files (and in the write-ahead log) until then. Run the
//! server on encrypted storage and keep autovacuum on (or `VACUUM held, chunks` often).
//!
//! Transport: plain TCP or a Unix socket for a server on the same host; for a remote one,
//! TLS (rustls) with the server's certificate verified against a given CA
//! ([`SqlStore::postgres_tls`]; `postgres_ca` in a KME's `[store]`). With a CA the
//! connection requires TLS whatever the connection string's `sslmode` says.

use crate::sql::{Arg, Conn, Db, SqlStore, Val};
use crate::StoreError;
use postgres::types::{IsNull, ToSql, Type};
use postgres::NoTls;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Statement;
use zeroize::Zeroizing;

/// The PostgreSQL store (the SQL store over a PostgreSQL connection).
pub type PgStore = SqlStore;

/// The whole message of a PostgreSQL error: the server's own words when it sent some
/// (`postgres::Error` alone prints only "db error").
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

/// The advisory lock that marks a database as owned by one store ("qkdn").
const OWNER_LOCK: i64 = 0x716b_646e;

/// How long [`SqlStore::postgres`] waits for a previous owner's session to end (a killed
/// process's session ends when the server notices the closed socket).
pub const OWNER_WAIT: Duration = Duration::from_secs(15);

impl SqlStore {
    /// Connects to the PostgreSQL database at `url` (a libpq-style connection string,
    /// `host=… port=… user=… dbname=…`, or a `postgresql://` URL), creates the tables if
    /// they are missing, and takes ownership of the database.
    pub fn postgres(url: &str) -> Result<Self, StoreError> {
        Self::postgres_with(url, None, OWNER_WAIT)
    }

    /// [`SqlStore::postgres`] over TLS: the server's certificate must chain to a CA in
    /// `ca_pem` and name the connection string's host.
    pub fn postgres_tls(url: &str, ca_pem: &[u8]) -> Result<Self, StoreError> {
        let tls = crate::etsi::verify_only_tls(ca_pem)
            .map_err(|e| StoreError::Backend(format!("PostgreSQL store: TLS: {e}")))?;
        Self::postgres_with(url, Some(tls), OWNER_WAIT)
    }

    /// [`SqlStore::postgres`], waiting at most `owner_wait` for a previous owner to go.
    pub fn postgres_waiting(url: &str, owner_wait: Duration) -> Result<Self, StoreError> {
        Self::postgres_with(url, None, owner_wait)
    }

    /// Connects with or without TLS, waiting at most `owner_wait` for a previous owner.
    pub fn postgres_with(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        owner_wait: Duration,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: postgres::Error| {
            StoreError::Backend(format!(
                "PostgreSQL store: connection string: {}",
                describe(&e)
            ))
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL store runtime: {e}")))?;
        let client = rt.block_on(async {
            // The connection task runs whenever the writer waits on the runtime (every
            // round trip).
            match tls {
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(connection);
                    Ok::<_, postgres::Error>(client)
                }
                Some(cfg) => {
                    config.ssl_mode(tokio_postgres::config::SslMode::Require);
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*cfg).clone());
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
            }
        })?;
        let deadline = Instant::now() + owner_wait;
        loop {
            let got: bool = rt
                .block_on(client.query_one("SELECT pg_try_advisory_lock($1)", &[&OWNER_LOCK]))?
                .get(0);
            if got {
                break;
            }
            if Instant::now() > deadline {
                return Err(StoreError::Backend(format!(
                    "PostgreSQL store: another process owns the database (advisory lock {OWNER_LOCK:#x} held for over {:.1} s)",
                    owner_wait.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        rt.block_on(client.batch_execute(&crate::sql::schema("BIGINT", "BYTEA")))?;
        let mut pg = Pg {
            rt,
            client: Arc::new(client),
            cache: HashMap::new(),
            pending: Vec::new(),
        };
        crate::sql::check_version(&mut pg, "PostgreSQL store")?;
        SqlStore::start(pg, "postgres", false)
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<u64, postgres::Error>> + Send>>;

/// The writer's PostgreSQL connection, with its statements prepared once.
///
/// Pipelining. A round trip to the server costs about 0.2 ms here (pgbench's `SELECT 1`
/// latency on this machine is 0.19 ms), more than the statement itself. Statements
/// whose answer the store does not read (writes, savepoints) are therefore queued, and
/// sent together with the next query or at the end of the operation ([`Db::flush`]); the
/// server answers them in order, and the first error among them fails the operation.
struct Pg {
    rt: tokio::runtime::Runtime,
    client: Arc<tokio_postgres::Client>,
    /// Prepared statements by the address of their `'static` text.
    cache: HashMap<usize, Statement>,
    /// Statements sent (on the next flush) whose answers are not awaited yet.
    pending: Vec<Pending>,
}

/// A parameter converted to the type the server declared for it, owned so that the
/// statement can wait in the pipeline.
enum PgArg {
    I8(i64),
    I4(i32),
    I2(i16),
    T(String),
    B(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for PgArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::I8(v) => write!(f, "{v}"),
            Self::I4(v) => write!(f, "{v}"),
            Self::I2(v) => write!(f, "{v}"),
            Self::T(s) => write!(f, "{s:?}"),
            // Key material is never printed.
            Self::B(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

impl ToSql for PgArg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::I8(v) => v.to_sql(ty, out),
            Self::I4(v) => v.to_sql(ty, out),
            Self::I2(v) => v.to_sql(ty, out),
            Self::T(s) => s.to_sql(ty, out),
            Self::B(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// `?N` → `$N` (the statements are ours: no `?` appears inside a literal).
fn dollar(sql: &str) -> String {
    sql.replace('?', "$")
}

fn refs(args: &[PgArg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Pg {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        let key = sql.as_ptr() as usize;
        if let Some(s) = self.cache.get(&key) {
            return Ok(s.clone());
        }
        let s = self.rt.block_on(self.client.prepare(&dollar(sql)))?;
        self.cache.insert(key, s.clone());
        Ok(s)
    }

    fn args(st: &Statement, args: &[Arg<'_>]) -> Result<Vec<PgArg>, StoreError> {
        let types = st.params();
        if types.len() != args.len() {
            return Err(StoreError::Backend(format!(
                "statement takes {} parameters, {} given",
                types.len(),
                args.len()
            )));
        }
        args.iter()
            .zip(types)
            .map(|(a, ty)| {
                let narrow = |v: i64| {
                    StoreError::Backend(format!("parameter {v} does not fit a {ty} column"))
                };
                Ok(match *a {
                    Arg::I(v) if *ty == Type::INT4 => {
                        PgArg::I4(i32::try_from(v).map_err(|_| narrow(v))?)
                    }
                    Arg::I(v) if *ty == Type::INT2 => {
                        PgArg::I2(i16::try_from(v).map_err(|_| narrow(v))?)
                    }
                    Arg::I(v) => PgArg::I8(v),
                    Arg::T(s) => PgArg::T(s.to_string()),
                    Arg::B(b) => PgArg::B(Zeroizing::new(b.to_vec())),
                })
            })
            .collect()
    }

    /// Queues a statement whose answer is only checked for errors.
    fn queue(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<(), StoreError> {
        let st = self.prepared(sql)?;
        let owned = Self::args(&st, args)?;
        let client = Arc::clone(&self.client);
        self.pending.push(Box::pin(
            async move { client.execute(&st, &refs(&owned)).await },
        ));
        Ok(())
    }

    /// Sends what is queued and waits for every answer; the first error is returned.
    fn drain(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let results = self.rt.block_on(futures_util::future::join_all(pending));
        for r in results {
            r?;
        }
        Ok(())
    }
}

impl Db for Pg {
    fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        // The store never reads the count of a write; 0 stands for "not yet known".
        self.queue(sql, args)?;
        Ok(0)
    }

    fn rows(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Vec<Val>>, StoreError> {
        let st = self.prepared(sql)?;
        let owned = Self::args(&st, args)?;
        let pending = futures_util::future::join_all(std::mem::take(&mut self.pending));
        let client = Arc::clone(&self.client);
        // The queued statements go out first, then the query, in one round trip.
        let (done, rows) = self.rt.block_on(async {
            futures_util::future::join(pending, client.query(&st, &refs(&owned))).await
        });
        for r in done {
            r?;
        }
        let rows = rows?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let ty = col.type_();
                let v = if *ty == Type::INT8 {
                    r.try_get::<_, Option<i64>>(i)?.map(Val::I)
                } else if *ty == Type::INT4 {
                    r.try_get::<_, Option<i32>>(i)?.map(|v| Val::I(v.into()))
                } else if *ty == Type::INT2 {
                    r.try_get::<_, Option<i16>>(i)?.map(|v| Val::I(v.into()))
                } else if *ty == Type::BOOL {
                    r.try_get::<_, Option<bool>>(i)?.map(|v| Val::I(v.into()))
                } else if *ty == Type::BYTEA {
                    r.try_get::<_, Option<Vec<u8>>>(i)?
                        .map(|b| Val::B(Zeroizing::new(b)))
                } else {
                    r.try_get::<_, Option<String>>(i)?.map(Val::T)
                };
                row.push(v.unwrap_or(Val::Null));
            }
            out.push(row);
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.drain()
    }
}

impl Conn for Pg {
    fn as_db(&mut self) -> &mut dyn Db {
        self
    }
    fn begin(&mut self) -> Result<(), StoreError> {
        self.queue("BEGIN", &[])
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        self.queue("COMMIT", &[])?;
        self.drain()
    }
    fn rollback(&mut self) -> Result<(), StoreError> {
        // Whatever failed before, the answers are consumed and the transaction ends.
        let _ = self.drain();
        self.queue("ROLLBACK", &[])?;
        self.drain()
    }
    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.queue("SAVEPOINT op", &[])
    }
    fn release(&mut self) -> Result<(), StoreError> {
        self.queue("RELEASE SAVEPOINT op", &[])
    }
    fn rollback_to(&mut self) -> Result<(), StoreError> {
        self.queue("ROLLBACK TO SAVEPOINT op", &[])
    }
}

pub mod local {
    //! A throwaway PostgreSQL server on loopback, for tests and benchmarks: `initdb` into
    //! a temporary directory, `pg_ctl start` on a free port, `pg_ctl stop` and removal on
    //! drop. Uses the server binaries of Debian's `postgresql` package (or those on
    //! `PATH`, or in `$QKDNET_PG_BIN`). When run as root it runs them as the `postgres`
    //! user, since the server refuses to run as root.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A running server; stopped and deleted when dropped.
    pub struct LocalServer {
        bin: PathBuf,
        dir: PathBuf,
        as_user: Option<String>,
        port: u16,
    }

    fn find_bin() -> Result<PathBuf, String> {
        if let Ok(b) = std::env::var("QKDNET_PG_BIN") {
            return Ok(PathBuf::from(b));
        }
        if let Ok(path) = std::env::var("PATH") {
            for d in std::env::split_paths(&path) {
                if d.join("pg_ctl").is_file() && d.join("initdb").is_file() {
                    return Ok(d);
                }
            }
        }
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let v: u32 = e.file_name().to_str()?.parse().ok()?;
                        let bin = e.path().join("bin");
                        bin.join("pg_ctl").is_file().then_some((v, bin))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found.pop().map(|(_, b)| b).ok_or_else(|| {
            "PostgreSQL server binaries (initdb, pg_ctl) not found in $QKDNET_PG_BIN, on PATH or under /usr/lib/postgresql/*/bin; install Debian's postgresql package".to_string()
        })
    }

    /// Uid and gid of `user` from /etc/passwd.
    fn ids_of(user: &str) -> Option<(u32, u32)> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    }

    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    impl LocalServer {
        /// Initialises and starts a server. The error says what is missing or what failed.
        pub fn start() -> Result<Self, String> {
            Self::start_with(None)
        }

        /// [`LocalServer::start`] with TLS on (`ssl = on`), presenting the certificate
        /// chain `cert_pem` with `key_pem`. Plain connections are still accepted.
        pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
            Self::start_with(Some((cert_pem, key_pem)))
        }

        fn start_with(tls: Option<(&str, &str)>) -> Result<Self, String> {
            let bin = find_bin()?;
            let as_user = if is_root() {
                let (uid, gid) = ids_of("postgres").ok_or(
                    "running as root and there is no 'postgres' user to run the server as",
                )?;
                Some((uid, gid))
            } else {
                None
            };
            let dir = std::env::temp_dir().join(format!(
                "qkdnet-pg-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if let Some((uid, gid)) = as_user {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| format!("no free loopback port: {e}"))?;
            let server = Self {
                bin,
                dir,
                as_user: as_user.map(|_| "postgres".to_string()),
                port,
            };
            let data = server.dir.join("data");
            server.run(
                "initdb",
                &[
                    "-D",
                    &data.display().to_string(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-instructions",
                    "-E",
                    "UTF8",
                ],
            )?;
            let mut opts = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on -c shared_buffers=32MB -c max_connections=40",
                server.dir.display()
            );
            if let Some((cert, key)) = tls {
                use std::os::unix::fs::PermissionsExt;
                let (c, k) = (server.dir.join("server.crt"), server.dir.join("server.key"));
                for (path, text) in [(&c, cert), (&k, key)] {
                    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                    // The server refuses a key readable by others or owned by someone else.
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                    if let Some((uid, gid)) = as_user {
                        std::os::unix::fs::chown(path, Some(uid), Some(gid))
                            .map_err(|e| format!("chown {}: {e}", path.display()))?;
                    }
                }
                opts.push_str(&format!(
                    " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                    c.display(),
                    k.display()
                ));
            }
            server.run(
                "pg_ctl",
                &[
                    "-D",
                    &data.display().to_string(),
                    "-l",
                    &server.dir.join("server.log").display().to_string(),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )?;
            Ok(server)
        }

        fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
            let exe = self.bin.join(tool);
            let mut cmd = match &self.as_user {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--"]).arg(&exe);
                    c
                }
                None => Command::new(&exe),
            };
            let out = cmd
                .args(args)
                .current_dir(&self.dir)
                .output()
                .map_err(|e| format!("{}: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} {} failed ({}): {}{}",
                    exe.display(),
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        }

        /// The server's TCP port on 127.0.0.1.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// The server's directory (data, log, socket).
        pub fn dir(&self) -> &Path {
            &self.dir
        }

        /// A connection string for database `db` as the superuser `postgres`.
        pub fn url(&self, db: &str) -> String {
            format!(
                "host=127.0.0.1 port={} user=postgres dbname={db}",
                self.port
            )
        }

        /// Creates a fresh database named `name` and returns its connection string.
        pub fn create_db(&self, name: &str) -> Result<String, String> {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("database name '{name}': use letters, digits and _"));
            }
            let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
                .map_err(|e| format!("connect to the local server: {}", super::describe(&e)))?;
            // Two statements: CREATE DATABASE cannot run inside a (multi-statement) block.
            for sql in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("CREATE DATABASE {name}"),
            ] {
                c.batch_execute(&sql)
                    .map_err(|e| format!("{sql}: {}", super::describe(&e)))?;
            }
            Ok(self.url(name))
        }
    }

    impl Drop for LocalServer {
        fn drop(&mut self) {
            let data = self.dir.join("data").display().to_string();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A local server for tests, or `None` with the reason printed (a failure instead when
/// `QKDNET_REQUIRE_POSTGRES` is set, as `.ci/run` does after installing the server).
#[doc(hidden)]
pub fn test_server() -> Option<local::LocalServer> {
    test_server_from(local::LocalServer::start())
}

/// [`test_server`] for a server already started (or not) by the caller.
#[doc(hidden)]
pub fn test_server_from(started: Result<local::LocalServer, String>) -> Option<local::LocalServer> {
    match started {
        Ok(s) => Some(s),
        Err(e) => {
            assert!(
                std::env::var_os("QKDNET_REQUIRE_POSTGRES").is_none(),
                "QKDNET_REQUIRE_POSTGRES is set but no PostgreSQL server could be started: {e}"
            );
            eprintln!("SKIPPED: PostgreSQL key-store tests: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite;
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// TLS to the server: with the CA that issued the server's certificate the store
    /// connects over TLS (the server's own `pg_stat_ssl` says so) and works; with another
    /// CA the connection fails naming the certificate, and no store opens.
    #[test]
    fn postgres_store_over_tls_verifies_the_server() {
        use crate::KeyStore;
        let ca = crate::pki::Ca::new("qkdnet test PostgreSQL CA").unwrap();
        let cert = ca.server("postgres", &["127.0.0.1"]).unwrap();
        let Some(server) =
            test_server_from(local::LocalServer::start_tls(&cert.cert_pem, &cert.key_pem))
        else {
            return;
        };
        let url = server.create_db("tls").unwrap();
        let store = SqlStore::postgres_tls(&url, ca.cert_pem().as_bytes()).unwrap();
        let key = qkdnet_core::Bits::from_words(vec![0x0123_4567_89ab_cdef; 64], 4096);
        store.add_block("B", 1, &key, u64::MAX).unwrap();
        assert_eq!(store.accounting("B").unwrap().produced_bits, 4096);
        let mut plain = postgres::Client::connect(&url, NoTls).unwrap();
        let tls_backends: i64 = plain
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE s.ssl AND a.datname = 'tls'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(tls_backends, 1, "the store's session is not over TLS");
        drop(store);
        let other = crate::pki::Ca::new("another CA").unwrap();
        let err = SqlStore::postgres_tls(&url, other.cert_pem().as_bytes())
            .err()
            .expect("a server outside the CA was accepted")
            .to_string();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }

    /// The store suite on a PostgreSQL server the test starts on loopback: a database per
    /// store, reopened by reconnecting.
    #[test]
    fn postgres_store_passes_the_store_suite() {
        let Some(server) = test_server() else {
            return;
        };
        let server = std::sync::Arc::new(server);
        let open_for = |i: usize| -> suite::Opener {
            let server = std::sync::Arc::clone(&server);
            let made = RefCell::new(HashSet::new());
            Box::new(move |name: &str| {
                let db = format!("s{i}_{name}");
                let url = if made.borrow_mut().insert(db.clone()) {
                    server.create_db(&db).unwrap()
                } else {
                    server.url(&db)
                };
                SqlStore::postgres(&url).unwrap()
            })
        };
        suite::run_all(&open_for, 6);
    }

    #[test]
    fn a_second_owner_and_a_bad_address_get_clear_errors() {
        let Some(server) = test_server() else {
            return;
        };
        let url = server.create_db("owned").unwrap();
        let first = SqlStore::postgres(&url).unwrap();
        assert_eq!(first.backend(), "postgres");
        let t = Instant::now();
        let wait = Duration::from_millis(500);
        let err = SqlStore::postgres_waiting(&url, wait)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("another process owns the database"), "{err}");
        assert!(t.elapsed() >= wait);
        drop(first);
        // Once the owner is gone the database opens again.
        drop(SqlStore::postgres(&url).unwrap());
        let bad = format!(
            "host=127.0.0.1 port={} user=postgres dbname=nosuchdb",
            server.port()
        );
        let err = SqlStore::postgres(&bad).err().unwrap().to_string();
        assert!(
            err.contains("PostgreSQL") && err.contains("nosuchdb"),
            "{err}"
        );
    }
}
