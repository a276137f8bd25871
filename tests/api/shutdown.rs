//! Graceful shutdown: open WebSockets and SSE streams are told that their operations end and are
//! closed cleanly, then the server stops within its grace period and takes no new connections.

use futures::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use witty_bff::app::App;

use crate::helpers::*;

/// A witty-bff whose stop is in the test's hands: dropping the sender starts the shutdown, and
/// the handle says when `run_until_stopped` returned.
struct Stoppable {
    _sim: TestSim,
    bff: TestBff,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn stoppable() -> Stoppable {
    let sim = TestSim::spawn(TestSim::test_config()).await;
    let config = TestApp::config(&sim);
    let app = App::build(config.clone()).await.expect("witty-bff starts");
    let bff = TestBff::new(format!("http://{}", app.addr()), sim.client.clone(), config);
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Stoppable { _sim: sim, bff, stop, served }
}

#[tokio::test]
async fn at_shutdown_websockets_and_sse_streams_get_complete_and_a_clean_close() {
    let Stoppable { _sim, bff, stop, served } = stoppable().await;
    let token = bff.token_for("alice");
    let mut modern = bff.subscribe("graphql-transport-ws", &token, "m", EVENTS).await;
    let mut legacy = bff.subscribe("graphql-ws", &token, "l", EVENTS).await;
    let mut sse = bff.sse(&token, EVENTS).await;
    bff.live_subscriptions(3).await;

    drop(stop);
    for (ws, id) in [(&mut modern, "m"), (&mut legacy, "l")] {
        assert_eq!(ws_next_or_close(ws).await, Ok(json!({"type": "complete", "id": id})), "{id}");
        let (code, reason) = ws_next_or_close(ws).await.expect_err("a close after the complete");
        assert_eq!(code, 1001, "{id}: {reason}");
        assert!(!reason.is_empty(), "{id}: a reason is given");
        // The client's answer to the close ends the connection: no reset, nothing more.
        let end = timeout(PATIENCE, ws.next()).await.expect("the connection ends in time");
        assert!(end.is_none(), "{id}: {end:?}");
    }
    let mut text = String::new();
    timeout(PATIENCE, async {
        while let Some(chunk) = sse.chunk().await.expect("the stream ends cleanly") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the SSE stream ends in time");
    let last = text.split("\n\n").filter(|e| !e.trim().is_empty()).last().unwrap_or_default();
    assert!(last.starts_with("event: complete"), "the last event is `complete`: {text:?}");

    let ended = timeout(PATIENCE, served).await.expect("run_until_stopped returns in time");
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    let refused = bff.client.get(format!("{}/healthz", bff.base)).send().await;
    assert!(refused.is_err(), "no new connection after the shutdown: {refused:?}");
}
