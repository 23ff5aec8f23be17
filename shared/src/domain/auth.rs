//! API keys, roles and key ids.
//!
//! Keys are configured as `ROLES=SECRET` entries separated by commas
//! (`SYGNO_API_KEYS`); `ROLES` joins `write`, `read` and `admin` with `+`;
//! `SECRET` is the key itself or `sha256:` and the 64 lowercase hex digits of
//! its SHA-256. Only digests are kept. A key's id, stored as an event's
//! `user_id`, is the first 12 hex digits of its SHA-256.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One of the three roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Write,
    Read,
    Admin,
}

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Write => 1,
            Role::Read => 2,
            Role::Admin => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Write => "write",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "write" => Some(Role::Write),
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub fn of(roles: &[Role]) -> Self {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }
}

/// The public id of a key: 12 hex digits of its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of_digest(digest: &[u8; 32]) -> Self {
        KeyId(hex::encode(&digest[..6]))
    }
}

/// The key id of a secret.
pub fn key_id(secret: &str) -> KeyId {
    KeyId::of_digest(&sha256(secret.as_bytes()))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[derive(Debug, Clone)]
struct KeyEntry {
    digest: [u8; 32],
    roles: Roles,
    id: KeyId,
    /// Configured as the key itself rather than `sha256:<hex>`.
    plaintext: bool,
}

/// A configured key set.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    entries: Vec<KeyEntry>,
}

/// A bad `SYGNO_API_KEYS` entry. The message names the entry by position
/// and roles, never by its secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SYGNO_API_KEYS entry {entry} ({roles:?}): {problem}")]
pub struct KeysError {
    /// 1-based position among the comma-separated entries.
    pub entry: usize,
    pub roles: String,
    pub problem: String,
}

impl ApiKeys {
    /// Parses `SYGNO_API_KEYS`. Blank entries (a trailing comma) are ignored.
    pub fn parse(spec: &str) -> Result<Self, KeysError> {
        let mut keys = ApiKeys::default();
        for (index, entry) in spec.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let position = index + 1;
            let fail = |roles: &str, problem: String| KeysError {
                entry: position,
                roles: roles.to_owned(),
                problem,
            };
            let Some((roles_text, secret)) = entry.split_once('=') else {
                return Err(fail("", "expected ROLES=SECRET".to_owned()));
            };
            let mut roles = Vec::new();
            for name in roles_text.split('+') {
                match Role::parse(name) {
                    Some(role) => roles.push(role),
                    None => {
                        return Err(fail(
                            roles_text,
                            format!("unknown role {name:?}: roles are write, read and admin"),
                        ))
                    }
                }
            }
            let plaintext = !secret.starts_with("sha256:");
            let digest = match secret.strip_prefix("sha256:") {
                Some(hex_digest) => parse_digest(hex_digest).ok_or_else(|| {
                    fail(
                        roles_text,
                        "sha256: must be followed by 64 lowercase hex digits".to_owned(),
                    )
                })?,
                None if secret.is_empty() => {
                    return Err(fail(roles_text, "the secret is empty".to_owned()))
                }
                None => sha256(secret.as_bytes()),
            };
            if let Some(other) = keys.entries.iter().position(|e| e.digest == digest) {
                return Err(fail(
                    roles_text,
                    format!("repeats the key of an earlier entry ({})", other + 1),
                ));
            }
            keys.entries.push(KeyEntry {
                digest,
                roles: Roles::of(&roles),
                id: KeyId::of_digest(&digest),
                plaintext,
            });
        }
        Ok(keys)
    }

    /// Adds a plaintext key (used by `--dev`).
    pub fn add(&mut self, secret: &str, roles: &[Role]) {
        let digest = sha256(secret.as_bytes());
        self.entries.push(KeyEntry {
            digest,
            roles: Roles::of(roles),
            id: KeyId::of_digest(&digest),
            plaintext: true,
        });
    }

    /// Key ids of the entries configured as plaintext keys, not digests.
    pub fn plaintext_ids(&self) -> Vec<&KeyId> {
        self.entries
            .iter()
            .filter(|e| e.plaintext)
            .map(|e| &e.id)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks a presented key up. Every entry is compared in constant time,
    /// and all of them are compared whatever matches.
    pub fn authenticate(&self, presented: &[u8]) -> Option<(KeyId, Roles)> {
        let digest = sha256(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some((entry.id.clone(), entry.roles));
            }
        }
        found
    }
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let lower_hex = text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests;
