//! Start-up failures are clear and immediate. Its own test binary: its control plane never gets
//! the CRDs installed (until the last step of the test, which installs them itself).
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "github_task/harness.rs"]
mod harness;

use ccplant_testenv::TestEnv;
use harness::*;
use std::time::Duration;

async fn exits_with(op: &mut Operator, message: &str) {
    op.start();
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the operator kept running:\n{}", op.log_text()));
    assert!(!status.success(), "non-zero exit expected, got {status}");
    let log = strip_ansi(&op.log_text());
    assert!(log.contains(message), "expected {message:?} in\n{log}");
}

#[tokio::test]
async fn missing_crds_an_unusable_lease_namespace_and_a_taken_port_are_clear_errors() {
    TestEnv::global()
        .with_namespace("startup", |ns| async move {
            let mut op = Operator::named(&ns.name, "-nocrd", "http://127.0.0.1:1", &[]);
            exits_with(
                &mut op,
                "the CustomResourceDefinition githubtasks.ccplant.io is not installed: run `kubectl apply -f crds/` first",
            )
            .await;

            install_crds();
            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = taken.local_addr().unwrap().to_string();
            let mut op = Operator::named(
                &ns.name,
                "-port",
                "http://127.0.0.1:1",
                &["--metrics-addr", &addr],
            );
            exits_with(&mut op, &format!("binding --metrics-addr {addr}")).await;

            let mut op = Operator::named(
                &ns.name,
                "-lease",
                "http://127.0.0.1:1",
                &[
                    "--leader-elect=true",
                    "--lease-namespace",
                    "no-such-namespace",
                ],
            );
            exits_with(&mut op, "cannot use the lease no-such-namespace/ccplant-operator").await;
        })
        .await;
}

#[tokio::test]
async fn sigterm_right_after_start_still_drains_releases_and_exits() {
    // kube's runner never finishes a shutdown requested before its caches synced; the operator
    // must still exit promptly, and a leader must still release its Lease.
    TestEnv::global()
        .with_namespace("early-term", |ns| async move {
            install_crds();
            for (label, wait_for_lease) in [("-lead", true), ("-boot", false)] {
                let identity = format!("--identity=early{label}");
                let mut op = Operator::named(
                    &ns.name,
                    label,
                    "http://127.0.0.1:1",
                    &[
                        "--leader-elect=true",
                        "--lease-namespace",
                        &ns.name,
                        &identity,
                    ],
                );
                op.start();
                let started = std::time::Instant::now();
                if wait_for_lease {
                    while !op.log_text().contains("acquired the lease") {
                        assert!(
                            started.elapsed() < Duration::from_secs(30),
                            "{}",
                            op.log_text()
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                } else {
                    while !op.log_text().contains("starting controllers") {
                        assert!(
                            started.elapsed() < Duration::from_secs(30),
                            "{}",
                            op.log_text()
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                op.sigterm();
                let status = op
                    .wait_exit(Duration::from_secs(15))
                    .await
                    .unwrap_or_else(|| {
                        panic!(
                            "{label}: still running 15 s after SIGTERM:\n{}",
                            op.log_text()
                        )
                    });
                assert!(status.success(), "{label}: {status}\n{}", op.log_text());
                if wait_for_lease {
                    let lease = ns
                        .api::<k8s_openapi::api::coordination::v1::Lease>()
                        .get("ccplant-operator")
                        .await
                        .unwrap();
                    let holder = lease.spec.and_then(|s| s.holder_identity);
                    assert_eq!(holder, None, "{label}: the lease is released");
                }
            }
        })
        .await;
}
