//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5e3`, `250m`) as whole
//! units, for comparing a ResourceQuota's `hard` and `used` with what an
//! import will request. The grammar is apimachinery's `resource.Quantity`.

/// The quantity in whole units (bytes, objects), rounded up as Kubernetes
/// rounds a fraction it must store; `None` for text that is not a quantity.
pub fn whole_units(text: &str) -> Option<i128> {
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
    scale += u32::try_from(fraction.len()).ok()?;
    let divisor = 10_u128.checked_pow(scale)?;
    let units = i128::try_from(digits.checked_mul(numerator)?.div_ceil(divisor)).ok()?;
    Some(sign * units)
}

#[cfg(test)]
mod tests {
    use super::whole_units;

    #[test]
    fn quantities_as_kubernetes_writes_them() {
        let cases: &[(&str, Option<i128>)] = &[
            ("0", Some(0)),
            ("10", Some(10)),
            ("10Gi", Some(10 << 30)),
            ("1.5Gi", Some(3 << 29)),
            ("500M", Some(500_000_000)),
            ("1k", Some(1_000)),
            ("2Ti", Some(2 << 40)),
            ("1e3", Some(1_000)),
            ("1E6", Some(1_000_000)),
            ("1.5e1", Some(15)),
            ("250m", Some(1)),
            ("1500m", Some(2)),
            ("12e-1", Some(2)),
            (" 3Mi ", Some(3 << 20)),
            ("-1Ki", Some(-1024)),
            ("", None),
            ("Gi", None),
            ("ten", None),
            ("1.2.3", None),
            ("5 Gi", None),
            ("1Xi", None),
            ("1e", None),
        ];
        for (text, want) in cases {
            assert_eq!(whole_units(text), *want, "{text:?}");
        }
    }
}
