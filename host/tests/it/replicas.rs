//! Two real `cofferdam serve` processes on one PostgreSQL database, as two
//! replicas behind a load balancer: a key acts once across both, a budget
//! cap holds across both, a replica killed mid-call leaves its key unknown
//! and escalated once (never re-run by the other), and a schedule slot runs
//! once however many runners tick.
//!
//! Each test makes its own database (see [`TestDb`]) and its own temp dir;
//! every child is killed when the test ends, however it ends
//! (`kill_on_drop`). Waits are bounded polls of the store, never a timed
//! sleep that races. `postgres.rs` proves the same guarantees between two
//! library hosts in one process; these prove them between processes.

use crate::common;
use crate::mcp::{error_class, params, wait_for_line, with_meta};
use crate::postgres::TestDb;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cofferdam::{
    BudgetCap, Host, KeyState, ManualWallClock, PostgresConfig, RunStatus, ScheduleSpec, ScopeId,
    StoreConfig, Tokens, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::json;

/// A test's directory, database and the config both replicas share but for
/// their data dirs.
struct Deployment {
    db: TestDb,
    dir: tempfile::TempDir,
}

/// One `cofferdam serve --http` process and an MCP session with it.
struct Replica {
    child: tokio::process::Child,
    session: RunningService<RoleClient, ()>,
}

/// Room for every racing call, so the bulkhead turns none away.
const ROOMY: &str = "max_concurrent = 64\nmax_queue = 64\nmax_wait_ms = 60000\n";

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("out")).expect("out dir");
        Self {
            db: TestDb::create(),
            dir,
        }
    }

    /// The file `sleepy` appends a line to each time it runs (both
    /// replicas mount the same directory).
    fn marks(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("out/acted"))
            .map_or(0, |text| text.lines().count())
    }

    /// Writes `NAME.toml` (data dir `data-NAME`) on the shared database with
    /// a `lease_ms` lease: `hello`, and `sleepy` as a side-effecting tool
    /// writing to the shared `out/`.
    fn config(&self, name: &str, lease_ms: u64) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "data_dir = \"data-{name}\"\n\
             allowed_roots = [\"out\"]\n\
             [store]\nurl = {url:?}\nlease_ms = {lease_ms}\n\
             [tools.hello]\ncomponent = {hello:?}\n\
             [tools.hello.pool]\n{ROOMY}\
             [tools.sleepy]\ncomponent = {sleepy:?}\neffect = \"side-effecting\"\n\
             [[tools.sleepy.mounts]]\nhost = \"out\"\nguest = \"/out\"\nmode = \"rw\"\n\
             [tools.sleepy.limits]\ntimeout_ms = 60000\n\
             [tools.sleepy.pool]\n{ROOMY}",
            url = self.db.url,
            hello = artifacts::HELLO,
            sleepy = artifacts::SLEEPY,
        );
        std::fs::write(&path, text).expect("config written");
        path
    }

    /// Starts two replicas, `a` and `b`, each with `args` after `serve`.
    async fn replicas(&self, lease_ms: u64, args: &[&str]) -> [Replica; 2] {
        let (a, b) = (self.config("a", lease_ms), self.config("b", lease_ms));
        let (a, b) = tokio::join!(Replica::start(&a, args), Replica::start(&b, args));
        [a, b]
    }

    /// A library host on the same database, to look at what the replicas
    /// stored.
    fn observer(&self) -> Host {
        common::builder()
            .store(StoreConfig::Postgres(PostgresConfig::new(&self.db.url)))
            .build()
            .expect("observer on postgres")
    }
}

impl Replica {
    async fn start(config: &Path, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--artifact-dir")
            .arg(common::shared_data_dir().join("artifacts"))
            .arg("--http")
            .arg("127.0.0.1:0")
            .args(args)
            .env_remove("COFFERDAM_LOG")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawns");
        let stderr = child.stderr.take().expect("stderr piped");
        let line = wait_for_line(stderr, "at http://").await;
        let addr = line.split('/').next().expect("address").to_owned();
        let transport = StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
        let session = ().serve(transport).await.expect("initializes");
        Self { child, session }
    }

    fn peer(&self) -> Peer<RoleClient> {
        self.session.peer().clone()
    }
}

/// A `sleepy` call that marks `out/acted` and sleeps `millis`, under `key`.
fn sleepy(millis: u64, key: &str) -> CallToolRequestParams {
    with_meta(
        params("sleepy", json!({"millis": millis, "mark": "/out/acted"})),
        json!({"idempotencyKey": key, "agentId": "a1"}),
    )
}

fn replayed(result: &CallToolResult) -> bool {
    result.meta.as_ref().expect("meta").0["replayed"] == true
}

/// Polls `done` every 20 ms until it holds; fails naming `what` after
/// `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_keyed_calls_over_two_served_replicas_act_once() {
    let deployment = Deployment::new();
    let replicas = deployment.replicas(15_000, &[]).await;
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let peer = replicas[i % 2].peer();
            tokio::spawn(async move {
                // A caller told "in progress" asks again, as a client should.
                let mut busy = 0;
                loop {
                    let result = peer
                        .call_tool(sleepy(300, "charge-card-7"))
                        .await
                        .expect("tools/call");
                    if result.is_error != Some(true) || error_class(&result) != "in-progress" {
                        return (result, busy);
                    }
                    busy += 1;
                    assert!(busy < 500, "still in progress after {busy} answers");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut busy = 0;
    for call in calls {
        let (result, asked_again) = call.await.expect("task");
        busy += asked_again;
        answers.push(result);
    }
    let ran: Vec<_> = answers.iter().filter(|r| !replayed(r)).collect();
    assert_eq!(ran.len(), 1, "one execution ({busy} in-progress answers)");
    assert_eq!(ran[0].is_error, Some(false), "{:?}", ran[0]);
    for answer in &answers {
        assert_eq!(answer.structured_content, ran[0].structured_content);
        assert_eq!(answer.is_error, Some(false));
    }
    assert_eq!(deployment.marks(), 1, "the side effect happened once");
    // Both replicas replay it later too.
    for replica in &replicas {
        let again = replica
            .peer()
            .call_tool(sleepy(300, "charge-card-7"))
            .await
            .expect("tools/call");
        assert!(replayed(&again));
        assert_eq!(again.structured_content, ran[0].structured_content);
    }
    assert_eq!(deployment.marks(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_calls_racing_a_cap_over_two_served_replicas_never_overspend_it() {
    let deployment = Deployment::new();
    let observer = deployment.observer();
    let scope = ScopeId::Agent("shared".into());
    let cap = 150;
    observer
        .budgets()
        .set_cap(&scope, BudgetCap::new(Tokens(cap)))
        .await
        .expect("cap");
    let replicas = deployment.replicas(15_000, &[]).await;
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let peer = replicas[i % 2].peer();
            let call = with_meta(
                params("hello", json!({"name": format!("caller {i}")})),
                json!({"agentId": "shared"}),
            );
            tokio::spawn(async move { peer.call_tool(call).await.expect("tools/call") })
        })
        .collect();
    let (mut paid, mut served, mut refused) = (0, 0, 0);
    for call in calls {
        let result = call.await.expect("task");
        if result.is_error == Some(true) {
            assert_eq!(error_class(&result), "budget-exhausted", "{result:?}");
            refused += 1;
        } else {
            paid += result.meta.as_ref().expect("meta").0["tokens"]
                .as_u64()
                .expect("tokens");
            served += 1;
        }
    }
    assert!(
        served > 0 && refused > 0,
        "the cap must let some through and bite: {served} served, {refused} refused"
    );
    let status = observer
        .budgets()
        .get(&scope)
        .expect("get")
        .expect("capped");
    assert!(status.spent.0 <= cap, "spent {:?} of {cap}", status.spent);
    assert!(paid <= status.spent.0, "every served call was charged");
    assert_eq!(status.reserved, Tokens(0), "no reservation is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_call_leaves_its_key_unknown_and_the_other_never_reruns_it() {
    let deployment = Deployment::new();
    let observer = deployment.observer();
    let [mut doomed, survivor] = deployment.replicas(600, &[]).await;
    let peer = doomed.peer();
    let call = tokio::spawn(async move { peer.call_tool(sleepy(30_000, "wire-funds")).await });
    wait_until("the tool acted", Duration::from_secs(20), || {
        deployment.marks() == 1
    })
    .await;
    let key_state = || {
        observer
            .journal_entries()
            .expect("journal")
            .into_iter()
            .find(|e| e.key == "wire-funds")
            .map(|e| e.state)
    };
    assert!(
        matches!(key_state(), Some(KeyState::InProgress { .. })),
        "the doomed replica holds the key: {:?}",
        key_state()
    );
    doomed.child.kill().await.expect("SIGKILL");
    // No answer will come (the client would keep reconnecting): give up.
    call.abort();
    drop(doomed);

    wait_until(
        "the dead replica's key became unknown",
        Duration::from_secs(15),
        || matches!(key_state(), Some(KeyState::Unknown { .. })),
    )
    .await;
    let escalated = || {
        observer
            .escalations()
            .list(false)
            .expect("escalations")
            .into_iter()
            .filter(|e| e.key.as_ref().is_some_and(|k| k.key == "wire-funds"))
            .count()
    };
    assert_eq!(escalated(), 1);

    // Asked again with the key, the survivor does not run it.
    for _ in 0..2 {
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            survivor.peer().call_tool(sleepy(30_000, "wire-funds")),
        )
        .await
        .expect("the survivor answers at once, without running it")
        .expect("tools/call");
        assert_eq!(error_class(&answer), "unknown-outcome", "{answer:?}");
    }
    assert_eq!(deployment.marks(), 1, "the side effect happened once");
    assert_eq!(escalated(), 1, "escalated once, however often asked");
}

/// Sets the time a `--clock-file` reads (atomically: no half-written file).
fn set_clock(file: &Path, now: &str) {
    let fresh = file.with_extension("new");
    std::fs::write(&fresh, now).expect("write clock");
    std::fs::rename(&fresh, file).expect("move clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_served_runners_on_one_simulated_clock_run_each_slot_once() {
    let deployment = Deployment::new();
    let start = "2026-11-25T12:00:30Z";
    let clock_file = deployment.dir.path().join("now");
    set_clock(&clock_file, start);
    let observer = common::builder()
        .store(StoreConfig::Postgres(PostgresConfig::new(
            &deployment.db.url,
        )))
        .wall_clock(std::sync::Arc::new(ManualWallClock::new(
            start.parse().expect("time"),
        )))
        .build()
        .expect("observer on postgres");
    common::load(&observer, artifacts::HELLO, ToolPolicy::default()).await;
    observer
        .schedules()
        .create(ScheduleSpec::tool(
            "hourly",
            "ops",
            "0 * * * *",
            "hello",
            json!({"name": "cron"}),
        ))
        .await
        .expect("create");
    let clock_arg = clock_file.to_str().expect("utf-8 path");
    let _replicas = deployment
        .replicas(15_000, &["--clock-file", clock_arg, "--tick-every", "10ms"])
        .await;
    let finished = || {
        let runs = observer.schedules().history("hourly").expect("history");
        let done = runs.iter().filter(|r| r.status != RunStatus::Running);
        done.count()
    };
    for (hour, runs) in [(13, 1), (14, 2), (15, 3)] {
        set_clock(&clock_file, &format!("2026-11-25T{hour}:00:05Z"));
        wait_until(
            &format!("the {hour}:00 slot ran"),
            Duration::from_secs(20),
            || finished() >= runs,
        )
        .await;
    }
    let history = observer.schedules().history("hourly").expect("history");
    let mut slots: Vec<String> = history.iter().map(|r| r.slot.to_string()).collect();
    slots.sort();
    assert_eq!(
        slots,
        [
            "2026-11-25T13:00:00Z",
            "2026-11-25T14:00:00Z",
            "2026-11-25T15:00:00Z"
        ],
        "{history:?}"
    );
    for run in &history {
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    assert_eq!(observer.schedules().get("hourly").expect("get").runs, 3);
}
