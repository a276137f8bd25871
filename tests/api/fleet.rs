//! witty-bff as a fleet: replicas on one simulator sharing a Redis of the test's own, behind a
//! load balancer. Live events, idempotency keys, the upstream event subscription and
//! invalidations are the fleet's, not a replica's; losing Redis degrades, never stops.
//! Without `redis-server` on the PATH these tests say so and return (see [`RedisServer::spawn`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fleet_harness::*;
use crate::helpers::*;

const DELETE_SUBSCRIPTION_ROUTE: &str = "DELETE /installations/{i}/event-subscriptions/{id}";

/// An event about Alice's station, dated now.
fn event(id: &str) -> Value {
    grid_event(id, "Hager.WittyHome.Error", &chrono::Utc::now().to_rfc3339(), true, json!({"code": "E1"}))
}

/// Posts `event(id)` to `replica`'s own webhook of Alice's installation, as the upstream would.
async fn deliver_to(replica: &TestBff, id: &str) {
    assert_eq!(replica.deliver(&replica.webhook_of(ALICE_INSTALLATION), json!([event(id)])).await, 200, "{id}");
}

/// Delivers probes to `via` until each of `subscribers` heard one: a subscription reaches the
/// fleet's event channel asynchronously, and from then on what `via` takes reaches them. Probes
/// arriving later are skipped by [`next_id`].
async fn probe(via: &TestBff, subscribers: &mut [&mut Ws]) {
    let mut heard = vec![false; subscribers.len()];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for n in 0.. {
        assert!(tokio::time::Instant::now() < deadline, "no probe through {} reached every subscriber", via.base);
        deliver_to(via, &format!("probe-{n}")).await;
        for (ws, heard) in subscribers.iter_mut().zip(heard.iter_mut()) {
            // A short wait per probe, as `eventually` polls: what is awaited is a probe's arrival.
            while !*heard {
                match tokio::time::timeout(Duration::from_millis(250), ws_data(ws)).await {
                    Ok(e) => *heard = id_of(&e).starts_with("probe-"),
                    Err(_) => break,
                }
            }
        }
        if heard.iter().all(|h| *h) {
            return;
        }
    }
}

fn id_of(payload: &Value) -> String {
    payload["data"]["stationEvents"]["id"].as_str().unwrap_or_else(|| panic!("an event: {payload}")).to_string()
}

/// The id of the next event that is not a probe.
async fn next_id(ws: &mut Ws) -> String {
    loop {
        let id = id_of(&ws_data(ws).await);
        if !id.starts_with("probe-") {
            return id;
        }
    }
}

/// The events (by id, how many times each) a subscriber hears until it has heard all of `last`.
async fn heard_until(ws: &mut Ws, last: &[&str]) -> BTreeMap<String, usize> {
    let mut heard = BTreeMap::new();
    while !last.iter().all(|l| heard.contains_key(*l)) {
        *heard.entry(next_id(ws).await).or_insert(0) += 1;
    }
    heard
}

/// Alice watching her installation's events on `replica`, live there.
async fn watching(replica: &TestBff) -> Ws {
    let ws = replica.subscribe_as("alice", EVENTS).await;
    replica.live_subscriptions(1).await;
    ws
}

#[tokio::test]
async fn a_delivery_to_one_replica_reaches_every_replicas_subscribers_once_even_retried_to_another() {
    let Some(fleet) = TestFleet::spawn(3).await else { return };
    let (a, b, c) = (fleet.replica(0), fleet.replica(1), fleet.replica(2));
    let mut on_b = watching(b).await;
    let mut on_c = watching(c).await;
    probe(a, &mut [&mut on_b, &mut on_c]).await;
    // e-1 to A, then again to B (Event Grid retrying through the load balancer); e-2 after it on
    // A and e-3 after the retry on B: once both are heard, every publication of e-1 has been.
    for (replica, id) in [(a, "e-1"), (b, "e-1"), (a, "e-2"), (b, "e-3")] {
        deliver_to(replica, id).await;
    }
    let once: BTreeMap<String, usize> = ["e-1", "e-2", "e-3"].iter().map(|id| (id.to_string(), 1)).collect();
    for (name, ws) in [("B", &mut on_b), ("C", &mut on_c)] {
        assert_eq!(heard_until(ws, &["e-2", "e-3"]).await, once, "the subscriber on {name}");
    }
}

#[tokio::test]
async fn an_idempotency_key_is_honoured_across_replicas_retried_or_sent_concurrently() {
    let Some(fleet) = TestFleet::spawn(2).await else { return };
    let (a, b) = (fleet.replica(0), fleet.replica(1));
    let vars = json!({"i": "42", "cs": BOB_STATION, "wait": false});
    fleet.sim().reset_calls().await;
    // A mobile client's retry that the load balancer sends to another replica.
    let first = a.post_with_key("bob", "fleet-retry-1", START, vars.clone()).await;
    assert_eq!(status(&first, "startCharging"), "ACCEPTED", "{first:#}");
    let retry = b.post_with_key("bob", "fleet-retry-1", START, vars.clone()).await;
    assert_eq!(retry, first, "B answers with A's outcome");
    assert_eq!(fleet.sim().calls_to(START_ROUTE).await, 1, "{:#?}", fleet.sim().calls_by_route().await);
    // Duplicates sent to both at the same moment.
    fleet.sim().reset_calls().await;
    let (on_a, on_b) = tokio::join!(
        a.post_with_key("bob", "fleet-burst-1", START, vars.clone()),
        b.post_with_key("bob", "fleet-burst-1", START, vars.clone()),
    );
    assert_eq!(status(&on_a, "startCharging"), "ACCEPTED", "{on_a:#}");
    assert_eq!(on_b, on_a, "one outcome for both");
    assert_eq!(fleet.sim().calls_to(START_ROUTE).await, 1, "{:#?}", fleet.sim().calls_by_route().await);
}

/// The fleet's upstream subscriptions of `installation`, as its member `sub` lists them.
async fn hooks(fleet: &TestFleet, sub: &str, installation: i64) -> Vec<Value> {
    fleet.sim().bff_hooks(sub, installation).await
}

#[tokio::test]
async fn one_upstream_subscription_for_the_fleet_kept_while_any_replica_watches_and_taken_over() {
    let Some(mut fleet) = TestFleet::spawn(2).await else { return };
    let alice_on_a = watching(fleet.replica(0)).await;
    let mut alice_on_b = watching(fleet.replica(1)).await;
    let hook = fleet.sim().validated_webhook().await;
    assert!(hook["protocolData"].as_str().unwrap().starts_with(&fleet.lb.base), "through the LB: {hook}");
    assert_eq!(hooks(&fleet, "alice", ALICE_INSTALLATION).await.len(), 1, "one for the fleet");
    // A's last watcher of Alice's installation leaves; B's stays. Bob's watch on A, left just
    // after, is the clock: once A's grace removed Bob's subscription, it is over for Alice's too.
    let bob_on_a =
        fleet.replica(0).subscribe_as("bob", "subscription { stationEvents(installationId: 42) { id } }").await;
    fleet.replica(0).live_subscriptions(2).await;
    eventually("Bob's subscription", || async {
        hooks(&fleet, "bob", BOB_INSTALLATION).await.iter().any(|h| h["state"] == "Created").then_some(())
    })
    .await;
    drop(alice_on_a);
    fleet.replica(0).live_subscriptions(1).await;
    drop(bob_on_a);
    eventually("Bob's subscription to go after the grace", || async {
        hooks(&fleet, "bob", BOB_INSTALLATION).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(hooks(&fleet, "alice", ALICE_INSTALLATION).await.len(), 1, "B still watches");
    // A crashes: B takes over, and the upstream's deliveries (through the load balancer) keep
    // reaching B's subscriber.
    fleet.stop(0).await;
    fleet.sim().reset_calls().await;
    assert_eq!(fleet.sim().plug(ALICE_STATION).await.status, 200);
    let e = ws_data(&mut alice_on_b).await;
    assert_eq!(e["data"]["stationEvents"]["type"], "CABLE_PLUGGED", "{e}");
    assert_eq!(hooks(&fleet, "alice", ALICE_INSTALLATION).await.len(), 1, "still one");
    // The last watcher goes: after the grace, B (holding the lease now) removes it, once.
    drop(alice_on_b);
    eventually("the fleet's upstream subscription to be removed", || async {
        hooks(&fleet, "alice", ALICE_INSTALLATION).await.is_empty().then_some(())
    })
    .await;
    let calls = fleet.sim().calls_by_route().await;
    assert_eq!(calls.get(DELETE_SUBSCRIPTION_ROUTE), Some(&1), "removed once: {calls:#?}");
}

#[tokio::test]
async fn a_query_on_one_replica_right_after_a_mutation_applied_on_another_shows_it() {
    // Through the shared cache and the response cache alike: the mutation's change reaches B
    // before B answers its next query.
    let Some(fleet) = TestFleet::spawn(2).await else { return };
    let (a, b) = (fleet.replica(0), fleet.replica(1));
    // B's cache holds the old state, for the owner and for the installer.
    for sub in ["alice", "ivan"] {
        assert_eq!(gql_station(b, sub, ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "IMMEDIATE", "{sub}");
    }
    // ...and B keeps the owner's whole answer: asked again, it answers with it.
    let hits = r#"witty_bff_response_cache_total{outcome="hit"}"#;
    let before = b.metric(hits).await;
    assert_eq!(gql_station(b, "alice", ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "IMMEDIATE");
    assert_eq!(b.metric(hits).await, before + 1.0, "B answered from its response cache");
    let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": true});
    let r = a.graphql("alice", SET_MODE, vars).await;
    assert_eq!(status(&r, "setChargeMode"), "APPLIED", "{r:#}");
    for sub in ["alice", "ivan"] {
        assert_eq!(gql_station(b, sub, ALICE_INSTALLATION, ALICE_STATION).await["chargeMode"], "DEFERRED", "{sub}");
    }
}

#[tokio::test]
async fn without_redis_replicas_answer_on_their_own_and_events_flow_again_once_it_is_back() {
    let Some(mut fleet) = TestFleet::spawn(2).await else { return };
    let mut on_b = watching(fleet.replica(1)).await;
    probe(fleet.replica(0), &mut [&mut on_b]).await;
    fleet.redis.stop();
    for (i, mode) in [(0, "DEFERRED"), (1, "DEFERRED_EXCLUSIVE")] {
        let replica = fleet.replica(i);
        let station = gql_station(replica, "alice", ALICE_INSTALLATION, ALICE_STATION).await;
        assert_eq!(station["id"], ALICE_STATION, "replica {i}: {station}");
        let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": mode, "wait": false});
        let r = replica.post_with_key("alice", &format!("no-redis-{i}"), SET_MODE, vars).await;
        assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "replica {i}: {r:#}");
    }
    fleet.redis.start().await;
    probe(fleet.replica(0), &mut [&mut on_b]).await;
    // Heard once (the station events of the commands above may come first).
    deliver_to(fleet.replica(0), "after-redis").await;
    assert_eq!(heard_until(&mut on_b, &["after-redis"]).await["after-redis"], 1);
}

/// The harness itself (whatever the fleet mode does): the load balancer reaches every replica and
/// skips a stopped one, and Redis starts again on its port, empty.
#[tokio::test]
async fn the_harness_balances_over_live_replicas_and_restarts_redis_on_its_port() {
    let Some(mut fleet) = TestFleet::spawn(2).await else { return };
    // A connection per request (none kept alive), so that each is balanced anew.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).tls_certs_only([]).build().unwrap();
    let healthy = |fleet: &TestFleet| {
        let (client, url) = (client.clone(), format!("{}/healthz", fleet.lb.base));
        async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    };
    for _ in 0..4 {
        assert!(healthy(&fleet).await, "the replicas answer in turn through the load balancer");
    }
    fleet.stop(0).await;
    for _ in 0..4 {
        assert!(healthy(&fleet).await, "the load balancer skips the stopped replica");
    }
    let url = fleet.redis.url();
    fleet.redis.stop();
    fleet.redis.start().await;
    assert_eq!(fleet.redis.url(), url);
}

/// The password of the Redis of [`a_redis_requiring_a_password_serves_the_fleet_and_is_never_shown`]
/// (CI searches the suite's logs for it).
const REDIS_PASSWORD: &str = "test-redis-password-5d2c";

/// `GET /readyz` of a replica: its status and body.
async fn readyz(replica: &TestBff) -> (u16, Value) {
    let reply = send(replica.client.get(format!("{}/readyz", replica.base))).await;
    (reply.status.as_u16(), reply.body)
}

/// A Redis requiring a password (given in the URL) serves the fleet. A wrong password is a
/// configuration to fix: the replica does not start, and says which setting without showing it.
/// A Redis that cannot be reached is waited for: the replica starts alone and `/readyz` says so.
#[tokio::test]
async fn a_redis_requiring_a_password_serves_the_fleet_and_is_never_shown() {
    let Some(redis) = RedisServer::spawn_with(Some(REDIS_PASSWORD)).await else { return };
    let wrong = redis.url().replace(REDIS_PASSWORD, "not-the-password");
    let Some(fleet) = TestFleet::spawn_with(2, redis, |_| {}).await else { return };
    let mut on_b = watching(fleet.replica(1)).await;
    probe(fleet.replica(0), &mut [&mut on_b]).await;
    deliver_to(fleet.replica(0), "with-password").await;
    assert_eq!(heard_until(&mut on_b, &["with-password"]).await["with-password"], 1);
    let (status, ready) = readyz(fleet.replica(0)).await;
    assert_eq!((status, &ready["status"], &ready["redis"]), (200, &json!("ready"), &json!("connected")), "{ready}");
    assert!(ready["replica"].as_str().is_some_and(|r| r.len() == 36), "the replica's name, as in Redis: {ready}");

    let refused = TestApp::builder().bff(|c| c.redis_url = Some(wrong.parse().unwrap())).try_spawn().await;
    let error = refused.err().expect("a replica with a wrong Redis password does not start");
    assert!(error.contains("WITTY_BFF_REDIS_URL") && !error.contains("not-the-password"), "{error}");

    let nowhere = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", free_port());
    let alone = TestApp::builder().bff(|c| c.redis_url = Some(nowhere.parse().unwrap())).spawn().await;
    let station = gql_station(&alone, "alice", ALICE_INSTALLATION, ALICE_STATION).await;
    assert_eq!(station["id"], ALICE_STATION, "{station}");
    let (status, ready) = readyz(&alone).await;
    assert_eq!((status, &ready["redis"]), (200, &json!("unreachable: this replica works alone")), "{ready}");
    assert_eq!(alone.metric("witty_bff_fleet_connected").await, 0.0);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits for a polled event of type `kind` (a plug also starts a session: other events come too).
async fn polled(ws: &mut Ws, kind: &str) {
    let raw = format!("witty-bff.polled.{kind}");
    while ws_data(ws).await["data"]["stationEvents"]["rawType"] != raw.as_str() {}
}

/// With webhooks off, only the replica holding the installation's lease polls it, and what it
/// learns reaches the other replicas' subscribers; when it dies, a watching replica polls instead.
#[tokio::test]
async fn the_polling_fallback_runs_on_the_lease_holder_only_and_moves_when_it_dies() {
    let Some(redis) = RedisServer::spawn().await else { return };
    let Some(mut fleet) = TestFleet::spawn_with(2, redis, polling).await else { return };
    let mut on_a = watching(fleet.replica(0)).await;
    let mut on_b = watching(fleet.replica(1)).await;
    assert_eq!(fleet.sim().plug(ALICE_STATION).await.status, 200);
    for ws in [&mut on_a, &mut on_b] {
        polled(ws, "CablePlugged").await;
    }
    let polling = [
        fleet.replica(0).metric("witty_bff_polled_installations").await,
        fleet.replica(1).metric("witty_bff_polled_installations").await,
    ];
    assert_eq!(polling, [1.0, 0.0], "the first watcher's replica polls, alone");

    fleet.stop(0).await;
    let b = fleet.replica(1);
    eventually("B to poll once A is gone", || async {
        (b.metric("witty_bff_polled_installations").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(fleet.sim().unplug(ALICE_STATION).await.status, 200);
    polled(&mut on_b, "CableUnplugged").await;
}

/// A Redis that stops answering (its process stopped, its connections open) is taken for lost:
/// the replicas say so and answer on their own; once it answers again, events are shared again.
#[tokio::test]
async fn a_redis_that_stops_answering_is_taken_for_lost_then_found_again() {
    let Some(fleet) = TestFleet::spawn(2).await else { return };
    let (a, b) = (fleet.replica(0), fleet.replica(1));
    let mut on_b = watching(b).await;
    probe(a, &mut [&mut on_b]).await;
    let redis_is = |replica: &'static str, state: &'static str| {
        let replica = if replica == "a" { a } else { b };
        async move { (readyz(replica).await.1["redis"] == state).then_some(()) }
    };
    fleet.redis.pause();
    for replica in ["a", "b"] {
        eventually("Redis taken for lost", || redis_is(replica, "unreachable: this replica works alone")).await;
    }
    let vars = json!({"i": "33", "cs": ALICE_STATION, "mode": "DEFERRED", "wait": false});
    let r = a.post_with_key("alice", "while-redis-sleeps", SET_MODE, vars).await;
    assert_eq!(status(&r, "setChargeMode"), "ACCEPTED", "{r:#}");
    fleet.redis.resume();
    for replica in ["a", "b"] {
        eventually("Redis found again", || redis_is(replica, "connected")).await;
    }
    probe(a, &mut [&mut on_b]).await;
}
