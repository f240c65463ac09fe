//! Notifications of background runs: a run's end is POSTed to a loopback
//! webhook, signed with HMAC-SHA256 (checked here independently), once; a
//! receiver that is down is retried with backoff until it answers; an event
//! written before a crash is delivered after the restart, and one whose
//! deliverer died mid-send is sent again when its lease ends; a webhook to a
//! private or metadata address that is not allowlisted is refused like any
//! outbound call; two replicas delivering from one PostgreSQL outbox send
//! each event once.

use crate::common;
use crate::postgres::TestDb;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use cofferdam::{
    Delivery, EventKind, Host, HostBuilder, ManualWallClock, PostgresConfig, Prices,
    ScheduleConfig, ScheduleSpec, StoreConfig, Timestamp, ToolPolicy, WallClock as _, Webhook,
};
use cofferdam_test_artifacts as artifacts;
use cofferdam_test_artifacts::upstream::{Reply, Request, Upstream};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "test-secret-of-32-bytes-exactly!";

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

/// The JSON body of a request.
fn json(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

/// A webhook receiver on loopback (the tests' upstream server) that records
/// every request and answers with the status it is told (200 by default).
struct Receiver {
    upstream: Upstream,
    status: Arc<AtomicU16>,
}

impl Receiver {
    fn start() -> Self {
        Self::on("127.0.0.1:0".parse().unwrap())
    }

    fn on(addr: SocketAddr) -> Self {
        let status = Arc::new(AtomicU16::new(200));
        let answer = Arc::clone(&status);
        let upstream = Upstream::start_on(addr, move |_, _| {
            Reply::status(answer.load(Ordering::SeqCst))
        });
        Self { upstream, status }
    }

    fn url(&self) -> String {
        format!("{}/hooks/cofferdam", self.upstream.origin())
    }

    fn got(&self) -> Vec<Request> {
        self.upstream.received()
    }
}

/// Checks `X-Cofferdam-Signature` the way a receiver would.
fn signature_is_valid(received: &Request) -> bool {
    let header = received.header("x-cofferdam-signature");
    let Some((t, v1)) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    mac.verify_slice(&hex::decode(v1).unwrap_or_default())
        .is_ok()
}

fn hook(url: &str) -> Webhook {
    Webhook::new(url, SECRET).allow_private("127.0.0.0/8")
}

fn builder(clock: &Arc<ManualWallClock>) -> HostBuilder {
    common::builder()
        .wall_clock(clock.clone())
        .jitter_seed(7)
        .prices(Prices {
            default: Some("0.002 USD".parse().unwrap()),
            ..Prices::default()
        })
}

fn daily(name: &str, tool: &str, input: Value) -> ScheduleSpec {
    ScheduleSpec {
        notify: vec!["ops".into()],
        ..ScheduleSpec::tool(name, "ops", "0 9 * * *", tool, input)
    }
}

/// Runs every schedule due at 09:00 on `day`.
async fn run_day(host: &Host, clock: &ManualWallClock, day: &str) {
    clock.set(at(&format!("{day}T09:00:00Z")));
    let runs = host
        .schedules()
        .runner()
        .tick()
        .await
        .expect("tick")
        .finished()
        .await;
    assert!(!runs.is_empty(), "nothing ran on {day}");
}

#[tokio::test]
async fn a_run_end_is_posted_once_signed_with_its_output_and_cost() {
    let receiver = Receiver::start();
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = builder(&clock)
        .notify("ops", hook(&receiver.url()))
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let schedules = host.schedules();
    schedules
        .create(daily("greet", "hello", json!({"name": "Ada"})))
        .await
        .expect("schedule");
    run_day(&host, &clock, "2026-11-30").await;

    // Written with the run's end, not sent yet.
    let outbox = schedules.notifications().expect("outbox");
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(outbox[0].state, Delivery::Pending);
    assert!(receiver.got().is_empty());

    let notifier = schedules.notifier();
    let pass = notifier.deliver_due().await.expect("deliver");
    assert_eq!(pass.delivered.len(), 1, "{pass:?}");
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert!(signature_is_valid(request), "bad signature: {request:?}");
    let event = json(request);
    assert_eq!(event["type"], "run.succeeded");
    assert_eq!(event["schedule"], "greet");
    assert_eq!(event["owner"], "ops");
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["output"]["greeting"], "Hello, Ada!");
    let tokens = event["tokens"].as_u64().expect("tokens");
    assert!(tokens > 0, "{event}");
    assert!(
        event["cost"].as_str().expect("cost").ends_with(" USD"),
        "{event}"
    );
    assert_eq!(request.header("x-cofferdam-event"), "run.succeeded");
    assert_eq!(
        request.header("x-cofferdam-event-id"),
        event["id"].as_str().unwrap()
    );
    assert_eq!(request.header("content-type"), "application/json");

    // A tampered body does not verify.
    let mut forged = request.clone();
    forged.body = forged.body.replace_range_copy(b"Ada", b"Eve");
    assert!(!signature_is_valid(&forged));

    // Delivered is delivered: later passes send nothing.
    clock.advance(Duration::from_secs(3600));
    let again = notifier.deliver_due().await.expect("deliver");
    assert_eq!(again, cofferdam::Deliveries::default());
    assert_eq!(receiver.got().len(), 1);
    let outbox = schedules.notifications().expect("outbox");
    assert_eq!(outbox[0].state, Delivery::Delivered);
    assert_eq!(outbox[0].attempts, 1);
}

/// `replace_range_copy` for a byte vector: the first `from` replaced by `to`.
trait Replace {
    fn replace_range_copy(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl Replace for Vec<u8> {
    fn replace_range_copy(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("present");
        [&self[..at], to, &self[at + from.len()..]].concat()
    }
}

#[tokio::test]
async fn a_failing_run_that_pauses_its_schedule_raises_failed_paused_and_escalated() {
    let receiver = Receiver::start();
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = builder(&clock)
        .schedule_config(ScheduleConfig {
            failures_before_pause: 1,
            ..ScheduleConfig::default()
        })
        .notify(
            "ops",
            hook(&receiver.url()).events([
                EventKind::RunFailed,
                EventKind::SchedulePaused,
                EventKind::RunEscalated,
            ]),
        )
        .build()
        .expect("host");
    common::load(
        &host,
        artifacts::TRAP,
        common::policy_with(Default::default()),
    )
    .await;
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let schedules = host.schedules();
    schedules
        .create(daily("broken", "trap", json!({})))
        .await
        .expect("schedule");
    // A sink that hears only failures hears nothing of a good run.
    schedules
        .create(daily("fine", "hello", json!({"name": "x"})))
        .await
        .expect("schedule");
    run_day(&host, &clock, "2026-11-30").await;
    let pass = schedules.notifier().deliver_due().await.expect("deliver");
    assert_eq!(pass.delivered.len(), 3, "{pass:?}");
    let mut kinds: Vec<String> = receiver
        .got()
        .iter()
        .map(|r| json(r)["type"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["run.escalated", "run.failed", "schedule.paused"]);
    for request in receiver.got() {
        let event = json(&request);
        assert_eq!(event["schedule"], "broken");
        assert!(signature_is_valid(&request));
        match event["type"].as_str().unwrap() {
            "run.escalated" => assert!(event["escalation"].as_u64().is_some(), "{event}"),
            "schedule.paused" => assert!(event["paused"].as_str().is_some(), "{event}"),
            _ => assert_eq!(event["status"], "failed", "{event}"),
        }
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_is_retried_with_backoff_until_it_answers() {
    // A port with nothing listening: connections are refused.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr")
    };
    let url = format!("http://{addr}/hook");
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = builder(&clock)
        .notify("ops", hook(&url))
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let schedules = host.schedules();
    schedules
        .create(daily("greet", "hello", json!({"name": "Ada"})))
        .await
        .expect("schedule");
    run_day(&host, &clock, "2026-11-30").await;
    let notifier = schedules.notifier();

    let down = notifier.deliver_due().await.expect("deliver");
    assert_eq!(down.retrying.len(), 1, "{down:?}");
    assert!(down.retrying[0].2.contains("cannot connect"), "{down:?}");
    // Not due again until its backoff has passed.
    let early = notifier.deliver_due().await.expect("deliver");
    assert_eq!(early, cofferdam::Deliveries::default());
    let entry = &schedules.notifications().expect("outbox")[0];
    assert!(entry.next > clock.now(), "{entry:?}");

    // Up again, answering 503 first, then 200.
    let receiver = Receiver::on(addr);
    receiver.status.store(503, Ordering::SeqCst);
    clock.advance(Duration::from_secs(3600));
    let busy = notifier.deliver_due().await.expect("deliver");
    assert_eq!(busy.retrying.len(), 1, "{busy:?}");
    assert!(busy.retrying[0].2.contains("503"), "{busy:?}");
    receiver.status.store(200, Ordering::SeqCst);
    clock.advance(Duration::from_secs(3600));
    let done = notifier.deliver_due().await.expect("deliver");
    assert_eq!(done.delivered.len(), 1, "{done:?}");

    let got = receiver.got();
    assert_eq!(got.len(), 2, "one 503 and one 200");
    assert_eq!(
        got[0].header("x-cofferdam-event-id"),
        got[1].header("x-cofferdam-event-id")
    );
    assert_eq!(got[0].header("x-cofferdam-delivery-attempt"), "2");
    assert_eq!(got[1].header("x-cofferdam-delivery-attempt"), "3");
    let entry = &schedules.notifications().expect("outbox")[0];
    assert_eq!((entry.state, entry.attempts), (Delivery::Delivered, 3));
    common::assert_host_still_serves(&host).await;
}

#[tokio::test]
async fn an_event_outlives_a_crash_and_a_deliverer_dying_mid_send_is_covered_by_its_lease() {
    let receiver = Receiver::start();
    let data = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let try_open = || {
        builder(&clock)
            .data_dir(data.path())
            .notify("ops", hook(&receiver.url()))
            .build()
    };
    let open = || try_open().expect("host");
    {
        // The run ends and the process goes away before any delivery.
        let host = open();
        common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
        host.schedules()
            .create(daily("greet", "hello", json!({"name": "Ada"})))
            .await
            .expect("schedule");
        run_day(&host, &clock, "2026-11-30").await;
    }
    assert!(receiver.got().is_empty());
    {
        // After the restart: delivered once, however many passes run.
        let host = open();
        let notifier = host.schedules().notifier();
        assert_eq!(
            notifier
                .deliver_due()
                .await
                .expect("deliver")
                .delivered
                .len(),
            1
        );
        assert!(
            notifier
                .deliver_due()
                .await
                .expect("deliver")
                .delivered
                .is_empty()
        );
        assert_eq!(receiver.got().len(), 1);
        common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
        // The next day's event: its deliverer dies while the receiver holds
        // the request (the receiver answers only when told).
        receiver.status.store(200, Ordering::SeqCst);
        run_day(&host, &clock, "2026-12-01").await;
    }
    // A receiver that reads the request and holds it for an hour.
    let stalled = Upstream::start(|_, _| Reply {
        delay: Duration::from_secs(3600),
        ..Reply::status(200)
    });
    {
        let host = builder(&clock)
            .data_dir(data.path())
            .notify("ops", hook(&stalled.origin()))
            .build()
            .expect("host");
        let notifier = host.schedules().notifier();
        let pass = tokio::spawn(async move { notifier.deliver_due().await });
        wait_until("the deliverer sends", || stalled.requests() >= 1).await;
        pass.abort();
        let _ = pass.await;
    }
    {
        // The dead deliverer's host lets go of the file as its tasks end.
        let host = open_when_free(&try_open).await;
        let notifier = host.schedules().notifier();
        // Still leased to the dead deliverer: nobody sends it yet.
        assert!(
            notifier
                .deliver_due()
                .await
                .expect("deliver")
                .delivered
                .is_empty()
        );
        clock.advance(Duration::from_secs(121));
        let pass = notifier.deliver_due().await.expect("deliver");
        assert_eq!(pass.delivered.len(), 1, "{pass:?}");
        let got = receiver.got();
        assert_eq!(
            got.len(),
            2,
            "each day's event once at the receiver that answered"
        );
        assert_ne!(
            got[0].header("x-cofferdam-event-id"),
            got[1].header("x-cofferdam-event-id")
        );
        assert_eq!(got[1].header("x-cofferdam-delivery-attempt"), "2");
    }
}

/// `open()` once the file is no longer held by a dropped host's tasks
/// (bounded poll).
async fn open_when_free(open: &dyn Fn() -> Result<Host, cofferdam::BuildError>) -> Host {
    for _ in 0..200 {
        if let Ok(host) = open() {
            return host;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    open().expect("host")
}

#[tokio::test]
async fn a_webhook_to_a_private_or_metadata_address_not_allowlisted_is_refused() {
    let receiver = Receiver::start();
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let host = builder(&clock)
        .notify("ops", Webhook::new(receiver.url(), SECRET))
        .notify(
            "meta",
            Webhook::new("http://169.254.169.254/latest/meta-data/", SECRET),
        )
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let schedules = host.schedules();
    schedules
        .create(ScheduleSpec {
            notify: vec!["ops".into(), "meta".into()],
            ..daily("greet", "hello", json!({"name": "Ada"}))
        })
        .await
        .expect("schedule");
    run_day(&host, &clock, "2026-11-30").await;
    let pass = schedules.notifier().deliver_due().await.expect("deliver");
    assert_eq!(pass.dead.len(), 2, "{pass:?}");
    for (_, _, why) in &pass.dead {
        assert!(why.contains("non-public"), "{why}");
    }
    assert!(
        receiver.got().is_empty(),
        "nothing reached the private address"
    );
    // Dead is final: not retried, shown with its reason.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(
        schedules.notifier().deliver_due().await.expect("deliver"),
        cofferdam::Deliveries::default()
    );
    let outbox = schedules.notifications().expect("outbox");
    assert!(
        outbox
            .iter()
            .all(|e| e.state == Delivery::Dead && e.attempts == 1)
    );
}

#[tokio::test]
async fn sinks_and_schedules_naming_them_are_checked() {
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let err = builder(&clock)
        .notify("ops", Webhook::new("ftp://example.com/", SECRET))
        .build()
        .err()
        .expect("refused");
    assert!(err.to_string().contains("`ops`"), "{err}");
    let err = builder(&clock)
        .notify("ops", Webhook::new("https://example.com/", "short"))
        .build()
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("ops"), "{err}");
    let host = builder(&clock)
        .notify("ops", hook("http://127.0.0.1:9/"))
        .build()
        .expect("host");
    common::load(&host, artifacts::HELLO, ToolPolicy::default()).await;
    let err = host
        .schedules()
        .create(ScheduleSpec {
            notify: vec!["pager".into()],
            ..daily("greet", "hello", json!({}))
        })
        .await
        .expect_err("unknown sink");
    assert!(
        matches!(&err, cofferdam::ScheduleError::UnknownSink { sink, .. } if sink == "pager"),
        "{err}"
    );
    // A config naming an unset secret variable says which.
    let config: cofferdam::HostConfig = toml::from_str(
        r#"
        [notify.ops]
        url = "https://hooks.example/x"
        secret_env = "COFFERDAM_TEST_SECRET_THAT_IS_NOT_SET"
        "#,
    )
    .expect("config");
    let problems = config.check();
    assert!(
        problems
            .iter()
            .any(|p| p.at == "notify.ops"
                && p.message.contains("COFFERDAM_TEST_SECRET_THAT_IS_NOT_SET")),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_delivering_from_one_postgres_outbox_send_each_event_once() {
    let receiver = Receiver::start();
    let db = TestDb::create();
    let clock = Arc::new(ManualWallClock::new(at("2026-11-30T07:00:00Z")));
    let replica = || {
        builder(&clock)
            .store(StoreConfig::Postgres(PostgresConfig::new(&db.url)))
            .notify("ops", hook(&receiver.url()))
            .build()
            .expect("replica")
    };
    let (a, b) = (replica(), replica());
    common::load(&a, artifacts::HELLO, ToolPolicy::default()).await;
    for i in 0..12 {
        a.schedules()
            .create(daily(
                &format!("greet-{i}"),
                "hello",
                json!({"name": "Ada"}),
            ))
            .await
            .expect("schedule");
    }
    run_day(&a, &clock, "2026-11-30").await;
    let (na, nb) = (a.schedules().notifier(), b.schedules().notifier());
    // Both replicas deliver at once, pass after pass (a pass sends at most
    // 4 entries per sink and leaves the rest due for the next).
    let mut delivered = 0;
    for _ in 0..12 {
        let (pa, pb) = tokio::join!(na.deliver_due(), nb.deliver_due());
        let (pa, pb) = (pa.expect("a"), pb.expect("b"));
        assert!(
            pa.delivered.len() + pb.delivered.len() <= 8,
            "{pa:?} {pb:?}"
        );
        delivered += pa.delivered.len() + pb.delivered.len();
        if delivered >= 12 {
            break;
        }
    }
    assert_eq!(delivered, 12);
    let mut ids: Vec<String> = receiver
        .got()
        .iter()
        .map(|r| r.header("x-cofferdam-event-id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    assert_eq!(receiver.got().len(), 12, "no event sent twice");
    let outbox = b.schedules().notifications().expect("outbox");
    assert!(
        outbox
            .iter()
            .all(|e| e.state == Delivery::Delivered && e.attempts == 1)
    );
}

/// `cofferdam ARGS` with the test's secret in the environment.
fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .args(args)
        .env("COFFERDAM_IT_WEBHOOK_SECRET", SECRET)
        .env_remove("COFFERDAM_LOG")
        .output()
        .expect("runs")
}

/// `cofferdam serve` on `config`, ticking every 10 ms on `clock`.
async fn serve(config: &std::path::Path, clock: &std::path::Path) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cofferdam"))
        .arg("--clock-file")
        .arg(clock)
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--tick-every",
            "10ms",
            "--config",
        ])
        .arg(config)
        .arg("--artifact-dir")
        .arg(common::shared_data_dir().join("artifacts"))
        .env("COFFERDAM_IT_WEBHOOK_SECRET", SECRET)
        .env_remove("COFFERDAM_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    crate::mcp::wait_for_line(stderr, "at http://").await;
    child
}

/// The notifications `cofferdam schedules notifications --json` lists.
fn listed(config: &std::path::Path) -> Vec<Value> {
    let out = cli(&[
        "schedules",
        "notifications",
        "--json",
        "--data-dir",
        config.parent().unwrap().join("data").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_host_killed_before_delivery_delivers_once_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The receiver's port, closed until the host has been killed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let config = dir.path().join("cofferdam.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n\
             [tools.hello]\ncomponent = {hello:?}\n\
             [notify.ops]\nurl = \"http://{addr}/hook\"\n\
             secret_env = \"COFFERDAM_IT_WEBHOOK_SECRET\"\nallow_private = [\"127.0.0.0/8\"]\n",
            hello = artifacts::HELLO,
        ),
    )
    .expect("config");
    let clock = dir.path().join("now");
    std::fs::write(&clock, "2026-11-30T07:00:00Z").expect("clock");
    let created = cli(&[
        "--clock-file",
        clock.to_str().unwrap(),
        "schedules",
        "create",
        "greet",
        "--config",
        config.to_str().unwrap(),
        "--owner",
        "ops",
        "--cron",
        "0 9 * * *",
        "--tool",
        "hello",
        "--input",
        r#"{"name":"Ada"}"#,
        "--notify",
        "ops",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // A sink the config does not have is named.
    let unknown = cli(&[
        "schedules",
        "create",
        "other",
        "--config",
        config.to_str().unwrap(),
        "--owner",
        "ops",
        "--cron",
        "0 9 * * *",
        "--tool",
        "hello",
        "--notify",
        "pager",
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("`pager`"));

    let mut first = serve(&config, &clock).await;
    std::fs::write(&clock, "2026-11-30T09:00:05Z").expect("clock");
    wait_until("the run's event was tried", || {
        listed(&config)
            .first()
            .is_some_and(|n| n["attempts"].as_u64() >= Some(1))
    })
    .await;
    first.start_kill().expect("kill");
    first.wait().await.expect("killed");
    let pending = listed(&config);
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["state"], "pending");
    assert!(
        pending[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect")
    );

    // Receiver up, backoff over, a new process: delivered once.
    let receiver = Receiver::on(addr);
    std::fs::write(&clock, "2026-11-30T10:00:05Z").expect("clock");
    let _second = serve(&config, &clock).await;
    wait_until("delivered", || {
        listed(&config)
            .first()
            .is_some_and(|n| n["state"] == "delivered")
    })
    .await;
    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(signature_is_valid(&got[0]));
    assert_eq!(json(&got[0])["output"]["greeting"], "Hello, Ada!");
}
