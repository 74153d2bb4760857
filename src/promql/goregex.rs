//! Prometheus regex matchers (Go RE2, fully anchored) evaluated with Rust's `regex` crate, with an honest
//! answer for the cases where the two engines may disagree.
//!
//! Prometheus matches `=~"re"` as `^(?:re)$` (Prometheus 3: `^(?s:re)$`) with Go's RE2. Rust's `regex` is
//! close but not identical: its `\d`, `\w`, `\s`, `\b` are Unicode-aware where Go's are ASCII, and it
//! accepts syntax Go reads differently or rejects (class set operations `[a&&b]`, nested classes `[[a]]`,
//! `{,n}`, `\u` escapes, the `x`/`u`/`R` flags, `\<`-style boundaries, long Unicode property names).
//! So [`GoRegex::verdict`] answers `Some(bool)` only when the value is printable ASCII (no newline, no
//! vertical tab, nothing where Unicode classes or `.` semantics differ) and the pattern uses none of the
//! divergent syntax; otherwise `None`, and each caller decides which way "don't know" must fail:
//!
//! - query rewriting uses a verdict only to refuse a query early (`Conflict`). Our own matchers are always
//!   added, so "don't know" means "forward": Prometheus then evaluates with Go and can only narrow.
//! - rules and alerts filtering decides visibility itself, so "don't know" means "hide".
//!
//! A pattern that Rust cannot compile at all is an error: callers refuse it rather than guess.

use regex::Regex;
use regex_syntax::ast::{self, Ast, ClassSetBinaryOp, ClassSetItem, Visitor};

/// A compiled, anchored Prometheus regex.
#[derive(Debug, Clone)]
pub struct GoRegex {
    anchored: Regex,
    exact: bool,
}

impl GoRegex {
    /// Compiles `pattern` as Prometheus would anchor it. The pattern must be a complete regex on its own,
    /// so `dev)|(.*` cannot splice itself out of the anchors.
    pub fn new(pattern: &str) -> Result<GoRegex, String> {
        let parsed = ast::parse::Parser::new()
            .parse(pattern)
            .map_err(|e| format!("regex {pattern:?} does not compile: {}", e.kind()))?;
        let exact = !ast::visit(&parsed, Divergence { found: false }).unwrap_or(true);
        let anchored = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| format!("regex {pattern:?} does not compile: {e}"))?;
        Ok(GoRegex { anchored, exact })
    }

    /// Whether Prometheus would find that the regex matches `value`, when we can be sure of its answer.
    pub fn verdict(&self, value: &str) -> Option<bool> {
        if !self.exact || !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return None;
        }
        Some(self.anchored.is_match(value))
    }

    /// The anchored regex, as the parser's own matchers hold it (`^(?:re)$`).
    pub fn regex(&self) -> &Regex {
        &self.anchored
    }
}

/// Finds syntax that Go's RE2 reads differently from Rust (or rejects).
struct Divergence {
    found: bool,
}

impl Divergence {
    fn literal(&mut self, lit: &ast::Literal) {
        use ast::{HexLiteralKind as H, LiteralKind as L};
        if matches!(
            lit.kind,
            L::Octal
                | L::HexFixed(H::UnicodeShort | H::UnicodeLong)
                | L::HexBrace(H::UnicodeShort | H::UnicodeLong)
        ) {
            self.found = true;
        }
    }

    fn unicode_class(&mut self, class: &ast::ClassUnicode) {
        // `\pL` is the same in both; named properties differ in which names each engine knows.
        if !matches!(class.kind, ast::ClassUnicodeKind::OneLetter(_)) {
            self.found = true;
        }
    }

    fn flags(&mut self, flags: &ast::Flags) {
        use ast::{Flag, FlagsItemKind};
        for item in &flags.items {
            if let FlagsItemKind::Flag(Flag::Unicode | Flag::CRLF | Flag::IgnoreWhitespace) =
                item.kind
            {
                self.found = true;
            }
        }
    }
}

impl Visitor for Divergence {
    type Output = bool;
    type Err = ();

    fn finish(self) -> Result<bool, ()> {
        Ok(self.found)
    }

    fn visit_pre(&mut self, node: &Ast) -> Result<(), ()> {
        use ast::AssertionKind as A;
        match node {
            Ast::Literal(lit) => self.literal(lit),
            Ast::ClassUnicode(class) => self.unicode_class(class),
            Ast::Flags(set) => self.flags(&set.flags),
            Ast::Group(group) => {
                if let ast::GroupKind::NonCapturing(flags) = &group.kind {
                    self.flags(flags);
                }
            }
            // Go knows only these; Rust adds `\<`, `\>`, `\b{start}` and friends.
            Ast::Assertion(assertion)
                if !matches!(
                    assertion.kind,
                    A::StartLine
                        | A::EndLine
                        | A::StartText
                        | A::EndText
                        | A::WordBoundary
                        | A::NotWordBoundary
                ) =>
            {
                self.found = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), ()> {
        match item {
            // Only nested classes reach here as `Bracketed`: Go reads `[[a]]` as `[\[a]` then `]`.
            ClassSetItem::Bracketed(_) => self.found = true,
            ClassSetItem::Unicode(class) => self.unicode_class(class),
            ClassSetItem::Literal(lit) => self.literal(lit),
            _ => {}
        }
        Ok(())
    }

    fn visit_class_set_binary_op_pre(&mut self, _op: &ClassSetBinaryOp) -> Result<(), ()> {
        // `&&`, `--`, `~~` are plain characters to Go.
        self.found = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(pattern: &str, value: &str) -> Option<bool> {
        GoRegex::new(pattern).unwrap().verdict(value)
    }

    #[test]
    fn anchored_like_prometheus() {
        assert_eq!(verdict("d.*", "dev"), Some(true));
        assert_eq!(verdict("dev", "devops"), Some(false));
        assert_eq!(verdict("ev", "dev"), Some(false));
        assert_eq!(verdict("ops|dev", "dev"), Some(true));
        assert_eq!(verdict("ops|qa", "dev"), Some(false));
        assert_eq!(verdict("", ""), Some(true));
        assert_eq!(verdict(".+", ""), Some(false));
        assert_eq!(verdict("(?i)DEV", "dev"), Some(true));
        assert_eq!(verdict(r"\d+", "123"), Some(true));
        assert_eq!(verdict(r"[[:alpha:]]+", "dev"), Some(true));
        assert_eq!(verdict(r"\pL+", "dev"), Some(true));
    }

    #[test]
    fn patterns_that_do_not_stand_alone_are_refused() {
        // Go reads `a{b}c` and `x{,3}` as literal text; Rust refuses both, so do we.
        for p in [
            "dev)|(.*", "(", "a{2", "[a", r"\Q.*\E", r"\C", r"\1", "a{b}c", "x{,3}", "*",
        ] {
            assert!(GoRegex::new(p).is_err(), "{p}");
        }
    }

    #[test]
    fn unsure_when_the_value_is_not_plain_ascii() {
        // Rust's \d matches Arabic-Indic digits, Go's does not.
        assert_eq!(verdict(r"\d", "٣"), None);
        assert_eq!(verdict("d.v", "d\nv"), None);
        assert_eq!(verdict(r"\s", "\u{b}"), None);
        assert_eq!(verdict("é", "é"), None);
    }

    #[test]
    fn unsure_when_go_reads_the_pattern_differently() {
        for p in [
            "[a-z&&[^x]]",
            "[a--b]",
            "[[a]]",
            r"\u0041",
            r"\x{41}\u{42}",
            "(?x) a",
            "(?u:a)",
            r"\<a",
            r"\b{start}a",
            r"\p{Greek}",
            r"[\p{Letter}]",
        ] {
            let re = GoRegex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(re.verdict("a"), None, "{p}");
        }
        // The same constructs spelled the way both engines agree on are exact.
        for p in [
            "[a-z]",
            "x{0,3}",
            r"\x41",
            r"\x{41}",
            "(?i:a)",
            r"\ba\b",
            "[[:alpha:]]",
        ] {
            assert!(GoRegex::new(p).unwrap().verdict("a").is_some(), "{p}");
        }
    }
}
