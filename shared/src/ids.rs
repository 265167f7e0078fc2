//! Identifiers: prefixed, random, URL-safe, recognisable in logs (`evt_`, `con_`, `rul_`, `ws_`).

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A random base62 string of `len` characters.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new identifier with a prefix, e.g. `con_3kTMd9...`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_base62(22))
}

/// A new event uuid: time-ordered (UUIDv7) so ids sort roughly by intake time.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}
