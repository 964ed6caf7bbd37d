//! `ccplant-testenv up` / `down` (what `make testenv-up` / `make testenv-down` run): the nodes are
//! Ready in between, and afterwards none of the processes it started is left.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

fn testenv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ccplant-testenv"))
}

/// Running (not a zombie) and still the process `up` started (not a recycled pid).
fn alive(pid: i64, start_ticks: u64) -> bool {
    let pid = i32::try_from(pid).unwrap();
    ccplant_testenv::process::ManagedProcess::adopt("p", pid, start_ticks, "/dev/null".into())
        .is_same_process_alive()
}

#[test]
fn up_starts_a_detached_control_plane_and_down_stops_every_process() {
    let dir = std::env::temp_dir().join(format!("ccplant-testenv-updown-{}", std::process::id()));
    let up = testenv()
        .args(["up", "--dir"])
        .arg(&dir)
        .output()
        .expect("run up");
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let stdout = String::from_utf8_lossy(&up.stdout);
    let kubeconfig = stdout
        .trim()
        .strip_prefix("export KUBECONFIG=")
        .unwrap_or_else(|| panic!("up prints only the export line, got {stdout:?}"))
        .to_string();

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let procs: Vec<(String, i64, u64)> = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["pid"].as_i64().unwrap(),
                p["startTicks"].as_u64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = procs.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok"
        ]
    );
    for (name, pid, ticks) in &procs {
        assert!(alive(*pid, *ticks), "{name} ({pid}) running after up");
    }

    // A second `up` on the same directory reuses what runs.
    let again = testenv()
        .args(["up", "--dir"])
        .arg(&dir)
        .output()
        .expect("run up again");
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);

    let bins = ccplant_testenv::Binaries::ensure().unwrap();
    let nodes = Command::new(&bins.kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"])
        .output()
        .unwrap();
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    assert_eq!(
        nodes.lines().collect::<Vec<_>>(),
        ["kwok-node-0=True", "kwok-node-1=True"],
        "{nodes}"
    );

    let down = testenv()
        .args(["down", "--dir"])
        .arg(&dir)
        .output()
        .expect("run down");
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    for (name, pid, ticks) in &procs {
        assert!(
            !alive(*pid, *ticks),
            "{name} ({pid}) still running after down"
        );
    }
    assert!(!dir.exists(), "down removes {}", dir.display());
}
