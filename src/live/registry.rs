//! Which installations are watched, and the one upstream event subscription (or poller) kept for
//! each while anybody watches it. A watcher holds a [`WatchGuard`]; when the last one goes, the
//! upstream subscription is deleted after a grace period (a watcher coming back in time keeps it).
//! Subscriptions witty-bff created are recognised by their URL (so they are adopted again after a
//! restart); other subscriptions are never touched.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Live;
use crate::auth::Caller;
use crate::upstream::UpstreamError;
use crate::upstream::notifications::NewEventSubscription;

struct Registration {
    watchers: usize,
    /// The most recent watcher's credentials, used for the upstream calls.
    caller: Caller,
    subscription_id: Option<String>,
    validated: watch::Sender<bool>,
    polling: bool,
    /// Bumped at every watch, so a pending removal knows it is stale.
    generation: u64,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
pub(super) struct Registry {
    inner: Mutex<HashMap<i64, Registration>>,
    /// Validations that arrived before their subscription's id was known.
    early_validations: Mutex<HashSet<String>>,
}

/// Keeps an installation watched; dropping it ends the watch.
pub struct WatchGuard {
    live: Arc<Live>,
    installation_id: i64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.live.metrics().live_subscriptions.dec();
        self.live.registry.unwatch(&self.live, self.installation_id);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Registration>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn watch(&self, live: &Arc<Live>, caller: &Caller, installation_id: i64) -> WatchGuard {
        let mut regs = self.lock();
        match regs.get_mut(&installation_id) {
            Some(reg) => {
                reg.watchers += 1;
                reg.generation += 1;
                reg.caller = caller.clone();
            }
            None => {
                let task = tokio::spawn(setup(live.clone(), installation_id));
                regs.insert(
                    installation_id,
                    Registration {
                        watchers: 1,
                        caller: caller.clone(),
                        subscription_id: None,
                        validated: watch::channel(false).0,
                        polling: false,
                        generation: 0,
                        tasks: vec![task],
                    },
                );
            }
        }
        live.metrics().live_subscriptions.inc();
        count(live, &regs);
        WatchGuard { live: live.clone(), installation_id }
    }

    fn unwatch(&self, live: &Arc<Live>, installation_id: i64) {
        let mut regs = self.lock();
        let Some(reg) = regs.get_mut(&installation_id) else { return };
        reg.watchers = reg.watchers.saturating_sub(1);
        if reg.watchers > 0 {
            return;
        }
        let generation = reg.generation;
        let live = live.clone();
        tokio::spawn(async move {
            tokio::time::sleep(live.settings.grace).await;
            let gone = {
                let mut regs = live.registry.lock();
                match regs.get(&installation_id) {
                    Some(r) if r.watchers == 0 && r.generation == generation => {
                        let gone = regs.remove(&installation_id);
                        count(&live, &regs);
                        gone
                    }
                    _ => None,
                }
            };
            if let Some(reg) = gone {
                for t in &reg.tasks {
                    t.abort();
                }
                if let Some(id) = reg.subscription_id {
                    let client = live.cache.client();
                    match client.unsubscribe(reg.caller.token(), installation_id, &id).await {
                        Ok(()) | Err(UpstreamError::NotFound { .. }) => {
                            tracing::info!(installation = installation_id, "upstream event subscription removed")
                        }
                        Err(e) => {
                            tracing::warn!(installation = installation_id, error = %e, "could not remove the upstream event subscription")
                        }
                    }
                }
            }
        });
    }

    fn caller(&self, installation_id: i64) -> Option<Caller> {
        self.lock().get(&installation_id).map(|r| r.caller.clone())
    }

    /// A validation handshake was answered for this subscription (or installation topic).
    pub(super) fn validated(&self, subscription_name: Option<&str>, topic: Option<&str>) {
        let regs = self.lock();
        let by_name = subscription_name.and_then(|n| regs.values().find(|r| r.subscription_id.as_deref() == Some(n)));
        let by_topic = || {
            let i = topic?.rsplit('/').next()?.parse::<i64>().ok()?;
            regs.get(&i)
        };
        match by_name.or_else(by_topic) {
            Some(reg) => {
                reg.validated.send_replace(true);
            }
            None => {
                if let Some(n) = subscription_name {
                    self.early_validations.lock().unwrap_or_else(|e| e.into_inner()).insert(n.to_string());
                }
            }
        }
    }

    pub(super) fn deleted(&self, live: &Arc<Live>, subscription_name: Option<&str>) {
        let Some(name) = subscription_name else { return };
        let found = {
            let mut regs = self.lock();
            regs.iter_mut().find(|(_, r)| r.subscription_id.as_deref() == Some(name)).map(|(i, r)| {
                r.subscription_id = None;
                *i
            })
        };
        if let Some(i) = found {
            tracing::warn!(installation = i, "the upstream deleted our event subscription; polling instead");
            start_polling(live, i);
        }
    }
}

fn start_polling(live: &Arc<Live>, installation_id: i64) {
    let mut regs = live.registry.lock();
    if let Some(reg) = regs.get_mut(&installation_id)
        && !reg.polling
    {
        reg.polling = true;
        reg.tasks.push(tokio::spawn(super::poller::run(live.clone(), installation_id)));
    }
    count(live, &regs);
}

/// Updates the gauges of watched and polled installations.
fn count(live: &Live, regs: &HashMap<i64, Registration>) {
    let metrics = live.metrics();
    metrics.watched_installations.set(regs.len() as i64);
    metrics.polled_installations.set(regs.values().filter(|r| r.polling).count() as i64);
}

/// Registers (or adopts) the upstream subscription, then waits for its validation; polls when
/// webhooks are off, registration fails or validation does not come in time.
async fn setup(live: Arc<Live>, installation_id: i64) {
    if !live.settings.webhooks {
        start_polling(&live, installation_id);
        return;
    }
    let Some(caller) = live.registry.caller(installation_id) else { return };
    let (id, already_valid) = match ensure_subscription(&live, &caller, installation_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(installation = installation_id, error = %e, "cannot register the webhook; polling instead");
            start_polling(&live, installation_id);
            return;
        }
    };
    let early = live.registry.early_validations.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    let mut validated = {
        let mut regs = live.registry.lock();
        let Some(reg) = regs.get_mut(&installation_id) else { return };
        reg.subscription_id = Some(id);
        if already_valid || early {
            reg.validated.send_replace(true);
        }
        reg.validated.subscribe()
    };
    let ok = tokio::time::timeout(live.settings.validation_timeout, validated.wait_for(|v| *v)).await;
    if !matches!(ok, Ok(Ok(_))) {
        tracing::warn!(
            installation = installation_id,
            "the upstream did not validate the webhook in time; polling instead"
        );
        start_polling(&live, installation_id);
    }
}

/// Our subscription on the installation: adopted when one with our URL exists, else created.
/// Subscriptions of ours with another URL (an older secret or address) are replaced.
async fn ensure_subscription(live: &Live, caller: &Caller, i: i64) -> Result<(String, bool), UpstreamError> {
    let client = live.cache.client();
    let url = live.webhook_url();
    let ours = format!("{}/webhooks/witty/", live.settings.public_url.as_str().trim_end_matches('/'));
    for s in client.event_subscriptions(caller.token(), i).await? {
        let data = s.protocol_data.as_deref().unwrap_or_default();
        if !data.starts_with(&ours) {
            continue;
        }
        let failed = s.state.as_deref().is_some_and(|st| st.eq_ignore_ascii_case("failed"));
        if data == url && !failed {
            let valid = s.state.as_deref().is_some_and(|st| st.eq_ignore_ascii_case("created"));
            tracing::info!(installation = i, "adopted the existing upstream event subscription");
            return Ok((s.event_subscription_id, valid));
        }
        let _ = client.unsubscribe(caller.token(), i, &s.event_subscription_id).await;
    }
    let new = NewEventSubscription { protocol_code: "Webhook".into(), protocol_data: url, event_type: None };
    let created = client.subscribe(caller.token(), i, &new).await?;
    tracing::info!(installation = i, "registered the webhook upstream");
    Ok((created.event_subscription_id, false))
}

impl Live {
    /// The caller whose credentials the registry uses for an installation.
    pub(super) fn registry_caller(&self, installation_id: i64) -> Option<Caller> {
        self.registry.caller(installation_id)
    }
}
