//! Encryption at rest for sensitive kinds (Secrets), with a key kept in the data dir.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const MAGIC: &[u8] = b"shoal:enc:v1:";
const NONCE_LEN: usize = 24;

/// Why encryption or decryption failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file does not hold 32 bytes.
    #[error("the encryption key must be 32 bytes, found {0}")]
    KeyLength(usize),
    /// The stored value is not an envelope of this key.
    #[error("a stored secret cannot be decrypted: wrong key or corrupt data")]
    Decrypt,
    /// Encryption failed.
    #[error("encryption failed")]
    Encrypt,
}

/// Seals and opens stored values with XChaCha20-Poly1305.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer for a 32-byte key.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != 32 {
            return Err(CryptoError::KeyLength(key.len()));
        }
        Ok(Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        })
    }

    /// A fresh random key.
    pub fn generate_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        key
    }

    /// Encrypts a value into a self-describing envelope.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), plain)
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts an envelope made by [`Sealer::seal`].
    pub fn open(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = stored.strip_prefix(MAGIC).ok_or(CryptoError::Decrypt)?;
        if rest.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        self.cipher
            .decrypt(&XNonce::from(nonce), sealed)
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() -> Result<(), CryptoError> {
        let s = Sealer::new(&Sealer::generate_key())?;
        let sealed = s.seal(b"hunter2")?;
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open(&sealed)?, b"hunter2");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(s.open(&bad).is_err());
        let other = Sealer::new(&Sealer::generate_key())?;
        assert!(other.open(&sealed).is_err());
        Ok(())
    }
}
