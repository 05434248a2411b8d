//! Base64 for HTTP basic credentials and Docker's `X-Registry-Auth`, over the `base64`
//! crate: [`encode`] writes the standard padded form; [`decode`] reads the standard or
//! the URL-safe alphabet (the Docker CLI sends the latter), padded or not.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// The standard alphabet, padded.
pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Either alphabet, with or without padding; `None` when `s` is not base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let engine = if s.contains(['-', '_']) {
        &URL_SAFE_LENIENT
    } else {
        &STANDARD_LENIENT
    };
    engine.decode(s).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_reads_both_alphabets() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("user:pa ss", "dXNlcjpwYSBzcw=="),
        ] {
            assert_eq!(super::encode(plain.as_bytes()), enc);
            assert_eq!(super::decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(
                super::decode(enc.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        // 0xfb 0xff: `+/` in the standard alphabet, `-_` in the URL-safe one.
        assert_eq!(super::decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(super::decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(super::decode("a*b").is_none());
        assert!(super::decode("+_8").is_none(), "mixed alphabets");
    }
}
