//! The built-in patterns: e-mail addresses, payment card numbers (Luhn-checked) and IBANs
//! (mod-97-checked). The checks keep long numbers and codes that merely look like one in the
//! clear.

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// A built-in pattern, redacted as `[redacted:<name>]` with the preset's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// E-mail addresses (`name@example.com`).
    Email,
    /// Payment card numbers: 13 to 19 digits, spaces or dashes allowed between them, that pass
    /// the Luhn check.
    Card,
    /// International bank account numbers: a country code, two check digits and up to 30
    /// letters or digits (spaces allowed), that pass the mod-97 check.
    Iban,
}

impl Preset {
    /// Every preset, in the order their names are listed.
    pub const ALL: [Preset; 3] = [Preset::Email, Preset::Card, Preset::Iban];

    /// The preset's name, as in `redact.presets` and in its markers.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Email => "email",
            Preset::Card => "card",
            Preset::Iban => "iban",
        }
    }

    /// The candidates' pattern; [`valid_len`](Self::valid_len) has the last word.
    pub(super) fn pattern(self) -> &'static str {
        match self {
            Preset::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            Preset::Card => r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
            Preset::Iban => r"(?i)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
        }
    }

    /// How much of a candidate match is the real thing: its length in bytes, or `None` when no
    /// prefix of it passes the preset's check. A shorter prefix is tried when the whole does
    /// not pass, so that a valid number followed by more digits or words is still found.
    pub(super) fn valid_len(self, candidate: &str) -> Option<usize> {
        match self {
            Preset::Email => Some(candidate.len()),
            Preset::Card => longest_valid(candidate, |c| c.is_ascii_digit(), card_number_ok),
            Preset::Iban => longest_valid(candidate, |c| c.is_ascii_alphanumeric(), iban_ok),
        }
    }
}

/// The longest prefix of `candidate` that ends on a `part` character and passes `check`.
fn longest_valid(
    candidate: &str,
    part: impl Fn(char) -> bool,
    check: impl Fn(&str) -> bool,
) -> Option<usize> {
    candidate
        .char_indices()
        .rev()
        .filter(|&(_, c)| part(c))
        .map(|(i, c)| i + c.len_utf8())
        .find(|&end| check(&candidate[..end]))
}

/// 13 to 19 digits (separators aside) that pass the Luhn check.
fn card_number_ok(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// 15 to 34 letters and digits (spaces aside): the country code, the check digits and the
/// account, whose rearranged number leaves 1 divided by 97 (ISO 13616).
fn iban_ok(text: &str) -> bool {
    let chars: Vec<char> = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&chars.len()) {
        return false;
    }
    let (head, account) = chars.split_at(4);
    let mut rest = 0u32;
    for c in account.iter().chain(head) {
        let Some(value) = c.to_digit(36) else {
            return false;
        };
        // A letter is two digits (A = 10 ... Z = 35): shift by as many.
        let shift = if value >= 10 { 100 } else { 10 };
        rest = (rest * shift + value) % 97;
    }
    rest == 1
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A preset name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown redaction preset `{0}` (known: email, card, iban)")]
pub struct UnknownPreset(pub String);

impl FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownPreset(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_real_test_numbers_and_refuses_off_by_one() {
        assert!(card_number_ok("4111 1111 1111 1111"));
        assert!(card_number_ok("5500-0000-0000-0004"));
        assert!(card_number_ok("378282246310005"));
        assert!(!card_number_ok("4111 1111 1111 1112"));
        assert!(!card_number_ok("123456789012"), "12 digits is too short");
    }

    #[test]
    fn mod97_accepts_real_ibans_and_refuses_a_changed_digit() {
        assert!(iban_ok("DE89 3704 0044 0532 0130 00"));
        assert!(iban_ok("GB82WEST12345698765432"));
        assert!(iban_ok("gb82west12345698765432"));
        assert!(!iban_ok("DE89 3704 0044 0532 0130 01"));
        assert!(!iban_ok("DE89"));
    }

    #[test]
    fn a_valid_number_followed_by_more_is_still_found() {
        let text = "4111 1111 1111 1111 22";
        assert_eq!(
            Preset::Card.valid_len(text),
            Some("4111 1111 1111 1111".len())
        );
        assert_eq!(Preset::Card.valid_len("1234 5678 9012 3456"), None);
    }

    #[test]
    fn names_round_trip() {
        for preset in Preset::ALL {
            assert_eq!(preset.name().parse::<Preset>(), Ok(preset));
        }
        assert!("phone"
            .parse::<Preset>()
            .unwrap_err()
            .to_string()
            .contains("`phone`"));
    }
}
