//! Keyed identifiers: the one way a value seen in traffic (a credential, a conversation or user
//! id, a message history) becomes something a record, label or span may carry. An id is the first
//! 8 bytes of a keyed BLAKE3 hash, written as 16 hex digits: the same value gives the same id
//! under one key, and without the key nobody can test a guessed value against an id (a leaked
//! key cannot be confirmed from a metric label).
//!
//! The key: `--id-key-file` (any secret of 16 bytes or more; the same file on every node gives
//! the same ids across nodes and restarts), else a random key drawn at start (ids hold for the
//! agent's lifetime). `replay` uses a fixed key, so replays reproduce their records.
//!
//! Installed once per process ([`install`]) before the stages start; [`key`] reads it.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;

/// The BLAKE3 key context: a new scheme gets a new context, never the same one.
const KEY_CONTEXT: &str = "llmprobe 2026-11 keyed ids v1";

/// Largest key file read.
const MAX_KEY_FILE: u64 = 4096;

/// Fewest secret bytes a key file must hold.
const MIN_KEY_FILE: usize = 16;

/// A 32-byte id key.
#[derive(Clone)]
pub struct IdKey([u8; 32]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// A key derived from secret material (at least 16 bytes).
    pub fn from_material(material: &[u8]) -> Self {
        IdKey(blake3::derive_key(KEY_CONTEXT, material))
    }

    /// The key of `--id-key-file PATH`: the file's bytes (at most 4 KiB; surrounding whitespace
    /// ignored) are the secret.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("--id-key-file {}: cannot open it", path.display()))?;
        let meta = file.metadata()?;
        anyhow::ensure!(
            meta.is_file(),
            "--id-key-file {}: not a regular file",
            path.display()
        );
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o004 != 0 {
            log::warn!(
                "--id-key-file {}: readable by every user; anyone who reads it can test guessed \
                 API keys and ids against llmprobe's ids (chmod 600 it)",
                path.display()
            );
        }
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes)?;
        anyhow::ensure!(
            bytes.len() as u64 <= MAX_KEY_FILE,
            "--id-key-file {}: larger than {MAX_KEY_FILE} bytes; give a short secret \
             (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display()
        );
        let secret = bytes.trim_ascii();
        anyhow::ensure!(
            secret.len() >= MIN_KEY_FILE,
            "--id-key-file {}: holds {} bytes, needs at least {MIN_KEY_FILE} \
             (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display(),
            secret.len()
        );
        Ok(Self::from_material(secret))
    }

    /// A random key from the kernel's generator.
    pub fn random() -> anyhow::Result<Self> {
        let mut material = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut material))
            .context("reading /dev/urandom for the id key")?;
        Ok(Self::from_material(&material))
    }

    /// The fixed key of replays and tests.
    pub fn fixed() -> Self {
        Self::from_material(b"llmprobe fixed id key: replays and tests only")
    }

    /// The keyed hash of `value` in `domain` (e.g. `api_key`, `conversation`), as a number.
    /// Different domains never give the same id for the same value.
    pub fn id_u64(&self, domain: &str, value: &[u8]) -> u64 {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&(domain.len() as u64).to_le_bytes());
        h.update(domain.as_bytes());
        h.update(value);
        let out = h.finalize();
        u64::from_be_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// [`IdKey::id_u64`] as 16 lower-case hex digits.
    pub fn id(&self, domain: &str, value: &[u8]) -> String {
        hex_id(self.id_u64(domain, value))
    }
}

/// An id as 16 lower-case hex digits.
pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

static KEY: OnceLock<IdKey> = OnceLock::new();

/// Installs the process's id key; the first call wins (false: a key was installed already).
pub fn install(key: IdKey) -> bool {
    KEY.set(key).is_ok()
}

/// The process's id key: the installed one, else the fixed key (replays and tests).
pub fn key() -> &'static IdKey {
    KEY.get_or_init(IdKey::fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_key_domain_and_value() {
        let a = IdKey::from_material(b"0123456789abcdef");
        let b = IdKey::from_material(b"0123456789abcdeg");
        let id = a.id("api_key", b"sk-test");
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(id, a.id("api_key", b"sk-test"));
        assert_ne!(id, b.id("api_key", b"sk-test"));
        assert_ne!(id, a.id("conversation", b"sk-test"));
        assert_ne!(id, a.id("api_key", b"sk-tesu"));
        // The domain's length is hashed: moving bytes between domain and value changes the id.
        assert_ne!(a.id("ab", b"c"), a.id("a", b"bc"));
    }

    #[test]
    fn key_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("llmprobe-idkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test file");
        let short = dir.join("short");
        std::fs::write(&short, "too short\n").expect("test file");
        let err = IdKey::from_file(&short)
            .expect_err("a short key is refused")
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        let good = dir.join("good");
        std::fs::write(&good, "  a secret of more than sixteen bytes\n").expect("test file");
        let k = IdKey::from_file(&good).expect("test file");
        assert_eq!(
            k.id("d", b"v"),
            IdKey::from_material(b"a secret of more than sixteen bytes").id("d", b"v")
        );
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 5000]).expect("test file");
        assert!(IdKey::from_file(&big).is_err());
        assert!(IdKey::from_file(&dir).is_err());
        assert!(IdKey::from_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).expect("test file");
    }
}
