//! Values written by people in spec files and manifests: durations (`10s`), CPU (`0.5`, `500m`)
//! and memory (`256Mi`) quantities, and the words of the domain's closed sets (read through
//! `reconcile`'s vocabulary, so a file spells them as every other reader does).

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub use crate::reconcile::MAX_DURATION;
use crate::reconcile::{echo, Vocabulary};

/// A word of one of the domain's closed sets (`isolation: namespace`, `type: proxy`), parsed by
/// its vocabulary; an unknown word is refused on its own line with the words accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word<T>(pub T);

impl<'de, T: Vocabulary> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordVisitor<T>(PhantomData<T>);
        impl<T: Vocabulary> Visitor<'_> for WordVisitor<T> {
            type Value = Word<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "one of {}", T::WORDS.join(", "))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Word<T>, E> {
                // The vocabulary's own message, which echoes the word truncated.
                T::parse_word(value).map(Word).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(WordVisitor(PhantomData))
    }
}

/// A duration written as `500ms`, `10s`, `5m`, `1h` or a combination (`1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor {
            expecting: "a duration such as 500ms, 10s, 5m or 1h",
            parse: |text| parse_duration(text).map(DurationValue),
        })
    }
}

/// Parses a scalar inside the visitor, so that serde_yaml puts the scalar's own line on the
/// error (an error raised after deserializing a `String` gets the enclosing mapping's line).
pub struct TextVisitor<T> {
    pub expecting: &'static str,
    pub parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        (self.parse)(value).map_err(E::custom)
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `1m30s`, at most `MAX_DURATION` (168h). A bare number is
/// refused: its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_unbounded_duration(text)?;
    if duration > MAX_DURATION {
        return Err(format!(
            "{} is too long; durations may be at most 168h (a week)",
            echo(text)
        ));
    }
    Ok(duration)
}

/// A duration as `parse_duration` reads it, refused when zero (an interval, a timeout).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err(format!("{} must be longer than zero", echo(text))),
        duration => Ok(duration),
    }
}

fn parse_unbounded_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{} is not a duration; write it like 500ms, 10s, 5m or 1h",
            echo(text)
        )
    };
    let text_trimmed = text.trim();
    if text_trimmed.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text_trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// A quantity written as a number or a string (`0.5`, `500m`, `256Mi`), kept as text until its
/// meaning (CPU or memory) is known.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue(pub String);

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = QuantityValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a quantity such as 500m or 256Mi")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<QuantityValue, E> {
                Ok(QuantityValue(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<QuantityValue, E> {
                Ok(QuantityValue(value.to_string()))
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// CPU in millicores: `0.5` or `500m` is 500.
pub fn parse_cpu(text: &str) -> Result<u32, String> {
    let invalid = || {
        format!(
            "{} is not a CPU quantity; write it like 0.5, 2 or 500m",
            echo(text)
        )
    };
    let text = text.trim();
    let millis = if let Some(millis) = text.strip_suffix('m') {
        millis.parse::<u32>().map_err(|_| invalid())?
    } else {
        let cores: f64 = text.parse().map_err(|_| invalid())?;
        if !cores.is_finite() || !(0.0..=1_000_000.0).contains(&cores) {
            return Err(invalid());
        }
        (cores * 1000.0).round() as u32
    };
    if millis == 0 {
        return Err(format!(
            "CPU limit {} is zero; leave it out for no limit",
            echo(text)
        ));
    }
    Ok(millis)
}

/// Memory in bytes: `256Mi`, `1Gi`, `512M`, `1000000`.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "{} is not a memory quantity; write it like 256Mi, 1Gi, 512M or a number of bytes",
            echo(text)
        )
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let multiplier: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    let bytes = number.checked_mul(multiplier).ok_or_else(invalid)?;
    if bytes == 0 {
        return Err(format!(
            "memory limit {} is zero; leave it out for no limit",
            echo(text)
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_combination() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        assert_eq!(parse_duration("168h"), Ok(MAX_DURATION));
        for bad in [
            "",
            "10",
            "s",
            "10x",
            "-1s",
            "1.5s",
            "169h",
            "18446744073709551615s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn cpu_and_memory_quantities_parse_and_refuse_nonsense() {
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert!(parse_cpu("lots").is_err());
        assert!(parse_cpu("0").is_err());
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("12XB").is_err());
        assert!(parse_memory("99999999999Ti").is_err());
    }
}
