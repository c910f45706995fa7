//! FNV-1a, 64-bit: a short, stable fingerprint of configs, settings and files in table and
//! checkpoint metadata (and of the purpose names that pick random streams). Not cryptographic:
//! it tells versions apart, it does not guard against forgery.

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// [`fnv1a`] as 16 hex digits, the form stored in metadata and tables.
pub fn hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn published_test_vector() {
        // FNV-1a of "a" (published test vector).
        assert_eq!(super::fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(super::hex(b"a"), "af63dc4c8601ec8c");
    }
}
