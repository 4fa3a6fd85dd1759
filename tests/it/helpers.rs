//! One harness for every integration test: `TestApp::builder().spawn()` starts the real `Application`
//! on port 0, on a fresh migrated Postgres database, with Redis, and a wiremock provider in front.
//! Tests check what a user would see: rows, Redis keys, provider requests and API responses.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use actix_web::http::StatusCode;
use deadpool_redis::redis;
use insider_messaging::{
    config::Settings,
    dispatch::Pipeline,
    domain::{MessageContent, NewMessage, PhoneNumber, Schedule},
    startup::Application,
    store::{Campaigns, Database, InboundLog, MessageStore, OptOutList, ReceiptStore},
};
use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool, postgres::PgPoolOptions};
use tokio::sync::oneshot;
use uuid::Uuid;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

pub const WEBHOOK_PATH: &str = "/hook";
pub const AUTH_KEY: &str = "test-auth-key";
/// Generous: a wait that times out is a failure, and CI machines are slow.
pub const WAIT: Duration = Duration::from_secs(20);

/// The contract tests of a store seam, each run on both backends: `<module>::postgres::<name>` on a fresh
/// Postgres database and `<module>::sqlite::<name>` on a fresh SQLite file. A test is handed the
/// `&TestDatabase`, or what `|database| <expression>` makes of it.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        contract!(|database| &database; $($test),*);
    };
    (|$database:ident| $argument:expr; $($test:ident),* $(,)?) => {
        contract!(@on postgres, create, |$database| $argument; $($test),*);
        contract!(@on sqlite, sqlite, |$database| $argument; $($test),*);
    };
    (@on $backend:ident, $open:ident, |$database:ident| $argument:expr; $($test:ident),*) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let $database = crate::helpers::TestDatabase::$open().await;
                    super::$test($argument).await;
                }
            )*
        }
    };
}

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A database of its own for one test (or for the instances of one test), already migrated, and
/// removed when the last handle on it is dropped.
#[derive(Clone)]
pub struct TestDatabase {
    pub url: String,
    pub store: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    /// Every seam, for tests of the outbox (`Database::write_status_events`).
    pub all: Arc<dyn Database>,
    pub opt_outs: Arc<dyn OptOutList>,
    pub campaigns: Arc<dyn Campaigns>,
    pub inbound: Arc<dyn InboundLog>,
    pool: Pool,
    _cleanup: Arc<Cleanup>,
}

#[derive(Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Drops the test's database (or deletes its file) once no test code holds it any more.
enum Cleanup {
    Postgres { name: String },
    Sqlite { path: PathBuf },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Postgres { name } => {
                // Drop runs outside any runtime the test may still be inside: use a thread of its own.
                let name = name.clone();
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime.block_on(async {
                        let admin = PgPool::connect(&admin_database_url()).await.ok()?;
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&admin)
                        .await
                        .ok()
                    })
                });
                let _ = dropped.join();
            }
        }
    }
}

impl TestDatabase {
    /// A fresh Postgres database.
    pub async fn create() -> Self {
        let admin_url = admin_database_url();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("admin connection");
        let name = format!("it_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let cleanup = Arc::new(Cleanup::Postgres { name: name.clone() });
        let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
        let url = format!("{base}/{name}");
        let store = insider_messaging::startup::migrate(&url)
            .await
            .expect("migrations apply");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("test pool");
        Self {
            url,
            receipts: store.clone(),
            all: store.clone(),
            opt_outs: Arc::clone(&store) as Arc<dyn OptOutList>,
            campaigns: Arc::clone(&store) as Arc<dyn Campaigns>,
            inbound: Arc::clone(&store) as Arc<dyn InboundLog>,
            store,
            pool: Pool::Postgres(pool),
            _cleanup: cleanup,
        }
    }

    /// A fresh SQLite file.
    pub async fn sqlite() -> Self {
        Self::sqlite_file(std::env::temp_dir().join(format!("insider-it-{}.db", Uuid::new_v4().simple()))).await
    }

    /// The SQLite file at `path`, migrated (a test may have filled it with an older schema first); it is
    /// deleted with the last clone.
    pub async fn sqlite_file(path: std::path::PathBuf) -> Self {
        let cleanup = Arc::new(Cleanup::Sqlite { path: path.clone() });
        let url = format!("sqlite://{}", path.display());
        let store = insider_messaging::startup::migrate(&url)
            .await
            .expect("migrations apply");
        let pool = SqlitePool::connect(&url).await.expect("test pool");
        Self {
            url,
            receipts: store.clone(),
            all: store.clone(),
            opt_outs: Arc::clone(&store) as Arc<dyn OptOutList>,
            campaigns: Arc::clone(&store) as Arc<dyn Campaigns>,
            inbound: Arc::clone(&store) as Arc<dyn InboundLog>,
            store,
            pool: Pool::Sqlite(pool),
            _cleanup: cleanup,
        }
    }

    /// The Postgres pool, for statements only Postgres tests run.
    pub fn pg(&self) -> &PgPool {
        match &self.pool {
            Pool::Postgres(pool) => pool,
            Pool::Sqlite(_) => panic!("this helper needs a Postgres test database"),
        }
    }

    /// Runs `lock` (a `LOCK TABLE`) in a transaction of its own, held until it is rolled back or dropped:
    /// the statements that need a conflicting lock wait, as on a stuck database.
    pub async fn hold_lock(&self, lock: &'static str) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut hold = self.pg().begin().await.unwrap();
        sqlx::query(lock).execute(&mut *hold).await.unwrap();
        hold
    }

    /// Runs plain SQL the way another system would: `postgres` or `sqlite`, whichever this database is.
    pub async fn execute(&self, postgres: &str, sqlite: &str) -> Result<u64, sqlx::Error> {
        match &self.pool {
            Pool::Postgres(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(postgres.to_owned()))
                .execute(pool)
                .await
                .map(|done| done.rows_affected()),
            Pool::Sqlite(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite.to_owned()))
                .execute(pool)
                .await
                .map(|done| done.rows_affected()),
        }
    }

    /// Enqueues the way another system would: plain SQL, defaults for everything else.
    pub async fn insert_raw(&self, phone_number: &str, content: &str) -> Uuid {
        sqlx::query_scalar("INSERT INTO messages (phone_number, content) VALUES ($1, $2) RETURNING id")
            .bind(phone_number)
            .bind(content)
            .fetch_one(self.pg())
            .await
            .expect("insert message")
    }

    /// `n` valid messages enqueued in order through the store, oldest first (any backend).
    pub async fn insert_many(&self, n: usize) -> Vec<Uuid> {
        let messages: Vec<NewMessage> = (0..n)
            .map(|i| NewMessage {
                to: PhoneNumber::parse(&format!("+9055500{i:05}")).expect("valid number"),
                content: MessageContent::parse(&format!("message {i}"), 160).expect("valid content"),
                when: Schedule::default(),
            })
            .collect();
        let stored = self.store.insert_many(&messages).await.expect("insert messages");
        stored.into_iter().map(|m| m.id).collect()
    }

    pub async fn row(&self, id: Uuid) -> Row {
        sqlx::query_as(
            "SELECT status, attempts, provider_message_id, sent_at, last_error, lease_token, next_attempt_at
               FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_one(self.pg())
        .await
        .expect("read message row")
    }

    /// Messages in `status` (any backend).
    pub async fn count_with_status(&self, status: &str) -> i64 {
        assert!(status.chars().all(|c| c.is_ascii_lowercase()), "a status name");
        let sql = format!("SELECT count(*) FROM messages WHERE status = '{status}'");
        match &self.pool {
            Pool::Postgres(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await,
            Pool::Sqlite(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await,
        }
        .expect("count messages")
    }

    /// Makes a pending row due now, so a test need not wait out a retry delay.
    pub async fn make_due(&self, id: Uuid) {
        sqlx::query("UPDATE messages SET next_attempt_at = now() WHERE id = $1 AND status = 'pending'")
            .bind(id)
            .execute(self.pg())
            .await
            .expect("make message due");
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub status: String,
    pub attempts: i32,
    pub provider_message_id: Option<String>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub lease_token: Option<Uuid>,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
}

/// Answers like the contract's provider: 202 and a fresh `messageId` per request.
pub struct AcceptWithFreshId {
    pub delay: Duration,
}

impl Respond for AcceptWithFreshId {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(202)
            .set_body_json(json!({"message": "Accepted", "messageId": Uuid::new_v4().to_string()}))
            .set_delay(self.delay)
    }
}

/// Mounts the contract's provider on `server`.
pub async fn accept_all(server: &MockServer, delay: Duration) {
    Mock::given(matchers::method("POST"))
        .and(matchers::path(WEBHOOK_PATH))
        .respond_with(AcceptWithFreshId { delay })
        .mount(server)
        .await;
}

/// Requests the provider received, counted per `Idempotency-Key`.
pub async fn posts_per_key(server: &MockServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in server.received_requests().await.unwrap_or_default() {
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_owned();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

pub struct TestAppBuilder {
    vars: HashMap<&'static str, String>,
    database: Option<TestDatabase>,
    provider: Option<Arc<MockServer>>,
}

impl TestAppBuilder {
    /// Sets one environment variable of the app (`INTERVAL`, `BATCH_SIZE`, ...).
    pub fn var(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.vars.insert(name, value.into());
        self
    }

    pub fn without(mut self, name: &'static str) -> Self {
        self.vars.remove(name);
        self
    }

    /// Another instance on the same database (as a second replica would be).
    pub fn database(mut self, database: &TestDatabase) -> Self {
        self.database = Some(database.clone());
        self
    }

    /// The same provider as another instance.
    pub fn provider(mut self, provider: &Arc<MockServer>) -> Self {
        self.provider = Some(Arc::clone(provider));
        self
    }

    pub async fn spawn(self) -> TestApp {
        insider_messaging::telemetry::init();
        let database = match self.database {
            Some(database) => database,
            None => TestDatabase::create().await,
        };
        let provider = match self.provider {
            Some(provider) => provider,
            None => {
                let server = MockServer::start().await;
                accept_all(&server, Duration::ZERO).await;
                Arc::new(server)
            }
        };
        let mut vars = self.vars;
        vars.entry("DATABASE_URL").or_insert_with(|| database.url.clone());
        vars.entry("WEBHOOK_URL")
            .or_insert_with(|| format!("{}{WEBHOOK_PATH}", provider.uri()));
        let settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("test settings are valid");
        // The application runs on a thread and runtime of its own, as it would in its own process, and
        // `Drop` shuts it down there. Left on the test's runtime, it would be torn down with that runtime
        // mid-statement, and sqlx panics when a connection is given back with no runtime to spawn on.
        let (built, ready) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let app = Application::build(settings).await.expect("application builds");
                let _ = built.send((app.port(), app.pipeline().clone()));
                app.run_until(async move {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let (port, pipeline) = ready.await.expect("application builds");
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            database,
            provider,
            pipeline,
            api: awc::Client::builder().timeout(Duration::from_secs(30)).finish(),
            stop: Some(stop),
            running: Some(running),
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub database: TestDatabase,
    pub provider: Arc<MockServer>,
    pub pipeline: Pipeline,
    api: awc::Client,
    stop: Option<oneshot::Sender<()>>,
    running: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    /// A test that ends without `shutdown` stops its application here, as SIGTERM would.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            let _ = running.join();
        }
    }
}

impl TestApp {
    /// Manual ticks only (a long `INTERVAL`, no autostart), `BATCH_SIZE=2`, Redis on.
    pub fn builder() -> TestAppBuilder {
        let vars = HashMap::from([
            ("REDIS_URL", redis_url()),
            ("WEBHOOK_AUTH_KEY", AUTH_KEY.to_owned()),
            ("INTERVAL", "1h".to_owned()),
            ("BATCH_SIZE", "2".to_owned()),
            ("AUTOSTART", "false".to_owned()),
            ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("LEASE", "30s".to_owned()),
            ("WEBHOOK_TIMEOUT", "5s".to_owned()),
            ("SHUTDOWN_GRACE", "10s".to_owned()),
        ]);
        TestAppBuilder {
            vars,
            database: None,
            provider: None,
        }
    }

    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    /// Runs one tick and waits until everything it claimed is recorded.
    pub async fn tick_and_settle(&self) -> insider_messaging::dispatch::messages::TickReport {
        let report = self.pipeline.tick_now().await.expect("tick");
        self.settle().await;
        report
    }

    /// Waits until no claim of this instance is in flight.
    pub async fn settle(&self) {
        wait_until("sends in flight are recorded", || async {
            self.pipeline.in_flight().await.expect("in flight") == 0
        })
        .await;
    }

    /// Signals shutdown (as SIGTERM does) and waits for the application to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.running.take() {
            Some(running) => actix_rt::task::spawn_blocking(move || running.join())
                .await
                .expect("joining the application's thread")
                .expect("the application's thread"),
            None => Ok(()),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.get_text(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let mut response = self
            .api
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET");
        let body = response.body().limit(8 << 20).await.expect("body");
        (response.status(), String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let mut response = self
            .api
            .post(format!("{}{path}", self.address))
            .send_json(body)
            .await
            .expect("POST");
        let body = response.body().limit(1 << 20).await.expect("body");
        (response.status(), serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// POSTs raw bytes with the given content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let mut response = self
            .api
            .post(format!("{}{path}", self.address))
            .insert_header(("content-type", content_type))
            .send_body(body)
            .await
            .expect("POST");
        let body = response.body().limit(1 << 20).await.expect("body");
        (response.status(), serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// `method path` with these headers and, when given, a body with its content type (`None` sends none).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(Option<&str>, &[u8])>,
    ) -> (StatusCode, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.api.request(method, format!("{}{path}", self.address));
        for &header in headers {
            request = request.insert_header(header);
        }
        let mut response = match body {
            Some((content_type, bytes)) => {
                if let Some(content_type) = content_type {
                    request = request.insert_header(("content-type", content_type));
                }
                request.send_body(bytes.to_vec()).await
            }
            None => request.send().await,
        }
        .expect("a response");
        let body = response.body().limit(1 << 20).await.expect("body");
        (response.status(), serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub async fn post_start(&self) -> Value {
        let (status, body) = self.post_json("/scheduler/start", &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn post_stop(&self) -> Value {
        let (status, body) = self.post_json("/scheduler/stop", &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Every page of `GET /messages/sent`, following `next_cursor`.
    pub async fn all_sent(&self, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/messages/sent?limit={limit}&cursor={c}"),
                None => format!("/messages/sent?limit={limit}"),
            };
            let (status, page) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let page_items = page["items"].as_array().expect("items").clone();
            assert!(page_items.len() <= limit);
            items.extend(page_items);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    /// One series of `GET /metrics`, e.g. `sends_total{outcome="accepted"}`; fails the test when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get_text("/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }
}

pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("redis url");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// The message's cache entry in Redis (`cache::key`), parsed.
pub async fn cached(id: Uuid) -> Option<Value> {
    let mut conn = redis_connection().await;
    let value: Option<String> = redis::cmd("GET")
        .arg(insider_messaging::cache::key(id))
        .query_async(&mut conn)
        .await
        .expect("redis GET");
    value.map(|v| serde_json::from_str(&v).expect("cached JSON"))
}

pub async fn ttl(id: Uuid) -> i64 {
    let mut conn = redis_connection().await;
    redis::cmd("TTL")
        .arg(insider_messaging::cache::key(id))
        .query_async(&mut conn)
        .await
        .expect("redis TTL")
}

/// Polls `condition` until it holds; fails the test after `WAIT`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it finds something, and returns it; fails the test after `WAIT`.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A timestamp field of a JSON answer (`last_tick_at`, `last_seen`), when it is set.
pub fn timestamp(field: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    let parsed = chrono::DateTime::parse_from_rfc3339(field.as_str()?).ok()?;
    Some(parsed.with_timezone(&chrono::Utc))
}

pub fn distinct(ids: &[Uuid]) -> HashSet<Uuid> {
    ids.iter().copied().collect()
}

/// The lines `output` (a child's stdout or stderr) writes, as it writes them, read on a thread of their
/// own until the receiver is dropped.
pub fn lines_of(output: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}
