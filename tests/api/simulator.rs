//! The embedded Witty-Home simulator, driven over HTTP.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn lists_the_callers_installations_only() {
    let app = spawn_sim().await;
    let r = app.get("alice", "/installations").await;
    assert_eq!(r.status, 200);
    let ids: Vec<i64> = r.body.as_array().unwrap().iter().map(|i| i["installationId"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![ALICE_INSTALLATION]);
    let r = app.get("bob", "/installations").await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = app.post("bob", "/installations", json!({"name": ""})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
}
