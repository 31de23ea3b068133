//! Composition of decorators, in an explicit order (tower's onion rule).

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, request};

use super::{Action, Decorator, Exchange};
use crate::body::Body;
use crate::error::ProxyError;

/// The most decorators one chain holds: each one gets a bit in a per-exchange mask.
pub(crate) const MAX_DECORATORS: usize = 64;

/// An ordered, shareable list of decorators. Cheap to clone.
#[derive(Clone, Default)]
pub struct Decorators {
    chain: Arc<[Arc<dyn Decorator>]>,
}

impl std::fmt::Debug for Decorators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decorators").finish_non_exhaustive()
    }
}

/// Builds a [`Decorators`] chain; the first decorator added is the outermost.
#[derive(Default)]
pub struct DecoratorsBuilder {
    chain: Vec<Arc<dyn Decorator>>,
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
        self.chain.push(Arc::new(decorator));
        self
    }

    /// Finishes the chain.
    pub fn build(self) -> Decorators {
        Decorators {
            chain: self.chain.into(),
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
        self.extended(Arc::new(decorator), true)
    }

    /// This chain around `decorator`: it becomes the innermost layer, next to
    /// the service.
    ///
    /// # Panics
    /// When the chain already holds `MAX_DECORATORS` (64).
    pub fn wrapping(&self, decorator: impl Decorator) -> Decorators {
        self.extended(Arc::new(decorator), false)
    }

    fn extended(&self, decorator: Arc<dyn Decorator>, outermost: bool) -> Decorators {
        assert!(self.chain.len() < MAX_DECORATORS, "too many decorators");
        let mut chain: Vec<Arc<dyn Decorator>> = self.chain.iter().cloned().collect();
        chain.insert(if outermost { 0 } else { chain.len() }, decorator);
        Decorators {
            chain: chain.into(),
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
        self.chain.iter().map(|d| d.name()).collect()
    }

    /// Runs request hooks outermost first. `Err((i, response))` means decorator
    /// `i` answered; only the decorators outside it see that response.
    #[allow(clippy::result_large_err)] // the answer is moved out once, not copied around
    pub(crate) fn on_request(
        &self,
        head: &mut request::Parts,
        ex: &mut Exchange,
    ) -> Result<(), (usize, Response<Body>)> {
        for (i, d) in self.chain.iter().enumerate() {
            ex.current = i;
            ex.requested |= 1u64 << i;
            if let Action::Respond(res) = d.on_request(head, ex) {
                return Err((i, res));
            }
        }
        Ok(())
    }

    /// Runs response hooks of decorators `0..upto`, innermost first. A hook
    /// that replaces the response hands the new one to the decorators outside it.
    pub(crate) fn on_response(
        &self,
        upto: usize,
        mut res: Response<Body>,
        ex: &mut Exchange,
    ) -> Response<Body> {
        for i in (0..upto).rev() {
            ex.current = i;
            let (mut head, body) = res.into_parts();
            res = match self.chain[i].on_response(&mut head, ex) {
                Action::Continue => Response::from_parts(head, body),
                Action::Respond(replacement) => {
                    body.discard();
                    // Inner decorators watched the discarded body, not this one.
                    ex.body_watchers &= low_bits(i + 1) | !low_bits(upto);
                    replacement
                }
            };
        }
        res
    }

    /// Asks decorators, innermost first, for a response to an upstream failure.
    pub(crate) fn on_upstream_error(
        &self,
        err: &ProxyError,
        ex: &mut Exchange,
    ) -> Option<Response<Body>> {
        for (i, d) in self.chain.iter().enumerate().rev() {
            ex.current = i;
            if let Some(res) = d.on_upstream_error(err, ex) {
                return Some(res);
            }
        }
        None
    }

    /// Runs body hooks of the decorators that asked for them, innermost first.
    pub(crate) fn on_body_chunk(&self, chunk: &mut Bytes, ex: &mut Exchange) {
        for i in (0..self.chain.len()).rev() {
            if ex.body_watchers & (1u64 << i) != 0 {
                ex.current = i;
                self.chain[i].on_body_chunk(chunk, ex);
            }
        }
    }

    /// Runs completion hooks, innermost first.
    pub(crate) fn on_complete(&self, ex: &mut Exchange) {
        for (i, d) in self.chain.iter().enumerate().rev() {
            ex.current = i;
            d.on_complete(ex);
        }
    }
}

/// A mask of the `n` lowest bits.
fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}
