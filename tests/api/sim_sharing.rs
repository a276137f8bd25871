//! Installations, their users, and sharing an installation with an installer: invitations, the
//! e-mail with its activation code, acceptance (installer accounts only), disable, enable, remove.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn new_installation(name: &str) -> Value {
    json!({"name": name, "locationName": "Bordeaux", "locationGpsCoordinates": {"latitude": 44.8, "longitude": -0.6}})
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array().expect("an array").iter().map(|i| i["installationId"].as_i64().expect("installationId")).collect()
}

#[tokio::test]
async fn the_seeded_installation_has_the_documents_model() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.get("alice", "/installations").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!([{
            "installationId": 33,
            "externalId": "XEVFR-1234ABCDEF5678",
            "applicationCode": "flowEvcs",
            "name": "Mon installation Witty-Home",
            "locationName": "Bordeaux",
            "locationGpsCoordinates": {"latitude": 44.8, "longitude": -0.6}
        }])
    );
    let bob = sim.get("bob", "/installations").await;
    assert_eq!(ids(&bob.body), vec![BOB_INSTALLATION, BOB_CHALET]);
    assert_eq!(ids(&sim.get("dieter", "/installations").await.body), vec![DIETER_INSTALLATION]);
    assert_eq!(
        ids(&sim.get("ivan", "/installations").await.body),
        vec![ALICE_INSTALLATION],
        "an installer sees what he was invited on"
    );
    assert_eq!(
        ids(&sim.get("erin", "/installations").await.body),
        Vec::<i64>::new(),
        "a pending invitation gives no access"
    );
}

#[tokio::test]
async fn creating_an_installation_answers_201_and_only_its_creator_sees_it() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.post("bob", "/installations", new_installation("Mon installation Witty-Home")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["installationId"].as_i64().expect("a numeric id");
    assert_eq!(r.body["name"], "Mon installation Witty-Home");
    assert_eq!(r.body["locationName"], "Bordeaux");
    assert_eq!(r.body["locationGpsCoordinates"], json!({"latitude": 44.8, "longitude": -0.6}));
    assert_eq!(r.body["applicationCode"], "flowEvcs");
    assert!(r.body["externalId"].is_null(), "no station yet: {:?}", r.body);
    assert!(ids(&sim.get("bob", "/installations").await.body).contains(&id));
    assert!(!ids(&sim.get("alice", "/installations").await.body).contains(&id));
    assert_eq!(sim.get("alice", &format!("/installations/{id}/users")).await.status, 404);
    let users = sim.get("bob", &format!("/installations/{id}/users")).await;
    assert_eq!(users.status, 200);
    assert_eq!(users.body.as_array().unwrap().len(), 1);
    assert_eq!(users.body[0]["roleCode"], "owner");
    assert_eq!(users.body[0]["accountEmail"], "bob@example.com");
    // A second one gets another id.
    let again = sim.post("bob", "/installations", new_installation("Annexe")).await;
    assert_eq!(again.status, 201);
    assert_ne!(again.body["installationId"], r.body["installationId"]);
}

#[tokio::test]
async fn an_invalid_installation_is_400_naming_the_field() {
    let app = spawn_app().await;
    let sim = app.sim();
    let gps = json!({"latitude": 44.8, "longitude": -0.6});
    for (body, field) in [
        (json!({"locationName": "Bordeaux", "locationGpsCoordinates": gps}), "name"),
        (json!({"name": "   ", "locationName": "Bordeaux", "locationGpsCoordinates": gps}), "name"),
        (json!({"name": "x".repeat(101), "locationName": "Bordeaux", "locationGpsCoordinates": gps}), "name"),
        (json!({"name": "Home", "locationGpsCoordinates": gps}), "locationName"),
        (json!({"name": "Home", "locationName": "Bordeaux"}), "locationGpsCoordinates"),
        (json!({"name": "Home", "locationName": "B", "locationGpsCoordinates": {"longitude": 1.0}}), "latitude"),
        (json!({"name": "Home", "locationName": "B", "locationGpsCoordinates": {"latitude": 1.0}}), "longitude"),
        (
            json!({"name": "Home", "locationName": "B", "locationGpsCoordinates": {"latitude": 91.0, "longitude": 0.0}}),
            "latitude",
        ),
        (
            json!({"name": "Home", "locationName": "B", "locationGpsCoordinates": {"latitude": 0.0, "longitude": -181.0}}),
            "longitude",
        ),
        (json!({"name": 5, "locationName": "B", "locationGpsCoordinates": gps}), "name"),
        (
            json!({"name": "Home", "locationName": "B", "locationGpsCoordinates": {"latitude": "north", "longitude": 0.0}}),
            "latitude",
        ),
    ] {
        let r = sim.post("alice", "/installations", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(field), "{body}: the message names {field}: {:?}", r.body);
    }
    assert_eq!(ids(&sim.get("alice", "/installations").await.body), vec![ALICE_INSTALLATION], "nothing was created");
}

#[tokio::test]
async fn an_installer_account_cannot_create_an_installation() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.post("ivan", "/installations", new_installation("Mine")).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.message().contains("installer"));
}

#[tokio::test]
async fn the_users_of_an_installation_have_the_documents_model() {
    let app = spawn_app().await;
    let sim = app.sim();
    let r = sim.get("alice", &format!("/installations/{ALICE_INSTALLATION}/users")).await;
    assert_eq!(r.status, 200);
    let users = r.body.as_array().unwrap();
    assert_eq!(users.len(), 2);
    let alice = users.iter().find(|u| u["roleCode"] == "owner").expect("the owner");
    assert_eq!(alice["accountId"], sim.account_id("alice").await);
    assert_eq!(alice["accountFirstName"], "Alice");
    assert_eq!(alice["accountLastName"], "Martin");
    assert_eq!(alice["accountEmail"], "alice@example.com");
    assert_eq!(alice["authorizationGroups"], json!(["ownerActive"]));
    assert_eq!(alice["enabled"], true);
    let ivan = users.iter().find(|u| u["roleCode"] == "installer").expect("the installer");
    assert_eq!(ivan["accountId"], sim.account_id("ivan").await);
    assert_eq!(ivan["accountEmail"], "ivan@installer.example.com");
    assert_eq!(ivan["authorizationGroups"], json!(["installerActive"]));
    // The installer may list the users too (general data).
    assert_eq!(sim.get("ivan", &format!("/installations/{ALICE_INSTALLATION}/users")).await.status, 200);
}

#[tokio::test]
async fn an_invitation_is_201_listed_mailed_and_cancellable() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("/installations/{ALICE_INSTALLATION}/invitations");
    let before = Utc::now();
    let r = sim.post("alice", &path, json!({"email": "MyInstaller@Example.com", "cultureCode": "fr-FR"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["email"], "myinstaller@example.com");
    assert_eq!(r.body["installationName"], "Mon installation Witty-Home");
    assert_eq!(r.body["installationId"], ALICE_INSTALLATION);
    let expires: DateTime<Utc> = r.body["expirationDate"].as_str().unwrap().parse().expect("an ISO date");
    assert!(expires > before + chrono::Duration::days(1), "the invitation is valid for a while: {expires}");

    let listed = sim.get("alice", &path).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body, json!([r.body.clone()]));
    let mail = sim.mail().await;
    let sent = mail.as_array().unwrap().iter().find(|m| m["to"] == "myinstaller@example.com").expect("a mail was sent");
    assert!(sent["subject"].as_str().unwrap().contains("Mon installation Witty-Home"));
    assert!(sent["activationCode"].as_str().is_some_and(|c| c.len() >= 8));

    // The same address twice is a conflict; so is a current user's address.
    let twice = sim.post("alice", &path, json!({"email": "myinstaller@example.com"})).await;
    assert_eq!(twice.status, 409, "{:?}", twice.body);
    let user = sim.post("alice", &path, json!({"email": "ivan@installer.example.com"})).await;
    assert_eq!(user.status, 409, "{:?}", user.body);

    let cancelled = sim.delete("alice", &format!("{path}/MyInstaller@example.com")).await;
    assert_eq!(cancelled.status, 204, "{:?}", cancelled.body);
    assert_eq!(sim.get("alice", &path).await.body, json!([]));
    let again = sim.delete("alice", &format!("{path}/myinstaller@example.com")).await;
    assert_eq!(again.status, 404, "{:?}", again.body);
    assert!(again.message().contains("myinstaller@example.com"));
    // A cancelled invitation's code no longer works.
    let code = sent["activationCode"].as_str().unwrap();
    assert_eq!(sim.post("erin", &format!("/invitations/operators/accept/{code}"), json!({})).await.status, 404);
}

#[tokio::test]
async fn an_invalid_invitation_is_400_naming_the_field() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("/installations/{ALICE_INSTALLATION}/invitations");
    for (body, field) in [
        (json!({}), "email"),
        (json!({"email": "not-an-address"}), "email"),
        (json!({"email": "a@b"}), "email"),
        (json!({"email": "a b@example.com"}), "email"),
        (json!({"email": 42}), "email"),
        (json!({"email": "x@example.com", "cultureCode": "xx-YY"}), "cultureCode"),
        (json!({"email": "x@example.com", "cultureCode": 1}), "cultureCode"),
    ] {
        let r = sim.post("alice", &path, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.message().contains(field), "{body}: the message names {field}: {:?}", r.body);
    }
    assert_eq!(sim.get("alice", &path).await.body, json!([]));
}

#[tokio::test]
async fn only_an_installer_account_can_accept_an_invitation() {
    let app = spawn_app().await;
    let sim = app.sim();
    // Erin's seeded invitation on Bob's Lyon home.
    let mail = sim.mail().await;
    let invite =
        mail.as_array().unwrap().iter().find(|m| m["to"] == "erin@installer.example.com").expect("erin's mail");
    let code = invite["activationCode"].as_str().unwrap().to_string();
    let accept = format!("/invitations/operators/accept/{code}");
    let pending = sim.get("bob", &format!("/installations/{BOB_INSTALLATION}/invitations")).await;
    assert_eq!(pending.body[0]["email"], "erin@installer.example.com");

    // An owner account is refused (403), and the invitation stays pending.
    let owner = sim.call("alice", Method::POST, &accept, None).await;
    assert_eq!(owner.status, 403, "{:?}", owner.body);
    assert!(owner.message().contains("installer"), "{:?}", owner.body);
    let refused = sim.call("bob", Method::POST, &accept, None).await;
    assert_eq!(refused.status, 403, "not even the inviting owner: {:?}", refused.body);
    assert_eq!(
        sim.get("bob", &format!("/installations/{BOB_INSTALLATION}/invitations")).await.body.as_array().unwrap().len(),
        1
    );
    // An unknown code is 404.
    let unknown = sim.call("erin", Method::POST, "/invitations/operators/accept/NOSUCHCODE", None).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.message().contains("NOSUCHCODE"));

    // Erin accepts: 200, the installation, and she becomes its installer.
    let ok = sim.call("erin", Method::POST, &accept, None).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["installationId"], BOB_INSTALLATION);
    assert_eq!(ids(&sim.get("erin", "/installations").await.body), vec![BOB_INSTALLATION]);
    let users = sim.get("bob", &format!("/installations/{BOB_INSTALLATION}/users")).await.body;
    let erin =
        users.as_array().unwrap().iter().find(|u| u["accountEmail"] == "erin@installer.example.com").expect("erin");
    assert_eq!(erin["roleCode"], "installer");
    assert_eq!(erin["authorizationGroups"], json!(["installerActive"]));
    assert_eq!(sim.get("bob", &format!("/installations/{BOB_INSTALLATION}/invitations")).await.body, json!([]));
    // She now reads the station but cannot command it.
    assert_eq!(sim.get("erin", &station_path(BOB_INSTALLATION, BOB_STATION)).await.status, 200);
    let stop = sim
        .call("erin", Method::POST, &format!("{}/operators/stop", station_path(BOB_INSTALLATION, BOB_STATION)), None)
        .await;
    assert_eq!(stop.status, 403);
    // The code is used up.
    assert_eq!(sim.call("erin", Method::POST, &accept, None).await.status, 404);
}

#[tokio::test]
async fn a_new_invitation_can_be_accepted_by_an_installer_account() {
    let app = spawn_app().await;
    let sim = app.sim();
    let path = format!("/installations/{BOB_CHALET}/invitations");
    let r = sim.post("bob", &path, json!({"email": "erin@installer.example.com", "cultureCode": "fr-fr"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mail = sim.mail().await;
    let code = mail
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["to"] == "erin@installer.example.com")
        .and_then(|m| m["activationCode"].as_str())
        .unwrap()
        .to_string();
    let ok = sim.call("erin", Method::POST, &format!("/invitations/operators/accept/{code}"), None).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["installationId"], BOB_CHALET);
    assert!(ids(&sim.get("erin", "/installations").await.body).contains(&BOB_CHALET));
}

#[tokio::test]
async fn only_the_owner_manages_sharing() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    let alice = sim.account_id("alice").await;
    let ivan = sim.account_id("ivan").await;
    for (method, path, body) in [
        (Method::POST, format!("/installations/{i}/invitations"), Some(json!({"email": "x@example.com"}))),
        (Method::GET, format!("/installations/{i}/invitations"), None),
        (Method::DELETE, format!("/installations/{i}/invitations/x@example.com"), None),
        (Method::POST, format!("/installations/{i}/users/{ivan}/operators/disable"), None),
        (Method::POST, format!("/installations/{i}/users/{ivan}/operators/enable"), None),
        (Method::DELETE, format!("/installations/{i}/users/{alice}"), None),
    ] {
        let r = sim.call("ivan", method.clone(), &path, body).await;
        assert_eq!(r.status, 403, "ivan {method} {path}: {:?}", r.body);
    }
}

#[tokio::test]
async fn disabling_enabling_and_removing_the_installer() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    let ivan = sim.account_id("ivan").await;
    let stations = format!("/installations/{i}/charging-stations");

    let r = sim.call("alice", Method::POST, &format!("/installations/{i}/users/{ivan}/operators/disable"), None).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(r.body, Value::Null, "204 has no body");
    let users = sim.get("alice", &format!("/installations/{i}/users")).await.body;
    let entry = users.as_array().unwrap().iter().find(|u| u["accountId"] == ivan.as_str()).unwrap().clone();
    assert_eq!(entry["enabled"], false);
    assert_eq!(entry["authorizationGroups"], json!(["installerInactive"]));
    // Disabled: he no longer sees the installation nor its data.
    assert_eq!(ids(&sim.get("ivan", "/installations").await.body), Vec::<i64>::new());
    let denied = sim.get("ivan", &stations).await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    assert!(denied.message().contains("disabled"));
    assert_eq!(sim.get("ivan", &station_path(i, ALICE_STATION)).await.status, 403);
    assert_eq!(sim.get("ivan", &format!("/installations/{i}/event-subscriptions")).await.status, 403);
    // Disabling twice is harmless.
    let again =
        sim.call("alice", Method::POST, &format!("/installations/{i}/users/{ivan}/operators/disable"), None).await;
    assert_eq!(again.status, 204);

    let r = sim.call("alice", Method::POST, &format!("/installations/{i}/users/{ivan}/operators/enable"), None).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(ids(&sim.get("ivan", "/installations").await.body), vec![i]);
    assert_eq!(sim.get("ivan", &stations).await.status, 200);

    let r = sim.delete("alice", &format!("/installations/{i}/users/{ivan}")).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(sim.get("alice", &format!("/installations/{i}/users")).await.body.as_array().unwrap().len(), 1);
    assert_eq!(sim.get("ivan", &stations).await.status, 404, "a removed installer is a stranger");
    assert_eq!(ids(&sim.get("ivan", "/installations").await.body), Vec::<i64>::new());
    // Removing him again: he is no longer a user.
    let gone = sim.delete("alice", &format!("/installations/{i}/users/{ivan}")).await;
    assert_eq!(gone.status, 404);
    assert!(gone.message().contains(&ivan));
}

#[tokio::test]
async fn the_owner_cannot_be_disabled_or_removed_and_unknown_users_are_404() {
    let app = spawn_app().await;
    let sim = app.sim();
    let i = ALICE_INSTALLATION;
    let alice = sim.account_id("alice").await;
    for (method, path) in [
        (Method::POST, format!("/installations/{i}/users/{alice}/operators/disable")),
        (Method::POST, format!("/installations/{i}/users/{alice}/operators/enable")),
        (Method::DELETE, format!("/installations/{i}/users/{alice}")),
    ] {
        let r = sim.call("alice", method.clone(), &path, None).await;
        assert_eq!(r.status, 409, "{method} {path}: {:?}", r.body);
        assert!(r.message().contains("owner"), "{:?}", r.body);
    }
    for (method, path) in [
        (Method::POST, format!("/installations/{i}/users/nobody/operators/disable")),
        (Method::POST, format!("/installations/{i}/users/nobody/operators/enable")),
        (Method::DELETE, format!("/installations/{i}/users/nobody")),
    ] {
        let r = sim.call("alice", method.clone(), &path, None).await;
        assert_eq!(r.status, 404, "{method} {path}: {:?}", r.body);
        assert!(r.message().contains("nobody"), "{:?}", r.body);
    }
    // Bob's account exists but is not a user of Alice's installation.
    let bob = sim.account_id("bob").await;
    assert_eq!(sim.delete("alice", &format!("/installations/{i}/users/{bob}")).await.status, 404);
    assert_eq!(sim.get("alice", &format!("/installations/{i}/users")).await.body.as_array().unwrap().len(), 2);
}
