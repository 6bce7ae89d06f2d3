//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5e3`, `250m`) in
//! thousandths of their unit, for comparing a ResourceQuota's `hard` and
//! `used` with what an import will request: CPUs come in millicores, bytes
//! and object counts are whole. The grammar is apimachinery's
//! `resource.Quantity`.

/// The quantity in thousandths of its unit (millicores, milli-bytes),
/// rounded up as Kubernetes rounds what it stores; `None` for text that is
/// not a quantity.
pub fn milli_units(text: &str) -> Option<i128> {
    let text = text.trim();
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // The value is digits / 10^scale, times the suffix's factor.
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let (numerator, mut scale) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, 9),
        "u" => (1, 6),
        "m" => (1, 3),
        "k" => (1_000, 0),
        "M" => (1_000_000, 0),
        "G" => (1_000_000_000, 0),
        "T" => (1_000_000_000_000, 0),
        "P" => (1_000_000_000_000_000, 0),
        "E" => (1_000_000_000_000_000_000, 0),
        exponent => {
            let power: i32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            if power >= 0 {
                (10_u128.checked_pow(power.unsigned_abs())?, 0)
            } else {
                (1, power.unsigned_abs())
            }
        }
    };
    let numerator = numerator.checked_mul(1000)?;
    scale += u32::try_from(fraction.len()).ok()?;
    let divisor = 10_u128.checked_pow(scale)?;
    let units = i128::try_from(digits.checked_mul(numerator)?.div_ceil(divisor)).ok()?;
    Some(sign * units)
}

/// Bytes as GiB with two decimals, for messages.
pub fn gib(bytes: i128) -> String {
    // Precision does not matter in a message; i128 → f64 is lossy only
    // beyond 2^53.
    #[allow(clippy::cast_precision_loss)]
    let gib = bytes as f64 / f64::from(1u32 << 30);
    format!("{gib:.2}")
}

#[cfg(test)]
mod tests {
    use super::milli_units;

    #[test]
    fn quantities_as_kubernetes_writes_them() {
        const K: i128 = 1000;
        let cases: &[(&str, Option<i128>)] = &[
            ("0", Some(0)),
            ("10", Some(10 * K)),
            ("10Gi", Some((10 << 30) * K)),
            ("1.5Gi", Some((3 << 29) * K)),
            ("500M", Some(500_000_000 * K)),
            ("1k", Some(1_000 * K)),
            ("2Ti", Some((2 << 40) * K)),
            ("1e3", Some(1_000 * K)),
            ("1E6", Some(1_000_000 * K)),
            ("1.5e1", Some(15 * K)),
            ("250m", Some(250)),
            ("3500m", Some(3500)),
            ("0.5", Some(500)),
            ("12e-1", Some(1200)),
            ("1u", Some(1)),
            ("1500n", Some(1)),
            ("1500001u", Some(1501)),
            (" 3Mi ", Some((3 << 20) * K)),
            ("-1Ki", Some(-1024 * K)),
            ("", None),
            ("Gi", None),
            ("ten", None),
            ("1.2.3", None),
            ("5 Gi", None),
            ("1Xi", None),
            ("1e", None),
        ];
        for (text, want) in cases {
            assert_eq!(milli_units(text), *want, "{text:?}");
        }
    }
}
