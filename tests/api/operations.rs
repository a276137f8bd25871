//! What operators run beside the server: `witty-bff healthcheck` for a container's HEALTHCHECK.

use crate::helpers::*;

/// Runs `witty-bff --listen <addr> healthcheck [args]`: its exit status and what it printed.
async fn healthcheck(addr: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_witty-bff"))
        .args(["--listen", addr, "healthcheck"])
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .expect("witty-bff runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn healthcheck_exits_0_against_a_running_server_and_not_against_none() {
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    assert_eq!(healthcheck(&addr, &[]).await, (true, String::new()));
    // Every interface is asked on loopback (as in a container listening on 0.0.0.0).
    let port = addr.rsplit(':').next().unwrap();
    assert!(healthcheck(&format!("0.0.0.0:{port}"), &[]).await.0);

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (ok, said) = healthcheck(&free, &[]).await;
    assert!(!ok && said.contains(&format!("no answer from http://{free}/healthz")), "{said}");
    let (ok, said) = healthcheck(&addr, &["--path", "/no-such-page"]).await;
    assert!(!ok && said.contains("answered 404"), "{said}");
}
