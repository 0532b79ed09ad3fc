//! The router tokens the controller handed to this edge's tool (in Listen and Dial
//! responses the edge forwarded). The local router serves only those: the edge cannot verify
//! a token's signature, and it opens sessions with the tool's own lease certificate, so a
//! token forged by another local process must not be enough.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::router_token;

/// Tokens remembered at most; the oldest expiry goes first beyond it. A tool gets one token
/// per connection it makes to its exporter, far fewer than this within a token's life.
const MAX_TOKENS: usize = 4096;

/// How long a token without a readable `exp` is remembered (0.9.0 router tokens live 30 min).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Tokens seen, with the time each stops being served.
#[derive(Debug, Default)]
pub(crate) struct TokenLedger {
    tokens: Mutex<HashMap<String, SystemTime>>,
}

impl TokenLedger {
    /// Remembers `token` as handed out by the controller at `now`.
    pub(crate) fn record(&self, token: String, now: SystemTime) {
        let until = router_token::expiry(&token).unwrap_or(now + DEFAULT_LIFETIME);
        // Invariant: no code panics while holding this lock.
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, until| *until > now);
        while tokens.len() >= MAX_TOKENS {
            let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(token, _)| token.clone())
            else {
                break;
            };
            tokens.remove(&oldest);
        }
        tokens.insert(token, until);
    }

    /// Whether `token` was handed out and has not expired at `now`.
    pub(crate) fn admits(&self, token: &str, now: SystemTime) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recorded_unexpired_tokens_are_admitted() {
        let ledger = TokenLedger::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!ledger.admits("a", now));
        ledger.record("a".to_owned(), now);
        assert!(ledger.admits("a", now));
        assert!(!ledger.admits("b", now));
        assert!(!ledger.admits("a", now + DEFAULT_LIFETIME));
    }

    #[test]
    fn the_ledger_is_bounded() {
        let ledger = TokenLedger::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..MAX_TOKENS + 10 {
            ledger.record(format!("t{i}"), now);
        }
        let len = ledger.tokens.lock().unwrap().len();
        assert_eq!(len, MAX_TOKENS);
        assert!(ledger.admits(&format!("t{}", MAX_TOKENS + 9), now));
    }
}
