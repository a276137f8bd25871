//! [`run`]: the one way a mutation runs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Access, Command, Doubt, Services};
use crate::auth::Caller;
use crate::cache::Change;
use crate::graphql::error::{AppError, AppResult};
use crate::idempotency::{Claim, Claimed, Completion, Failure, IdempotencyStore, Outcome, Refusal, Slot, digest};
use crate::upstream::{UpstreamClient, UpstreamError};

/// The longest idempotency key, in bytes (the `Idempotency-Key` header or `idempotencyKey`).
const MAX_KEY_BYTES: usize = 255;

/// Where an idempotency key came from; the argument wins over the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource {
    Argument,
    Header,
}

/// An idempotency key as the request gave it.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    key: String,
    /// Under the header on a request of several mutations: this field's place among them.
    place: Option<usize>,
    /// Under the header: the request's root fields with their arguments, and its variables.
    request: Option<String>,
}

impl Key {
    /// The key given as the `idempotencyKey` argument, or as the header (with this field's place,
    /// on a request of several mutations, and the request it names); 1 to 255 bytes.
    pub(crate) fn new(key: String, source: KeySource, place: Option<usize>, request: Option<String>) -> AppResult<Key> {
        let name = match source {
            KeySource::Argument => "idempotencyKey",
            KeySource::Header => "the Idempotency-Key header",
        };
        if key.trim().is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(AppError::bad_input(format!(
                "{name} must be 1 to {MAX_KEY_BYTES} bytes and not blank (got {} bytes); nothing was sent",
                key.len()
            )));
        }
        Ok(Key { key, place, request })
    }
}

/// One call of a command.
pub(crate) struct Invocation<'a> {
    pub caller: &'a Caller,
    pub installation_id: Option<i64>,
    pub key: Option<Key>,
    /// The arguments as the command normalised them: a key reused with others is refused.
    pub fingerprint: String,
}

impl Invocation<'_> {
    /// The installation of a command that needs one.
    pub(crate) fn installation(&self) -> AppResult<i64> {
        self.installation_id.ok_or_else(|| AppError::internal("a command on an installation was called without it"))
    }
}

/// Runs `write` once per idempotency key: claims the key (a replay or a wait for the first request
/// answers without running it), checks who may run `command`, then runs `write`, which sends the
/// command's one upstream write through [`Write::send`]. An outcome that shows nothing ran
/// upstream (a failure before sending, or one [`did_not_run`] names) is not kept, so the key may
/// try again; any other is kept for the store's window, even when the request is dropped (the
/// client went away) after sending: then the key answers the command's doubt.
pub(crate) async fn run<'a, T, F, Fut>(
    svc: &'a Services,
    access: &impl Access,
    command: &'static Command,
    call: Invocation<'a>,
    write: F,
) -> AppResult<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(Write<'a>) -> Fut,
    Fut: Future<Output = AppResult<T>>,
{
    let (i, caller) = (call.installation_id, call.caller);
    let handle = Write { svc, command, caller, installation_id: i, progress: Arc::default() };
    let Some(key) = call.key else {
        access.allow(command.who, i).await?;
        return write(handle).await;
    };
    let claim = claim(command, caller, key, &call.fingerprint)?;
    loop {
        match svc.idempotency.claim(&claim).await.map_err(refused)? {
            Claimed::Replay(outcome) => return answer(outcome),
            Claimed::Wait(first) => match first.await {
                Some(outcome) => return answer(outcome.map_err(refused)?),
                // The first request went away before sending anything: claim it again.
                None => continue,
            },
            Claimed::Run => break,
        }
    }
    let mut lead = Lead {
        store: &*svc.idempotency,
        claim: &claim,
        progress: handle.progress.clone(),
        doubt: command.doubt,
        done: false,
    };
    let outcome = match access.allow(command.who, i).await {
        Ok(()) => write(handle).await,
        Err(e) => Err(e),
    };
    lead.settle(kept(&outcome));
    outcome
}

/// Runs a command whose whole work is its one upstream write, and answers what the write did.
pub(crate) async fn send<'a, V, F, Fut>(
    access: &impl Access,
    call: Invocation<'a>,
    svc: &'a Services,
    command: &'static Command,
    write: F,
) -> AppResult<V>
where
    V: Serialize + DeserializeOwned,
    F: FnOnce(&'a UpstreamClient, &'a str) -> Fut,
    Fut: Future<Output = Result<V, UpstreamError>>,
{
    run(svc, access, command, call, |w| async move { w.send(write(svc.cache.client(), w.token())).await }).await
}

/// [`send`], with `check` run first, once the caller may run the command and before anything is
/// sent: a command naming an object of the installation (a station, a subscription) reads that
/// the object is the installation's, so one of another installation, or none, is refused with
/// nothing sent rather than answered by the upstream after the write.
pub(crate) async fn send_checked<'a, V, C, F, Fut>(
    access: &impl Access,
    call: Invocation<'a>,
    svc: &'a Services,
    command: &'static Command,
    check: C,
    write: F,
) -> AppResult<V>
where
    V: Serialize + DeserializeOwned,
    C: Future<Output = AppResult<()>>,
    F: FnOnce(&'a UpstreamClient, &'a str) -> Fut,
    Fut: Future<Output = Result<V, UpstreamError>>,
{
    run(svc, access, command, call, |w| async move {
        check.await?;
        w.send(write(svc.cache.client(), w.token())).await
    })
    .await
}

/// The key's claim, its fingerprint hashed.
fn claim(command: &Command, caller: &Caller, key: Key, fingerprint: &str) -> AppResult<Claim> {
    let hash = |s: &str| digest(s).ok_or_else(|| AppError::internal("an idempotency fingerprint could not be hashed"));
    let request = key.request.as_deref().map(hash).transpose()?;
    Ok(Claim {
        slot: Slot { who: caller.sub.clone(), key: key.key, place: key.place },
        field: command.name.to_string(),
        arguments: fingerprint.len(),
        fingerprint: hash(fingerprint)?,
        request,
    })
}

/// What a command's write has done so far, for its key should the request go away.
#[derive(Default)]
struct Progress {
    sent: AtomicBool,
    /// What to keep for the key if the request goes away after the upstream accepted the write
    /// (while waiting for its effect): the answer it would have had without waiting.
    accepted: Mutex<Option<serde_json::Value>>,
    /// The cache's mark of resources unsettled by the write, to settle once its change shows.
    unsettled: Mutex<Option<u64>>,
}

/// Given to a command's write: sends it and drops what it made stale.
pub(crate) struct Write<'a> {
    svc: &'a Services,
    command: &'static Command,
    caller: &'a Caller,
    installation_id: Option<i64>,
    progress: Arc<Progress>,
}

impl<'a> Write<'a> {
    /// Sends the command's one upstream write (never retried) and sorts its failure; once it is
    /// accepted, drops what the command changes.
    pub(crate) async fn send<V>(&self, write: impl Future<Output = Result<V, UpstreamError>>) -> AppResult<V> {
        self.progress.sent.store(true, Ordering::SeqCst);
        let value = write.await.map_err(|e| {
            if did_not_run(&e) {
                self.progress.sent.store(false, Ordering::SeqCst);
            }
            command_error(e, self.command.doubt)
        })?;
        let mark = self.invalidate(true).await;
        *lock(&self.progress.unsettled) = mark;
        Ok(value)
    }

    /// The write's change shows: what it changed is read again, and kept for its usual time.
    pub(crate) async fn settled(&self) {
        self.invalidate(false).await;
        if let Some(mark) = lock(&self.progress.unsettled).take() {
            self.svc.cache.settle(mark);
        }
    }

    /// The upstream accepted the write: should the request go away before it finishes (waiting
    /// for the write's effect), `answer` is what its key keeps, not a doubt.
    pub(crate) fn accepted<T: Serialize>(&self, answer: &T) {
        *lock(&self.progress.accepted) = serde_json::to_value(answer).ok();
    }

    pub(crate) fn services(&self) -> &'a Services {
        self.svc
    }

    /// The caller's bearer token, forwarded upstream.
    pub(crate) fn token(&self) -> &'a str {
        self.caller.token()
    }

    pub(crate) fn caller(&self) -> &'a Caller {
        self.caller
    }

    /// Drops what the command changes, on every replica (and, once sent, marks what it
    /// `unsettles`: the mark, when there is one).
    async fn invalidate(&self, sent: bool) -> Option<u64> {
        let changes = &self.command.changes;
        let unsettles = if sent && self.installation_id.is_some() { changes.unsettles } else { &[] };
        let change = Change {
            installation: self.installation_id,
            here: if self.installation_id.is_some() { changes.installation.to_vec() } else { Vec::new() },
            everywhere: changes.everywhere.to_vec(),
            own: (!changes.own.is_empty()).then(|| (self.caller.sub.to_string(), changes.own.to_vec())),
            unsettles: unsettles.to_vec(),
            unsettle_ms: self.svc.commands.wait_timeout.as_millis() as u64,
            // Subscriptions watching what the caller no longer sees end now, not at an event
            // that never comes.
            access: changes.access,
        };
        self.svc.live.changed(change).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request that runs a key's command while others with the key wait for it. Dropped before
/// it settled (the client went away), it keeps a doubt for the key if the write was sent.
struct Lead<'a> {
    store: &'a dyn IdempotencyStore,
    claim: &'a Claim,
    progress: Arc<Progress>,
    doubt: Doubt,
    done: bool,
}

impl Lead<'_> {
    fn settle(&mut self, end: Completion) {
        if !std::mem::replace(&mut self.done, true) {
            let end = match end {
                Completion::Pass(outcome) if self.progress.sent.load(Ordering::SeqCst) => Completion::Keep(outcome),
                end => end,
            };
            self.store.complete(self.claim, end);
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let field = &self.claim.field;
        let accepted = lock(&self.progress.accepted).take();
        if let Some(answer) = accepted {
            tracing::info!(
                field,
                "a mutation was dropped while waiting on an accepted write; its key keeps the acceptance"
            );
            self.settle(Completion::Keep(Ok(answer)));
        } else if self.progress.sent.load(Ordering::SeqCst) {
            tracing::warn!(field, "a mutation was dropped after sending its write; its key keeps a doubt");
            let doubt = self.doubt.error("the request that sent it went away before the answer");
            self.settle(Completion::Keep(Err(failure(&doubt))));
        } else {
            // Nothing was sent: waiters learn it and try again themselves.
            self.settle(Completion::Free);
        }
    }
}

/// How an outcome ends its key: kept when it succeeded; a failure only passed on to those waiting
/// ([`Lead::settle`] keeps it too when the write may have run).
fn kept<T: Serialize>(outcome: &AppResult<T>) -> Completion {
    match outcome {
        Ok(answer) => match serde_json::to_value(answer) {
            Ok(answer) => Completion::Keep(Ok(answer)),
            Err(e) => Completion::Keep(Err(failure(&AppError::internal(format!("an answer could not be kept: {e}"))))),
        },
        Err(e) => Completion::Pass(Err(failure(e))),
    }
}

/// A kept outcome as the answer it was.
fn answer<T: DeserializeOwned>(outcome: Outcome) -> AppResult<T> {
    match outcome {
        Ok(answer) => {
            serde_json::from_value(answer).map_err(|_| AppError::internal("idempotent result of another type"))
        }
        Err(failure) => Err(error(failure)),
    }
}

fn refused(refusal: Refusal) -> AppError {
    match refusal {
        Refusal::Conflict(message) => AppError::BadUserInput(message),
        Refusal::Full { retry_after, message } => AppError::RateLimited { retry_after: Some(retry_after), message },
    }
}

/// An error as a key keeps it.
fn failure(e: &AppError) -> Failure {
    let retry_after_ms = match e {
        AppError::RateLimited { retry_after, .. } => {
            retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        _ => None,
    };
    Failure { code: e.code().to_string(), message: e.message().to_string(), retry_after_ms }
}

/// A kept error as it was first told.
fn error(f: Failure) -> AppError {
    let m = f.message;
    match f.code.as_str() {
        "UNAUTHENTICATED" => AppError::Unauthenticated(m),
        "FORBIDDEN" => AppError::Forbidden(m),
        "NOT_FOUND" => AppError::NotFound(m),
        "BAD_USER_INPUT" => AppError::BadUserInput(m),
        "CONFLICT" => AppError::Conflict(m),
        "RATE_LIMITED" => {
            AppError::RateLimited { retry_after: f.retry_after_ms.map(Duration::from_millis), message: m }
        }
        "UPSTREAM_UNAVAILABLE" => AppError::UpstreamUnavailable(m),
        "UPSTREAM_ERROR" => AppError::UpstreamError(m),
        "QUERY_TOO_COMPLEX" => AppError::QueryTooComplex(m),
        _ => AppError::Internal,
    }
}

/// A failure of a write, said so the user knows whether it may have happened (see [`did_not_run`]).
fn command_error(e: UpstreamError, doubt: Doubt) -> AppError {
    match e {
        UpstreamError::Timeout => doubt.error("no answer in time"),
        UpstreamError::Unreachable(_) => doubt.error("the connection was cut"),
        UpstreamError::Server { status: status @ (502 | 504), .. } => {
            doubt.error(&format!("its gateway answered {status} after passing the request on"))
        }
        // A failure on its side after taking the request (not 501 or 503, which say it did not
        // run): it may have written first.
        UpstreamError::Server { status: status @ (500 | 505..=599), .. } => {
            doubt.error(&format!("it failed with {status}"))
        }
        other => other.into(),
    }
}

/// Whether a failed write certainly did not run upstream, so that sending it again under the same
/// idempotency key is right: throttled (429, or 403 with `Retry-After`), a service that says it
/// is unavailable (503), or a token refused (401: the client refreshes it and tries again). A
/// timeout, a connection cut after sending, or a gateway's 502 or 504 (it passed the request on)
/// may have run; another 4xx is the upstream's answer to this request. A connection that could not
/// be made (`NotConnected`) sent nothing; one reset or cut (`Unreachable`) may have sent it.
fn did_not_run(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::RateLimited { .. }
            | UpstreamError::Unauthorized { .. }
            | UpstreamError::Server { status: 501 | 503, .. }
            | UpstreamError::Rejected { status: 408, .. }
            | UpstreamError::NotConnected(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_errors_come_back_as_they_were_told() {
        let errors = [
            AppError::Unauthenticated("a".into()),
            AppError::Forbidden("b".into()),
            AppError::NotFound("c".into()),
            AppError::bad_input("d"),
            AppError::Conflict("e".into()),
            AppError::RateLimited { retry_after: Some(Duration::from_secs(3)), message: "f".into() },
            AppError::RateLimited { retry_after: None, message: "g".into() },
            AppError::UpstreamUnavailable("h".into()),
            AppError::UpstreamError("i".into()),
            AppError::QueryTooComplex("j".into()),
            AppError::Internal,
        ];
        for e in errors {
            assert_eq!(error(failure(&e)), e);
        }
    }

    #[test]
    fn kept_answers_read_back_as_they_were() {
        use super::super::stations::{Commanded, StationState, Status};
        use crate::upstream::meters::GridMeter;
        let station = serde_json::json!({
            "id": "cs-1", "serialNumber": "SN", "installationParentId": 33, "type": "witty",
            "properties": {
                "friendlyName": "Garage", "averageEvConsumption": "17.5", "tariff1": "hc", "ledPower": 20,
                "chargeMode": "immediate", "erlConnected": true, "unknownMember": [1],
                "currentSession": {"startDate": "2026-01-01T00:00:00Z"}, "heartbeat": {}
            }
        });
        let state = StationState { station: serde_json::from_value(station).unwrap(), fetched_at: chrono::Utc::now() };
        let first = Commanded { status: Status::Accepted, state };
        let Completion::Keep(outcome) = kept(&Ok::<_, AppError>(first.clone())) else { panic!("not kept") };
        let again: Commanded = answer(outcome).unwrap();
        assert_eq!(
            (again.status, &again.state.station, again.state.fetched_at),
            (first.status, &first.state.station, first.state.fetched_at)
        );
        let meter: GridMeter = serde_json::from_value(serde_json::json!({
            "id": "gm", "properties": {"ticType": 2, "gridSubscription": "HCHP", "authorizeTic": "true"}
        }))
        .unwrap();
        let Completion::Keep(outcome) = kept(&Ok::<_, AppError>(vec![meter.clone()])) else { panic!("not kept") };
        assert_eq!(answer::<Vec<GridMeter>>(outcome).unwrap(), vec![meter]);
    }
}
