//! Field selectors, as k8s.io/apimachinery/pkg/fields parses them, limited to
//! the paths a resource supports.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use crate::Error;

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// Escapes a literal value for use in a field selector (`fields.EscapeValue`):
/// `\` becomes `\\`, `,` becomes `\,` and `=` becomes `\=`.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undoes [`escape_value`] (`fields.UnescapeValue`). A backslash must be followed
/// by `\`, `,` or `=`, and `,` and `=` must be escaped.
pub fn unescape_value(value: &str) -> Result<Cow<'_, str>, Error> {
    if !value.contains(['\\', ',', '=']) {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
                other => {
                    return Err(Error::FieldEscape {
                        sequence: other.map_or_else(|| "\\".to_owned(), |c| format!("\\{c}")),
                        value: value.to_owned(),
                    });
                }
            },
            ',' | '=' => {
                return Err(Error::FieldUnescaped {
                    character: c,
                    value: value.to_owned(),
                });
            }
            c => out.push(c),
        }
    }
    Ok(Cow::Owned(out))
}

/// The operator of a field selector term. `=` and `==` are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field=value` or `field!=value` term, with the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

/// Where a field selector reads an object's fields: the value at a field path, or
/// `None` if the object has none there (which compares as the empty string, as
/// upstream's `fields.Set.Get` does).
pub trait FieldSource {
    fn field(&self, path: &str) -> Option<Cow<'_, str>>;
}

/// Upstream's `fields.Set`.
impl FieldSource for BTreeMap<String, String> {
    fn field(&self, path: &str) -> Option<Cow<'_, str>> {
        self.get(path).map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// Reads one selectable field of a `T`.
pub type FieldGetter<T> = for<'o> fn(&'o T) -> Option<Cow<'o, str>>;

/// The selectable fields of one resource type: each path with its getter.
/// A resource declares it once, e.g.
/// `static FIELDS: FieldTable<Vm> = FieldTable::new(&[("metadata.name", |vm| ...)]);`
pub struct FieldTable<T: 'static> {
    entries: &'static [(&'static str, FieldGetter<T>)],
}

impl<T: 'static> FieldTable<T> {
    pub const fn new(entries: &'static [(&'static str, FieldGetter<T>)]) -> Self {
        Self { entries }
    }

    /// The supported field paths, in declaration order.
    pub fn paths(&self) -> Vec<&'static str> {
        self.entries.iter().map(|(path, _)| *path).collect()
    }

    /// Parses a field selector against this table's paths.
    pub fn parse(&self, selector: &str) -> Result<FieldSelector, Error> {
        FieldSelector::parse(selector, &self.paths())
    }

    /// The value of `path` on `object`; `None` for an unknown path too.
    pub fn get<'o>(&self, object: &'o T, path: &str) -> Option<Cow<'o, str>> {
        let (_, getter) = self.entries.iter().find(|(p, _)| *p == path)?;
        getter(object)
    }

    /// Whether `object` is selected by `selector`.
    pub fn matches(&self, selector: &FieldSelector, object: &T) -> bool {
        selector.matches_with(|path| self.get(object, path))
    }

    /// Whether `a` and `b` have the same value at every path, so that every
    /// field selector selects both or neither.
    pub fn same(&self, a: &T, b: &T) -> bool {
        self.entries
            .iter()
            .all(|(_, getter)| getter(a) == getter(b))
    }
}

/// A parsed field selector: terms ANDed, sorted by their canonical text (as
/// [`Display`](fmt::Display) prints them). The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a selector as `fields.ParseSelector` does, then rejects fields not in
    /// `supported` as kube-apiserver's field label conversion does. Syntax errors are
    /// reported before unsupported fields, each in sorted term order.
    pub fn parse(selector: &str, supported: &[&str]) -> Result<Self, Error> {
        let parsed = Self::parse_any(selector)?;
        if let Some(bad) = parsed
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            return Err(Error::FieldNotSupported {
                field: bad.field.clone(),
                supported: supported.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        Ok(parsed)
    }

    /// Parses a selector as `fields.ParseSelector` does, whatever fields it names:
    /// what authorization reads before the resource's fields are known.
    pub fn parse_any(selector: &str) -> Result<Self, Error> {
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, operator, raw)) = split_term(term) else {
                return Err(Error::FieldSyntax {
                    selector: selector.to_owned(),
                    term: term.to_owned(),
                });
            };
            let value = unescape_value(raw)?;
            // Upstream's parse drops a term whose field and value are both empty
            // (`=`, `==`, `!=`) before kube-apiserver checks field labels.
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                operator,
                value: value.into_owned(),
            });
        }
        // Upstream sorts the terms as written; sorting them again as printed (`==`
        // prints as `=`) makes the printed selector parse back to the same order
        // (fuzzing found `a==x,a=w` printing as `a=x,a=w`, which parses as `a=w,a=x`).
        requirements.sort_by_cached_key(ToString::to_string);
        Ok(Self { requirements })
    }

    /// True if the selector does not restrict anything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The value `path` must equal, if some `path=value` term pins it (upstream's
    /// `RequiresExactMatch`): lets a list fetch one object by name. The caller must
    /// still apply [`FieldSelector::matches`] since other terms may exclude it.
    pub fn exact_value(&self, path: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == path && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Whether the object `source` describes is selected.
    pub fn matches(&self, source: &(impl FieldSource + ?Sized)) -> bool {
        self.matches_with(|path| source.field(path))
    }

    /// Whether the object whose fields `get` reads is selected.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<Cow<'a, str>>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field);
            let actual = actual.as_deref().unwrap_or("");
            match r.operator {
                FieldOperator::Equals => actual == r.value,
                FieldOperator::NotEquals => actual != r.value,
            }
        })
    }
}

impl fmt::Display for FieldRequirement {
    /// Upstream's `String()` of a term: `field=value` or `field!=value`, the value escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

impl fmt::Display for FieldSelector {
    /// Upstream's `String()`; parses back to the same selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped; escaped ones stay in the term with their
/// backslash. An empty selector has no terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first `!=`, `==` or `=` (checked in that order at each
/// position). The field part has no escaping.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}
