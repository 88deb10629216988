//! One way into mail-parser for every stage.
//!
//! mail-parser 0.11.9 (the last release that builds with this project's Rust) has a
//! `debug_assert!` in its part walk that a crafted message reaches: a multipart whose
//! part is a `message/rfc822` holding only another `message/rfc822` header (found by
//! `fuzz/` target `mime_message`, input in `fuzz/crashes/`). Release builds compile the
//! assertion out and parse on; debug builds (the tests, `pampa` built for development)
//! panicked inside the stage. A panic is caught here and the message is read as plain
//! text instead, which is what every caller already does when the bytes are not MIME.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mail_parser::{Message, MessageParser};

/// `parser.parse(raw)`, with a panic inside mail-parser taken as "not MIME".
pub fn parse<'x>(parser: &MessageParser, raw: &'x [u8]) -> Option<Message<'x>> {
    catch_unwind(AssertUnwindSafe(|| parser.parse(raw))).unwrap_or_else(|_| {
        tracing::warn!(
            bytes = raw.len(),
            "mail-parser panicked on a message; it is read as plain text."
        );
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input `fuzz/` found: each caller gets an answer, no panic.
    const NESTED_RFC822: &[u8] =
        include_bytes!("../../fuzz/crashes/mime_message-mail-parser-0.11.9-debug-assert");

    #[test]
    fn the_fuzzed_nested_rfc822_message_does_not_panic_any_stage() {
        // The input still trips mail-parser itself where debug assertions are on, so
        // this test keeps proving the guard is needed, and works.
        #[cfg(debug_assertions)]
        assert!(catch_unwind(|| MessageParser::new().parse(NESTED_RFC822)).is_err());
        let _ = parse(&MessageParser::new(), NESTED_RFC822);
        let _ = crate::classifier::tokenize(NESTED_RFC822);
        let _ = crate::rules::message::View::parse(NESTED_RFC822);
        let _ = crate::rbl::uri::body_targets(NESTED_RFC822, 100);
    }
}
