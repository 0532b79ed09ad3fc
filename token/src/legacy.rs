//! The signing key of a jumpstarter 0.9.0 Go controller, derived from its `CONTROLLER_KEY`.
//!
//! Tokens that a 0.9.0 controller issued (stored in `<name>-client` / `<name>-exporter`
//! Secrets and in configuration files on users' machines) verify only against the key it
//! derived deterministically from `CONTROLLER_KEY`:
//!
//! 1. seed = the first 8 bytes of SHA-256(`CONTROLLER_KEY`), read as a big-endian `i64`;
//! 2. a reader = Go's `math/rand.New(math/rand.NewSource(seed))` ([`GoRand`]);
//! 3. `filippo.io/keygen.ECDSALegacy(P-256, reader)`: read N.BitLen()/8 + 8 = 40 bytes,
//!    d = (bytes as a big-endian integer) mod (N − 1) + 1.
//!
//! [`derive_signing_key`] reproduces that exactly, so the public half verifies those
//! tokens. The test vectors come from the real Go code (tools/legacy-key).

mod cooked;

use num_bigint::BigUint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use sha2::{Digest, Sha256};

use crate::{SigningKey, TokenError};

/// The P-256 private key a 0.9.0 controller derives from `controller_key` (the bytes of
/// its `CONTROLLER_KEY` environment variable, usually the `key` of Secret
/// `jumpstarter-controller-secret`).
pub fn derive_signing_key(controller_key: &[u8]) -> Result<SigningKey, TokenError> {
    let d = derive_scalar(controller_key);
    let secret = p256::SecretKey::from_slice(&d)
        .map_err(|e| TokenError::BadKey(format!("derived scalar is not a P-256 key: {e}")))?;
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| TokenError::BadKey(format!("cannot encode the derived key: {e}")))?;
    SigningKey::from_pkcs8_pem(&pem)
}

/// The `math/rand` seed 0.9.0 derives from its controller key.
fn seed(controller_key: &[u8]) -> i64 {
    let hash = Sha256::digest(controller_key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first)
}

/// The private scalar d (32 bytes, big-endian) as `keygen.ECDSALegacy` computes it.
fn derive_scalar(controller_key: &[u8]) -> [u8; 32] {
    // ECDSALegacy reads N.BitLen()/8 + 8 bytes: 8 more than the order so that the
    // reduction below is close to uniform.
    let mut bytes = [0u8; 256 / 8 + 8];
    GoRand::new(seed(controller_key)).read(&mut bytes);
    let order = BigUint::from_bytes_be(&P256_ORDER);
    let one = BigUint::from(1u8);
    let d = BigUint::from_bytes_be(&bytes) % (&order - &one) + one;
    let d = d.to_bytes_be();
    // d < N < 2^256, so it fits in 32 bytes; left-pad with zeros.
    let mut out = [0u8; 32];
    out[32 - d.len()..].copy_from_slice(&d);
    out
}

/// The order N of the P-256 base point (FIPS 186-4 D.1.2.3), big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Length of Go `math/rand`'s feedback register (the lag of the additive generator).
const REGISTER_LEN: usize = 607;
/// The short lag of the generator: x[n] = x[n-607] + x[n-273].
const TAP: usize = 273;
/// 2^31 − 1, the modulus of the Park–Miller generator that seeds the register.
const PARK_MILLER_MODULUS: i64 = (1 << 31) - 1;
/// The Park–Miller multiplier math/rand uses.
const PARK_MILLER_MULTIPLIER: i64 = 48271;
/// math/rand replaces a seed of 0 (mod 2^31 − 1) with this value.
const ZERO_SEED_REPLACEMENT: i64 = 89_482_311;
/// Park–Miller steps math/rand discards before filling the register.
const WARM_UP: usize = 20;

/// Go's `math/rand.New(math/rand.NewSource(seed))`: the additive lagged Fibonacci generator
/// and `Rand.Read`, byte for byte.
#[derive(Debug)]
pub(crate) struct GoRand {
    tap: usize,
    feed: usize,
    register: [i64; REGISTER_LEN],
    /// What is left of the last 63-bit value `read` took bytes from.
    read_value: i64,
    /// How many bytes of `read_value` are left.
    read_left: u8,
}

impl GoRand {
    pub(crate) fn new(seed: i64) -> GoRand {
        let mut seed = seed % PARK_MILLER_MODULUS;
        if seed < 0 {
            seed += PARK_MILLER_MODULUS;
        }
        if seed == 0 {
            seed = ZERO_SEED_REPLACEMENT;
        }
        // x stays in [1, 2^31 − 2]: 48271 · x fits an i64 and the result is x's next value.
        let step = |x: i64| x * PARK_MILLER_MULTIPLIER % PARK_MILLER_MODULUS;
        let mut x = seed;
        for _ in 0..WARM_UP {
            x = step(x);
        }
        let mut register = [0i64; REGISTER_LEN];
        for (slot, cooked) in register.iter_mut().zip(cooked::COOKED) {
            x = step(x);
            // Bits shifted beyond 64 are dropped, as in Go.
            let mut u = x << 40;
            x = step(x);
            u ^= x << 20;
            x = step(x);
            u ^= x;
            *slot = u ^ cooked;
        }
        GoRand {
            tap: 0,
            feed: REGISTER_LEN - TAP,
            register,
            read_value: 0,
            read_left: 0,
        }
    }

    /// `Source64.Uint64`.
    fn next_u64(&mut self) -> u64 {
        self.tap = self.tap.checked_sub(1).unwrap_or(REGISTER_LEN - 1);
        self.feed = self.feed.checked_sub(1).unwrap_or(REGISTER_LEN - 1);
        let x = self.register[self.feed].wrapping_add(self.register[self.tap]);
        self.register[self.feed] = x;
        x as u64
    }

    /// `Source.Int63`: the low 63 bits.
    fn next_i63(&mut self) -> i64 {
        (self.next_u64() & (u64::MAX >> 1)) as i64
    }

    /// `Rand.Read`: 7 bytes of each 63-bit value, lowest byte first; bytes left over from
    /// one call are used by the next.
    pub(crate) fn read(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.read_left == 0 {
                self.read_value = self.next_i63();
                self.read_left = 7;
            }
            *byte = self.read_value as u8;
            self.read_value >>= 8;
            self.read_left -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of `rand.New(rand.NewSource(1)).Read`, printed by `legacy-key rand-bytes 1 20`
    /// (the Go program in tools/legacy-key; the integration tests compare many more).
    #[test]
    fn matches_go_for_seed_one() {
        let mut bytes = [0u8; 20];
        GoRand::new(1).read(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "52fdfc072182654f163f5f0f9a621d729566c74d");
    }

    /// Go's byte stream for seeds at the edges of the seeding (negative, 0 and multiples of
    /// 2^31 − 1, which math/rand replaces, the extremes), long enough to run through the
    /// register more than once.
    #[test]
    fn matches_go_across_seeds() {
        const BYTES: usize = 7 * REGISTER_LEN * 2 + 5;
        for seed in [
            0,
            1,
            -1,
            PARK_MILLER_MODULUS,
            -PARK_MILLER_MODULUS,
            3 * PARK_MILLER_MODULUS,
            PARK_MILLER_MODULUS - 1,
            i64::MIN,
            i64::MAX,
            -3_141_592_653_589_793_238,
        ] {
            let mut ours = vec![0u8; BYTES];
            GoRand::new(seed).read(&mut ours);
            assert_eq!(
                ours,
                jumpstarter_testenv::legacy_key::rand_bytes(seed, BYTES),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn reads_continue_where_the_last_one_stopped() {
        let mut whole = [0u8; 40];
        GoRand::new(-5).read(&mut whole);
        let mut parts = [0u8; 40];
        let mut rand = GoRand::new(-5);
        let (a, b) = parts.split_at_mut(3);
        rand.read(a);
        let (b, c) = b.split_at_mut(11);
        rand.read(b);
        rand.read(c);
        assert_eq!(whole, parts);
    }

    #[test]
    fn the_derived_key_signs_and_verifies() {
        let key = derive_signing_key(b"").expect("derive");
        let again = derive_signing_key(b"").expect("derive");
        assert_eq!(key.to_pkcs8_pem(), again.to_pkcs8_pem());
        let other = derive_signing_key(b"x").expect("derive");
        assert_ne!(
            key.verifying_key().to_public_pem(),
            other.verifying_key().to_public_pem()
        );
    }
}
