//! Composition of decorators, in an explicit order (tower's onion rule), and
//! how one hook of one decorator is called: its typed state found, a panic
//! turned into a failure of that exchange.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use http::{Response, request, response};

use super::{Action, Decorator, Exchange};
use crate::body::Body;
use crate::error::{ErrorKind, ProxyError};

/// The most decorators one chain holds: each one gets a bit in a per-exchange mask.
pub(crate) const MAX_DECORATORS: usize = 64;

/// The name of the decorated service among the upstreams.
pub(crate) const SERVICE: &str = "service";

/// One decorator's hooks with its state type erased, so a chain can hold
/// decorators of different types. Implemented for every [`Decorator`].
trait Hooks: Send + Sync {
    fn start(&self, slot: &mut Slot, ex: &Exchange);
    fn request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        slot: &'a mut Slot,
        ex: &'a mut Exchange,
    ) -> Action<'a>;
    fn upstream_request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        slot: &'a mut Slot,
        ex: &'a mut Exchange,
    ) -> Action<'a>;
    fn response<'a>(
        &'a self,
        head: &'a mut response::Parts,
        slot: &'a mut Slot,
        ex: &'a mut Exchange,
    ) -> Action<'a>;
    fn error(&self, err: &ProxyError, slot: &mut Slot, ex: &mut Exchange)
    -> Option<Response<Body>>;
    fn complete(&self, slot: &mut Slot, ex: &Exchange);
}

/// One decorator's state on one exchange, made on first use.
type Slot = Option<Box<dyn Any + Send>>;

/// The decorators' states of one exchange. Zero-sized states (`()`, unit
/// structs) live nowhere, so a chain of stateless decorators allocates nothing.
#[derive(Default)]
pub(crate) struct States {
    slots: Vec<Slot>,
    /// Stands in for the slot of a zero-sized state.
    none: Slot,
}

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("States").finish_non_exhaustive()
    }
}

impl States {
    fn slot(&mut self, i: usize, sized: bool) -> &mut Slot {
        if !sized {
            return &mut self.none;
        }
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        &mut self.slots[i]
    }
}

/// `slot`'s state, made with `Default` if this is its first use.
fn state_of<S: Default + Send + 'static>(slot: &mut Slot) -> &mut S {
    if std::mem::size_of::<S>() == 0 && !std::mem::needs_drop::<S>() {
        // A zero-sized value holds nothing: a fresh one is the same one, and
        // boxing it does not allocate.
        return Box::leak(Box::new(S::default()));
    }
    if !slot.as_ref().is_some_and(|s| s.is::<S>()) {
        *slot = Some(Box::new(S::default()));
    }
    match slot.as_mut().and_then(|s| s.downcast_mut::<S>()) {
        Some(state) => state,
        None => unreachable!("the slot was just filled with an S"),
    }
}

fn sized<S>() -> bool {
    std::mem::size_of::<S>() != 0 || std::mem::needs_drop::<S>()
}

impl<D: Decorator> Hooks for D {
    fn start(&self, slot: &mut Slot, ex: &Exchange) {
        self.on_start(state_of::<D::State>(slot), ex)
    }
    fn request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        slot: &'a mut Slot,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        self.on_request(head, state_of::<D::State>(slot), ex)
    }
    fn upstream_request<'a>(
        &'a self,
        head: &'a mut request::Parts,
        slot: &'a mut Slot,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        self.on_upstream_request(head, state_of::<D::State>(slot), ex)
    }
    fn response<'a>(
        &'a self,
        head: &'a mut response::Parts,
        slot: &'a mut Slot,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        self.on_response(head, state_of::<D::State>(slot), ex)
    }
    fn error(
        &self,
        err: &ProxyError,
        slot: &mut Slot,
        ex: &mut Exchange,
    ) -> Option<Response<Body>> {
        self.on_error(err, state_of::<D::State>(slot), ex)
    }
    fn complete(&self, slot: &mut Slot, ex: &Exchange) {
        self.on_complete(state_of::<D::State>(slot), ex)
    }
}

#[derive(Clone)]
struct Entry {
    hooks: Arc<dyn Hooks>,
    /// Its name, read once (a hook call needs it only to report a panic).
    name: &'static str,
    /// Whether its state takes room (see [`States`]).
    sized: bool,
    /// It has request hooks ([`Decorator::ON_REQUEST`]).
    on_request: bool,
    /// It has a response hook ([`Decorator::ON_RESPONSE`]).
    on_response: bool,
}

fn entry<D: Decorator>(decorator: D) -> Entry {
    Entry {
        name: decorator.name(),
        hooks: Arc::new(decorator),
        sized: sized::<D::State>(),
        on_request: D::ON_REQUEST,
        on_response: D::ON_RESPONSE,
    }
}

/// A named upstream besides the service, for decorators that route requests
/// ([`Exchange::set_upstream`]): A/B tests, canaries, header routing. Each has
/// its own connection pool, timeouts and statistics; the rest of its settings
/// (retries, idle timeout) are the service's.
#[derive(Debug, Clone)]
pub struct Target {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) response_timeout: Option<Duration>,
}

impl Target {
    /// The upstream `name`, at `host:port` (an IP address or a name resolved
    /// at each new connection).
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Target {
            name: name.into(),
            host: host.into(),
            port,
            connect_timeout: None,
            response_timeout: None,
        }
    }

    /// How long a connection may take (default: `SITIO_CONNECT_TIMEOUT`).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    /// How long the response head may take (default: `SITIO_UPSTREAM_TIMEOUT`).
    pub fn response_timeout(mut self, limit: Duration) -> Self {
        self.response_timeout = Some(limit);
        self
    }

    /// Its name, as in statistics and logs.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An ordered, shareable list of decorators, and the upstreams they may route
/// to. Cheap to clone.
#[derive(Clone, Default)]
pub struct Decorators {
    chain: Arc<[Entry]>,
    targets: Arc<[Target]>,
}

impl std::fmt::Debug for Decorators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decorators")
            .field("names", &self.names())
            .field("upstreams", &self.targets)
            .finish()
    }
}

/// Builds a [`Decorators`] chain; the first decorator added is the outermost.
#[derive(Default)]
pub struct DecoratorsBuilder {
    chain: Vec<Entry>,
    targets: Vec<Target>,
}

impl std::fmt::Debug for DecoratorsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoratorsBuilder").finish_non_exhaustive()
    }
}

impl DecoratorsBuilder {
    /// Adds `decorator` inside all those added before it: it sees requests after
    /// them and responses before them.
    ///
    /// # Panics
    /// When more than `MAX_DECORATORS` (64) are added, a programming error.
    pub fn with(mut self, decorator: impl Decorator) -> Self {
        assert!(
            self.chain.len() < MAX_DECORATORS,
            "sitio supports at most {MAX_DECORATORS} decorators in one chain"
        );
        self.chain.push(entry(decorator));
        self
    }

    /// Registers an upstream that hooks may send requests to by its name.
    ///
    /// # Panics
    /// When the name is `service` or already registered, a programming error.
    pub fn upstream(mut self, target: Target) -> Self {
        assert!(
            target.name != SERVICE && self.targets.iter().all(|t| t.name != target.name),
            "upstream name {:?} is taken",
            target.name
        );
        self.targets.push(target);
        self
    }

    /// Finishes the chain.
    pub fn build(self) -> Decorators {
        Decorators {
            chain: self.chain.into(),
            targets: self.targets.into(),
        }
    }
}

impl Decorators {
    /// Starts an empty chain.
    pub fn builder() -> DecoratorsBuilder {
        DecoratorsBuilder::default()
    }

    /// A chain with no decorators: sitio as a plain, correct reverse proxy.
    pub fn none() -> Self {
        Decorators::default()
    }

    /// This chain inside `decorator`: it becomes the outermost layer.
    ///
    /// # Panics
    /// When the chain already holds `MAX_DECORATORS` (64).
    pub fn wrapped_in(&self, decorator: impl Decorator) -> Decorators {
        self.extended(entry(decorator), true)
    }

    /// This chain around `decorator`: it becomes the innermost layer, next to
    /// the service.
    ///
    /// # Panics
    /// When the chain already holds `MAX_DECORATORS` (64).
    pub fn wrapping(&self, decorator: impl Decorator) -> Decorators {
        self.extended(entry(decorator), false)
    }

    /// This chain, with `target` registered too; an error when its name is taken.
    pub(crate) fn with_target(&self, target: Target) -> Result<Decorators, String> {
        if target.name == SERVICE || self.targets.iter().any(|t| t.name == target.name) {
            return Err(format!("upstream name {:?} is taken", target.name));
        }
        let mut targets = self.targets.to_vec();
        targets.push(target);
        Ok(Decorators {
            chain: self.chain.clone(),
            targets: targets.into(),
        })
    }

    fn extended(&self, decorator: Entry, outermost: bool) -> Decorators {
        assert!(self.chain.len() < MAX_DECORATORS, "too many decorators");
        let mut chain: Vec<Entry> = self.chain.to_vec();
        chain.insert(if outermost { 0 } else { chain.len() }, decorator);
        Decorators {
            chain: chain.into(),
            targets: self.targets.clone(),
        }
    }

    /// How many decorators the chain holds.
    pub fn len(&self) -> usize {
        self.chain.len()
    }

    /// True when the chain holds no decorator.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// The decorators' names, outermost first.
    pub fn names(&self) -> Vec<&'static str> {
        self.chain.iter().map(|d| d.name).collect()
    }

    /// The upstreams registered besides the service.
    pub fn upstreams(&self) -> &[Target] {
        &self.targets
    }

    /// Whether some decorator has request hooks (reads or edits request
    /// heads): without any, the head goes on as the client's bytes.
    pub(crate) fn has_request_hooks(&self) -> bool {
        self.chain.iter().any(|d| d.on_request)
    }

    /// Whether some decorator has a response hook (reads response heads).
    pub(crate) fn has_response_hooks(&self) -> bool {
        self.chain.iter().any(|d| d.on_response)
    }

    /// Decorator `i`, about to run a hook: its entry and its state's slot.
    fn enter<'a>(
        &'a self,
        i: usize,
        states: &'a mut States,
        ex: &mut Exchange,
    ) -> (&'a Entry, &'a mut Slot) {
        let d = &self.chain[i];
        ex.current = i;
        (d, states.slot(i, d.sized))
    }

    /// Decorator `i`'s request hook.
    pub(crate) fn request<'a>(
        &'a self,
        i: usize,
        head: &'a mut request::Parts,
        states: &'a mut States,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        ex.requested |= 1u64 << i;
        if !self.chain[i].on_request {
            return Action::Continue;
        }
        let (d, slot) = self.enter(i, states, ex);
        guarded(d.name, || d.hooks.request(head, slot, ex))
    }

    /// Decorator `i`'s upstream-request hook.
    pub(crate) fn upstream_request<'a>(
        &'a self,
        i: usize,
        head: &'a mut request::Parts,
        states: &'a mut States,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        if !self.chain[i].on_request {
            return Action::Continue;
        }
        let (d, slot) = self.enter(i, states, ex);
        guarded(d.name, || d.hooks.upstream_request(head, slot, ex))
    }

    /// Decorator `i`'s response hook.
    pub(crate) fn response<'a>(
        &'a self,
        i: usize,
        head: &'a mut response::Parts,
        states: &'a mut States,
        ex: &'a mut Exchange,
    ) -> Action<'a> {
        if !self.chain[i].on_response {
            return Action::Continue;
        }
        let (d, slot) = self.enter(i, states, ex);
        guarded(d.name, || d.hooks.response(head, slot, ex))
    }

    /// Decorator `i`'s error hook; a panic there counts as no answer.
    pub(crate) fn error(
        &self,
        i: usize,
        err: &ProxyError,
        states: &mut States,
        ex: &mut Exchange,
    ) -> Option<Response<Body>> {
        let (d, slot) = self.enter(i, states, ex);
        catch_unwind(AssertUnwindSafe(|| d.hooks.error(err, slot, ex)))
            .unwrap_or_else(|p| report_panic(d.name, "on_error", &*p))
    }

    /// Start hooks, outermost first; a panic in one skips only that one.
    pub(crate) fn start(&self, states: &mut States, ex: &mut Exchange) {
        for (i, d) in self.chain.iter().enumerate() {
            ex.current = i;
            let slot = states.slot(i, d.sized);
            let ex = &*ex;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| d.hooks.start(slot, ex))) {
                report_panic::<()>(d.name, "on_start", &*p);
            }
        }
    }

    /// Completion hooks, innermost first; a panic in one skips only that one.
    pub(crate) fn complete(&self, states: &mut States, ex: &mut Exchange) {
        for (i, d) in self.chain.iter().enumerate().rev() {
            ex.current = i;
            let slot = states.slot(i, d.sized);
            let ex = &*ex;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| d.hooks.complete(slot, ex))) {
                report_panic::<()>(d.name, "on_complete", &*p);
            }
        }
    }

    /// The name of decorator `i`, for logs.
    pub(crate) fn name_of(&self, i: usize) -> &'static str {
        self.chain[i].name
    }
}

/// Runs a hook; a panic becomes a failure of this exchange (a 500), never a
/// dropped connection.
fn guarded<'a>(name: &'static str, hook: impl FnOnce() -> Action<'a>) -> Action<'a> {
    match catch_unwind(AssertUnwindSafe(hook)) {
        Ok(action) => action,
        Err(payload) => Action::Fail(panicked(name, &*payload)),
    }
}

/// The failure a panic in decorator `name` becomes.
pub(crate) fn panicked(name: &'static str, payload: &(dyn Any + Send)) -> ProxyError {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    ProxyError::new(
        ErrorKind::Internal,
        format!("decorator {name} panicked: {message}"),
    )
}

fn report_panic<T>(name: &'static str, hook: &str, payload: &(dyn Any + Send)) -> Option<T> {
    let err = panicked(name, payload);
    tracing::error!(decorator = name, hook, error = %err, "decorator panicked");
    None
}
