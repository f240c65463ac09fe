//! Outbound HTTP with real guests against loopback upstreams the tests start:
//! allowlist, SSRF defences (no connection is ever made to a refused
//! address), limits, and upstream failures flowing into retries and breakers.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cofferdam::{
    CallRequest, ErrorClass, HttpSpec, LimitsSpec, ManualClock, RetrySpec, ToolPolicy,
};
use cofferdam_test_artifacts as artifacts;
use cofferdam_test_artifacts::upstream::{Reply, Upstream};
use common::load;
use serde_json::json;

fn weather_reply(path: &str, _: usize) -> Reply {
    let city = path.split("city=").nth(1).unwrap_or("?").to_owned();
    Reply::json(json!({"city": city, "summary": "sunny", "temperature_c": 21.5}))
}

/// A policy granting `origin` (and loopback, which tests need explicitly).
fn http_policy(env: &str, base: &str, allow: &str) -> ToolPolicy {
    ToolPolicy {
        env: [(env.to_owned(), base.to_owned())].into(),
        http: HttpSpec {
            allow: vec![allow.to_owned()],
            allow_private: vec!["127.0.0.1/32".into()],
            ..HttpSpec::default()
        },
        ..ToolPolicy::default()
    }
}

fn fetch_policy(allow: &[&str], allow_private: &[&str]) -> ToolPolicy {
    ToolPolicy {
        http: HttpSpec {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            allow_private: allow_private.iter().map(|s| (*s).to_owned()).collect(),
            ..HttpSpec::default()
        },
        retry: RetrySpec {
            max_attempts: Some(1),
            ..RetrySpec::default()
        },
        ..ToolPolicy::default()
    }
}

#[tokio::test]
async fn allowed_origin_succeeds_and_traffic_is_counted() {
    let upstream = Upstream::start(weather_reply);
    let host = common::host();
    let origin = upstream.origin();
    load(
        &host,
        artifacts::WEATHER,
        http_policy("WEATHER_BASE_URL", &origin, &origin),
    )
    .await;
    let outcome = host
        .call(CallRequest::new("weather", r#"{"city":"Lisbon"}"#))
        .await
        .expect("forecast");
    assert_eq!(
        outcome.output_json(),
        json!({"city": "Lisbon", "summary": "sunny", "temperature_c": 21.5})
    );
    assert_eq!(outcome.http.requests, 1);
    assert!(outcome.http.bytes_in > 40, "{:?}", outcome.http);
    assert_eq!(upstream.requests(), 1);
    assert_eq!(upstream.paths()[0], "/forecast?city=Lisbon");
}

#[tokio::test]
async fn disallowed_origin_is_refused_without_a_connection() {
    let upstream = Upstream::start(weather_reply);
    let host = common::host();
    let policy = http_policy("WEATHER_BASE_URL", &upstream.origin(), "http://127.0.0.1:1");
    load(
        &host,
        artifacts::WEATHER,
        ToolPolicy {
            retry: RetrySpec {
                max_attempts: Some(1),
                ..Default::default()
            },
            ..policy
        },
    )
    .await;
    let error = host
        .call(CallRequest::new("weather", r#"{"city":"Lisbon"}"#))
        .await
        .expect_err("refused");
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("refused by the host's network policy"),
        "{message}"
    );
    assert!(
        message.contains(&upstream.origin()),
        "the error names the origin: {message}"
    );
    assert_eq!(upstream.connections(), 0);

    let denied_by_default = common::host();
    let no_http = ToolPolicy {
        env: [("WEATHER_BASE_URL".to_owned(), upstream.origin())].into(),
        ..Default::default()
    };
    load(&denied_by_default, artifacts::WEATHER, no_http).await;
    let error = denied_by_default
        .call(CallRequest::new("weather", r#"{"city":"x"}"#))
        .await
        .expect_err("deny");
    assert_eq!(error.last_attempt_error().class(), ErrorClass::Permanent);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused() {
    let upstream = Upstream::start(weather_reply);
    let host = common::host();
    let origin = format!("http://localhost:{}", upstream.addr.port());
    load(&host, artifacts::FETCH, fetch_policy(&[&origin], &[])).await;
    let input = json!({"url": format!("{origin}/")}).to_string();
    let error = host
        .call(CallRequest::new("fetch", input))
        .await
        .expect_err("loopback");
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(error.to_string().contains("refused"), "{error}");
    assert_eq!(
        upstream.connections(),
        0,
        "no connection to the refused address"
    );
}

#[tokio::test]
async fn ipv4_mapped_ipv6_of_a_private_address_is_refused() {
    let upstream = Upstream::start(weather_reply);
    let host = common::host();
    let origin = format!("http://[::ffff:127.0.0.1]:{}", upstream.addr.port());
    load(&host, artifacts::FETCH, fetch_policy(&[&origin], &[])).await;
    let input = json!({"url": format!("{origin}/")}).to_string();
    let error = host
        .call(CallRequest::new("fetch", input))
        .await
        .expect_err("mapped loopback");
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn a_redirect_to_a_metadata_address_is_returned_not_followed() {
    let metadata = "http://169.254.169.254/latest/meta-data/";
    let upstream = Upstream::start(move |_, _| Reply {
        headers: vec![("location", metadata.to_owned())],
        ..Reply::status(302)
    });
    let host = common::host();
    // Even an allowlisted metadata origin is refused by the address check.
    load(
        &host,
        artifacts::FETCH,
        fetch_policy(
            &[&upstream.origin(), "http://169.254.169.254"],
            &["127.0.0.1/32"],
        ),
    )
    .await;
    let input = json!({"url": format!("{}/go", upstream.origin())}).to_string();
    let outcome = host
        .call(CallRequest::new("fetch", input))
        .await
        .expect("302 returned");
    assert_eq!(outcome.output_json()["status"], 302);
    assert_eq!(outcome.output_json()["location"], metadata);
    assert_eq!(outcome.http.requests, 1, "the host did not follow it");

    let follow =
        json!({"url": format!("{}/go", upstream.origin()), "follow_redirect": true}).to_string();
    let error = host
        .call(CallRequest::new("fetch", follow))
        .await
        .expect_err("refused");
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(error.to_string().contains("169.254.169.254"), "{error}");
    assert_eq!(
        upstream.requests(),
        2,
        "only the two requests to the allowed upstream"
    );
}

#[tokio::test]
async fn rate_limited_upstream_is_retried_after_its_retry_after() {
    let upstream = Upstream::start(|path, index| {
        if index == 0 {
            Reply {
                headers: vec![("retry-after", "2".into())],
                ..Reply::status(429)
            }
        } else {
            weather_reply(path, index)
        }
    });
    let clock = Arc::new(ManualClock::new());
    let host = common::builder()
        .clock(clock.clone())
        .build()
        .expect("host");
    let origin = upstream.origin();
    load(
        &host,
        artifacts::WEATHER,
        http_policy("WEATHER_BASE_URL", &origin, &origin),
    )
    .await;
    let outcome = host
        .call(CallRequest::new("weather", r#"{"city":"Porto"}"#))
        .await
        .expect("second try");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.failed_attempts, vec![ErrorClass::RateLimited]);
    assert!(
        outcome.waited >= Duration::from_secs(2),
        "{:?}",
        outcome.waited
    );
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test]
async fn a_slow_upstream_is_cut_by_the_request_timeout_and_by_the_call_deadline() {
    let upstream = Upstream::start(|path, i| Reply {
        delay: Duration::from_secs(5),
        ..weather_reply(path, i)
    });
    let origin = upstream.origin();
    let host = common::host();
    let mut policy = http_policy("WEATHER_BASE_URL", &origin, &origin);
    policy.http.timeout_ms = Some(200);
    policy.retry.max_attempts = Some(1);
    load(&host, artifacts::WEATHER, policy).await;
    let started = Instant::now();
    let error = host
        .call(CallRequest::new("weather", r#"{"city":"x"}"#))
        .await
        .expect_err("slow");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let deadline_host = common::host();
    let mut policy = http_policy("WEATHER_BASE_URL", &origin, &origin);
    policy.limits = LimitsSpec {
        timeout_ms: Some(300),
        ..Default::default()
    };
    policy.retry.max_attempts = Some(1);
    load(&deadline_host, artifacts::WEATHER, policy).await;
    let started = Instant::now();
    let error = deadline_host
        .call(CallRequest::new("weather", r#"{"city":"x"}"#))
        .await
        .expect_err("slow");
    assert!(
        matches!(
            error.class(),
            ErrorClass::DeadlineExceeded | ErrorClass::Transient
        ),
        "the request may not outlive the call: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn response_size_and_request_count_are_bounded() {
    let upstream = Upstream::start(|path, _| {
        let size = if path == "/big" { 100_000 } else { 10 };
        Reply {
            body: "z".repeat(size),
            ..Reply::status(200)
        }
    });
    let host = common::host();
    let mut policy = fetch_policy(&[&upstream.origin()], &["127.0.0.1/32"]);
    policy.http.max_response_bytes = Some(1000);
    policy.http.max_requests = Some(2);
    load(&host, artifacts::FETCH, policy).await;
    let big = json!({"url": format!("{}/big", upstream.origin())}).to_string();
    let error = host
        .call(CallRequest::new("fetch", big))
        .await
        .expect_err("too big");
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    let one = json!({"url": format!("{}/small", upstream.origin())}).to_string();
    let outcome = host
        .call(CallRequest::new("fetch", one))
        .await
        .expect("small fits");
    assert_eq!(outcome.output_json()["body_bytes"], 10);
    let many = json!({"url": format!("{}/small", upstream.origin()), "times": 3}).to_string();
    let before = upstream.requests();
    let error = host
        .call(CallRequest::new("fetch", many))
        .await
        .expect_err("third refused");
    assert!(error.to_string().contains("refused"), "{error}");
    assert_eq!(upstream.requests() - before, 2);
}

/// The cascade from the design: the weather API answers 503 to everything
/// while the flight API is healthy. The weather tool's breaker opens after a
/// few calls and bounds what reaches the broken upstream; every flight call
/// succeeds meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_trips_its_breaker_and_leaves_the_other_tool_alone() {
    let weather_api = Upstream::start(|_, _| Reply::status(503));
    let flights_api = Upstream::start(|_, _| {
        Reply::json(json!([{"number": "TP1940", "departs": "08:10", "price_eur": 49.0}]))
    });
    let clock = Arc::new(ManualClock::new());
    let host = common::builder()
        .clock(clock.clone())
        .jitter_seed(5)
        .build()
        .expect("host");
    let (w, f) = (weather_api.origin(), flights_api.origin());
    load(
        &host,
        artifacts::WEATHER,
        http_policy("WEATHER_BASE_URL", &w, &w),
    )
    .await;
    load(
        &host,
        artifacts::FLIGHTS,
        http_policy("FLIGHTS_BASE_URL", &f, &f),
    )
    .await;
    let mut flights_ok = 0;
    for _ in 0..40 {
        clock.advance(Duration::from_secs(1));
        let weather = host.call(CallRequest::new("weather", r#"{"city":"Faro"}"#));
        let flights = host.call(CallRequest::new("flights", r#"{"from":"LIS","to":"OPO"}"#));
        let (weather, flights) = tokio::join!(weather, flights);
        assert!(weather.is_err());
        flights_ok += usize::from(
            flights.expect("flights stay healthy").output_json()["flights"][0]["number"]
                == "TP1940",
        );
    }
    assert_eq!(flights_ok, 40);
    let stats = host.stats("weather").expect("stats");
    assert_eq!(stats.breaker.state, cofferdam::BreakerState::Open);
    assert!(
        weather_api.requests() <= 8,
        "the broken API got {} requests",
        weather_api.requests()
    );
    assert_eq!(
        host.stats("flights").expect("stats").breaker.state,
        cofferdam::BreakerState::Closed
    );
}
