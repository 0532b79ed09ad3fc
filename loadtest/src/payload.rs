//! End-to-end integrity of every transfer: the sender sends numbered blocks of a pattern
//! that depends on the session's seed; the receiver checks every byte against the same
//! pattern, so loss, duplication, reordering, corruption and cross-talk between sessions
//! all show. Checking is a memory comparison, cheap enough not to cap the throughput.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use bytes::{Bytes, BytesMut};

/// Bytes per block (and per h2 frame): 64 KiB, what 0.9.0 peers read per call.
pub(crate) const BLOCK: usize = 64 * 1024;

/// Transfers checked end to end so far, and those that failed the check.
static CHECKED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// (checked, failed) transfers so far in this process.
pub(crate) fn integrity_counts() -> (u64, u64) {
    (
        CHECKED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

/// Records the outcome of one checked transfer.
pub(crate) fn record_check(ok: bool) {
    CHECKED.fetch_add(1, Ordering::Relaxed);
    if !ok {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The bytes a session sends: block `i` is the seed's template with `i` in its first 8 bytes.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    template: Bytes,
}

impl Pattern {
    pub(crate) fn new(seed: u64) -> Pattern {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut template = BytesMut::with_capacity(BLOCK);
        while template.len() < BLOCK {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            template.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Pattern {
            template: template.freeze(),
        }
    }

    /// Block number `index`.
    pub(crate) fn block(&self, index: u64) -> Bytes {
        let mut block = BytesMut::from(&self.template[..]);
        block[..8].copy_from_slice(&index.to_le_bytes());
        block.freeze()
    }

    /// A `len`-byte message numbered `index` (for round trips; `len` ≥ 8).
    pub(crate) fn message(&self, index: u64, len: usize) -> Bytes {
        let mut message = BytesMut::from(&self.template[..len.min(BLOCK)]);
        message[..8].copy_from_slice(&index.to_le_bytes());
        message.freeze()
    }

    /// A checker of the stream this pattern produces.
    pub(crate) fn verifier(&self) -> Verifier {
        Verifier {
            template: self.template.clone(),
            offset: 0,
        }
    }
}

/// Checks received bytes against the [`Pattern`], chunk by chunk, whatever the chunking.
#[derive(Debug)]
pub(crate) struct Verifier {
    template: Bytes,
    offset: u64,
}

impl Verifier {
    /// Checks the next received bytes.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> anyhow::Result<()> {
        while !chunk.is_empty() {
            let block = self.offset / BLOCK as u64;
            // Invariant: the remainder of a division by BLOCK fits usize.
            let at = (self.offset % BLOCK as u64) as usize;
            let take = chunk.len().min(BLOCK - at);
            let (now, rest) = chunk.split_at(take);
            let index = block.to_le_bytes();
            for (i, byte) in now.iter().enumerate() {
                let pos = at + i;
                if pos >= 8 {
                    if now[i..] != self.template[pos..pos + now.len() - i] {
                        bail!(
                            "integrity: byte {} differs from what was sent",
                            self.offset + i as u64
                        );
                    }
                    break;
                }
                if *byte != index[pos] {
                    bail!(
                        "integrity: block {block} arrived out of order or not at all (offset {})",
                        self.offset + i as u64
                    );
                }
            }
            self.offset += take as u64;
            chunk = rest;
        }
        Ok(())
    }

    /// Bytes checked so far.
    pub(crate) fn received(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_chunking_of_the_blocks_verifies() {
        let pattern = Pattern::new(7);
        let stream: Vec<u8> = (0..3).flat_map(|i| pattern.block(i).to_vec()).collect();
        for size in [1, 7, 8, 9, 1000, BLOCK - 1, BLOCK, BLOCK + 3] {
            let mut verifier = pattern.verifier();
            for chunk in stream.chunks(size) {
                verifier.feed(chunk).expect("intact");
            }
            assert_eq!(verifier.received(), stream.len() as u64);
        }
    }

    #[test]
    fn corruption_loss_and_cross_talk_are_caught() {
        let pattern = Pattern::new(7);
        let mut corrupted = pattern.block(0).to_vec();
        corrupted[100] ^= 1;
        assert!(pattern.verifier().feed(&corrupted).is_err());

        let mut verifier = pattern.verifier();
        verifier.feed(&pattern.block(0)).expect("first");
        assert!(verifier.feed(&pattern.block(2)).is_err(), "block 1 lost");

        assert!(
            pattern.verifier().feed(&Pattern::new(8).block(0)).is_err(),
            "another session's bytes"
        );
    }
}
