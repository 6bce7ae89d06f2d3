//! Table-driven checks against upstream behaviour, and inputs that must never panic.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::label::{aggregate, new_requirement};
use super::*;
use crate::Error;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn label_err(selector: &str) -> String {
    match LabelSelector::parse(selector) {
        Ok(s) => panic!("{selector:?} parsed as {s}, expected an error"),
        Err(e) => e.to_string(),
    }
}

const KEY_NAME_REGEX: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_REGEX: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Valid selectors and their canonical form (upstream's `String()`), which
/// also shows how each was understood.
#[test]
fn label_selector_parses() {
    let long63 = "a".repeat(63);
    let prefixed = format!("{}/{long63}", "p".repeat(253));
    let cases: &[(&str, &str)] = &[
        ("", ""),
        ("   \t\r\n ", ""),
        ("x=a", "x=a"),
        ("x==a", "x==a"),
        ("x!=a", "x!=a"),
        ("x = a", "x=a"),
        ("\tx\n==\ra ", "x==a"),
        ("x=", "x="),
        ("x==", "x=="),
        ("x!=", "x!="),
        ("x=,y", "x=,y"),
        ("x", "x"),
        ("!x", "!x"),
        ("! x", "!x"),
        ("x,!y", "x,!y"),
        ("!y,x", "x,!y"),
        ("x in (a)", "x in (a)"),
        ("x in (b,a,b)", "x in (a,b)"),
        ("x notin (a, b)", "x notin (a,b)"),
        ("x in ( a , b )", "x in (a,b)"),
        ("x in(a)", "x in (a)"),
        ("x in ()", "x in ()"),
        ("x notin ()", "x notin ()"),
        ("x in (,)", "x in ()"),
        ("x in (a,)", "x in (,a)"),
        ("x in (,a)", "x in (,a)"),
        ("x in (a,,b)", "x in (,a,b)"),
        ("x in (,,)", "x in ()"),
        (
            "x in (foo,,baz),y,z notin ()",
            "x in (,baz,foo),y,z notin ()",
        ),
        ("a in (b,c),d", "a in (b,c),d"),
        ("x>1", "x>1"),
        ("x<1", "x<1"),
        ("x > 10", "x>10"),
        ("x<007", "x<007"),
        ("x>9223372036854775807", "x>9223372036854775807"),
        ("in", "in"),
        ("notin=in", "notin=in"),
        ("in in (in, notin)", "in in (in,notin)"),
        ("!in", "!in"),
        ("b=1,a=2,c", "a=2,b=1,c"),
        ("x=a,x=b", "x=a,x=b"),
        ("example.com/x=A_b-C.d", "example.com/x=A_b-C.d"),
        (
            "app.kubernetes.io/name in (vm)",
            "app.kubernetes.io/name in (vm)",
        ),
        ("X_1", "X_1"),
        (&long63, &long63),
        (&prefixed, &prefixed),
        // A NUL byte where a token would start ends the input upstream.
        ("x=a \0 garbage (((", "x=a"),
        ("\0a=b", ""),
        // ...but one right after an operator is swallowed by the operator's scan.
        ("x=a,\0b", "b,x=a"),
    ];
    for (input, canonical) in cases {
        let parsed = LabelSelector::parse(input)
            .unwrap_or_else(|e| panic!("{input:?} should parse, got: {e}"));
        assert_eq!(parsed.to_string(), *canonical, "input {input:?}");
        assert_eq!(parsed.is_empty(), canonical.is_empty(), "input {input:?}");
        let reparsed = LabelSelector::parse(&parsed.to_string()).unwrap();
        assert_eq!(reparsed, parsed, "round trip of {input:?}");
    }
}

#[test]
fn label_selector_rejects() {
    let key64 = "a".repeat(64);
    let value64 = "v".repeat(64);
    let cases: Vec<(String, String)> = vec![
        // Grammar errors outside a requirement.
        ("a=b,".into(), "found '', expected: identifier after ',' (at byte 4 of the label selector)".into()),
        ("a=b, ".into(), "found '', expected: identifier after ',' (at byte 5 of the label selector)".into()),
        ("a=b,,c".into(), "found ',', expected: identifier after ',' (at byte 4 of the label selector)".into()),
        (",a".into(), "found ',', expected: !, identifier, or 'end of string' (at byte 0 of the label selector)".into()),
        ("=a".into(), "found '=', expected: !, identifier, or 'end of string' (at byte 0 of the label selector)".into()),
        ("==".into(), "found '==', expected: !, identifier, or 'end of string' (at byte 0 of the label selector)".into()),
        ("(a)".into(), "found '(', expected: !, identifier, or 'end of string' (at byte 0 of the label selector)".into()),
        ("a=b c".into(), "found 'c', expected: ',' or 'end of string' (at byte 4 of the label selector)".into()),
        ("a in (b) c".into(), "found 'c', expected: ',' or 'end of string' (at byte 9 of the label selector)".into()),
        ("a in (b))".into(), "found ')', expected: ',' or 'end of string' (at byte 8 of the label selector)".into()),
        ("!a=b".into(), "found '=', expected: ',' or 'end of string' (at byte 2 of the label selector)".into()),
        ("!a in (b)".into(), "found 'in', expected: ',' or 'end of string' (at byte 3 of the label selector)".into()),
        ("x=a,\0".into(), "found '', expected: identifier after ',' (at byte 5 of the label selector)".into()),
        // Grammar errors inside a requirement.
        ("!".into(), "unable to parse requirement: found '', expected: identifier (at byte 1 of the label selector)".into()),
        ("!!a".into(), "unable to parse requirement: found '!', expected: identifier (at byte 1 of the label selector)".into()),
        ("!=a".into(), "found '!=', expected: !, identifier, or 'end of string' (at byte 0 of the label selector)".into()),
        ("a b".into(), "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt (at byte 2 of the label selector)".into()),
        ("a!b".into(), "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt (at byte 1 of the label selector)".into()),
        ("a===b".into(), "unable to parse requirement: found '=', expected: identifier (at byte 3 of the label selector)".into()),
        ("a>=1".into(), "unable to parse requirement: found '=', expected: identifier (at byte 2 of the label selector)".into()),
        ("a gt 1".into(), "unable to parse requirement: found 'gt', expected: in, notin, =, ==, !=, gt, lt (at byte 2 of the label selector)".into()),
        ("a=(b)".into(), "unable to parse requirement: found '(', expected: identifier (at byte 2 of the label selector)".into()),
        ("a in".into(), "unable to parse requirement: found '' expected: '(' (at byte 4 of the label selector)".into()),
        ("a in b".into(), "unable to parse requirement: found 'b' expected: '(' (at byte 5 of the label selector)".into()),
        ("a in (".into(), "unable to parse requirement: found '', expected: ',', ')' or identifier (at byte 6 of the label selector)".into()),
        ("a in (b".into(), "unable to parse requirement: found '', expected: ',' or ')' (at byte 7 of the label selector)".into()),
        ("a in (b,c".into(), "unable to parse requirement: found '', expected: ',' or ')' (at byte 9 of the label selector)".into()),
        ("a in (b c)".into(), "unable to parse requirement: found 'c', expected: ',' or ')' (at byte 8 of the label selector)".into()),
        ("a in ((b))".into(), "unable to parse requirement: found '(', expected: ',', ')' or identifier (at byte 6 of the label selector)".into()),
        ("a in (b,=)".into(), "unable to parse requirement: found '=', expected: ',', or identifier (at byte 8 of the label selector)".into()),
        ("a notin b,c".into(), "unable to parse requirement: found 'b' expected: '(' (at byte 8 of the label selector)".into()),
        ("a in (b))(".into(), "found ')', expected: ',' or 'end of string' (at byte 8 of the label selector)".into()),
        // Invalid keys.
        (key64.clone(), format!("unable to parse requirement: key: Invalid value: \"{key64}\": name part must be no more than 63 bytes")),
        ("-a".into(), format!("unable to parse requirement: key: Invalid value: \"-a\": {KEY_NAME_REGEX}")),
        ("a_".into(), format!("unable to parse requirement: key: Invalid value: \"a_\": {KEY_NAME_REGEX}")),
        ("a/".into(), format!("unable to parse requirement: key: Invalid value: \"a/\": name part must be non-empty; {KEY_NAME_REGEX}")),
        ("/a=b".into(), "unable to parse requirement: key: Invalid value: \"/a\": prefix part must be non-empty".into()),
        ("Example.com/a".into(), "unable to parse requirement: key: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()),
        ("a/b/c".into(), "unable to parse requirement: key: Invalid value: \"a/b/c\": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into()),
        (format!("{}/a", "p".repeat(254)), format!("unable to parse requirement: key: Invalid value: \"{}/a\": prefix part must be no more than 253 bytes", "p".repeat(254))),
        ("é=b".into(), format!("unable to parse requirement: key: Invalid value: \"é\": {KEY_NAME_REGEX}")),
        ("a\u{b}b".into(), format!("unable to parse requirement: key: Invalid value: \"a\\vb\": {KEY_NAME_REGEX}")),
        ("a\u{1}".into(), format!("unable to parse requirement: key: Invalid value: \"a\\x01\": {KEY_NAME_REGEX}")),
        ("a\"\\".into(), format!("unable to parse requirement: key: Invalid value: \"a\\\"\\\\\": {KEY_NAME_REGEX}")),
        // Invalid values, reported at values[i][key] of the sorted value set.
        ("app=-x".into(), format!("unable to parse requirement: values[0][app]: Invalid value: \"-x\": {VALUE_REGEX}")),
        (format!("app={value64}"), format!("unable to parse requirement: values[0][app]: Invalid value: \"{value64}\": must be no more than 63 bytes")),
        (format!("app={value64}_"), format!("unable to parse requirement: values[0][app]: Invalid value: \"{value64}_\": must be no more than 63 bytes; {VALUE_REGEX}")),
        ("app in (ok,b/c)".into(), format!("unable to parse requirement: values[0][app]: Invalid value: \"b/c\": {VALUE_REGEX}")),
        ("app in (z_, -a)".into(), format!("unable to parse requirement: [values[0][app]: Invalid value: \"-a\": {VALUE_REGEX}, values[1][app]: Invalid value: \"z_\": {VALUE_REGEX}]")),
        // gt / lt need an integer that is also a valid label value.
        ("a>b".into(), "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer".into()),
        ("a<".into(), "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer".into()),
        ("a<1.5".into(), "unable to parse requirement: values[0]: Invalid value: \"1.5\": for 'Gt', 'Lt' operators, the value must be an integer".into()),
        ("a>99999999999999999999".into(), "unable to parse requirement: values[0]: Invalid value: \"99999999999999999999\": for 'Gt', 'Lt' operators, the value must be an integer".into()),
        ("a>-1".into(), format!("unable to parse requirement: values[0][a]: Invalid value: \"-1\": {VALUE_REGEX}")),
        ("a>b_".into(), format!("unable to parse requirement: [values[0]: Invalid value: \"b_\": for 'Gt', 'Lt' operators, the value must be an integer, values[0][a]: Invalid value: \"b_\": {VALUE_REGEX}]")),
    ];
    for (input, expected) in &cases {
        assert_eq!(&label_err(input), expected, "input {input:?}");
    }
}

#[test]
fn label_selector_matches() {
    let obj = labels(&[
        ("app", "vm"),
        ("tier", ""),
        ("n", "5"),
        ("neg", "-3"),
        ("text", "abc"),
        ("example.com/os", "linux"),
    ]);
    let none = labels(&[]);
    // (selector, matches obj, matches an object without labels)
    let cases: &[(&str, bool, bool)] = &[
        ("", true, true),
        ("app=vm", true, false),
        ("app==vm", true, false),
        ("app=other", false, false),
        ("app!=vm", false, true),
        ("app!=other", true, true),
        ("missing!=x", true, true),
        ("tier=", true, false),
        ("tier!=", false, true),
        ("missing=", false, false),
        ("app in (vm,x)", true, false),
        ("app in (x,y)", false, false),
        ("app notin (vm)", false, true),
        ("app notin (x)", true, true),
        ("missing notin (x)", true, true),
        ("tier in ()", true, false),
        ("app in ()", false, false),
        ("app notin ()", true, true),
        ("app", true, false),
        ("tier", true, false),
        ("!app", false, true),
        ("!missing", true, true),
        ("n>4", true, false),
        ("n>5", false, false),
        ("n<6", true, false),
        ("n<5", false, false),
        ("neg<0", true, false),
        ("text>0", false, false),
        ("text<0", false, false),
        ("missing<100", false, false),
        ("example.com/os=linux", true, false),
        ("app=vm,tier,!missing,n>1", true, false),
        ("app=vm,n>5", false, false),
        ("in in (in)", false, false),
    ];
    for (input, on_obj, on_none) in cases {
        let sel = LabelSelector::parse(input).unwrap();
        assert_eq!(sel.matches(&obj), *on_obj, "{input:?} on obj");
        assert_eq!(sel.matches(&none), *on_none, "{input:?} on no labels");
        let via_fn = sel.matches_with(|k| obj.get(k).map(String::as_str));
        assert_eq!(via_fn, *on_obj, "{input:?} via matches_with");
    }
}

#[test]
fn label_selector_accessors() {
    let sel = LabelSelector::parse("b in (y), a=x, c, d in (p,q), e!=z").unwrap();
    let keys: Vec<&str> = sel.requirements().iter().map(Requirement::key).collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e"]);
    let ops: Vec<Operator> = sel
        .requirements()
        .iter()
        .map(Requirement::operator)
        .collect();
    assert_eq!(
        ops,
        [
            Operator::Equals,
            Operator::In,
            Operator::Exists,
            Operator::In,
            Operator::NotEquals
        ]
    );
    assert_eq!(sel.requirements()[3].values(), ["p", "q"]);
    assert!(sel.requirements()[2].values().is_empty());
    // (key, exact value)
    let cases: &[(&str, Option<&str>)] = &[
        ("a", Some("x")),
        ("b", Some("y")),
        ("c", None),
        ("d", None),
        ("e", None),
        ("f", None),
    ];
    for (key, expected) in cases {
        assert_eq!(sel.requires_exact_match(key), *expected, "key {key}");
    }
    let double = LabelSelector::parse("a==x,!b,c<3").unwrap();
    assert_eq!(double.requires_exact_match("a"), Some("x"));
    assert_eq!(double.requirements()[1].operator(), Operator::DoesNotExist);
    assert_eq!(double.requirements()[2].operator(), Operator::LessThan);
    assert_eq!(
        LabelSelector::parse("x>1").unwrap().requirements()[0].operator(),
        Operator::GreaterThan
    );
    assert_eq!(
        LabelSelector::parse("x notin (a)").unwrap().requirements()[0].operator(),
        Operator::NotIn
    );
    assert_eq!(LabelSelector::default(), LabelSelector::parse("").unwrap());
}

/// The `NewRequirement` checks the parser cannot reach still hold.
#[test]
fn label_requirement_constructor_checks() {
    let cases: &[(Operator, &[&str], &str)] = &[
        (
            Operator::In,
            &[],
            "unable to parse requirement: values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            Operator::NotIn,
            &[],
            "unable to parse requirement: values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            Operator::Equals,
            &["a", "b"],
            "unable to parse requirement: values: Invalid value: [\"a\",\"b\"]: exact-match compatibility requires one single value",
        ),
        (
            Operator::Exists,
            &["a"],
            "unable to parse requirement: values: Invalid value: [\"a\"]: values set must be empty for exists and does not exist",
        ),
        (
            Operator::GreaterThan,
            &[],
            "unable to parse requirement: values: Invalid value: []: for 'Gt', 'Lt' operators, exactly one value is required",
        ),
    ];
    for (op, values, expected) in cases {
        let values = values.iter().map(|v| (*v).to_owned()).collect();
        let err = new_requirement("k".into(), *op, values).unwrap_err();
        assert_eq!(err.to_string(), *expected, "{op:?}");
    }
    let err = new_requirement("-k".into(), Operator::Exists, vec![]).unwrap_err();
    assert_eq!(
        err,
        Error::LabelRequirement(format!("key: Invalid value: \"-k\": {KEY_NAME_REGEX}"))
    );
    assert_eq!(aggregate(vec!["x".into(), "x".into()]), "x");
}

const SUPPORTED: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.powerState",
    "spec.source",
];

#[test]
fn field_selector_parses() {
    // (input, canonical form)
    let cases: &[(&str, &str)] = &[
        ("", ""),
        (",", ""),
        (",,metadata.name=a,,", "metadata.name=a"),
        // A term with neither field nor value is dropped, as upstream does.
        ("=", ""),
        ("==,!=", ""),
        ("=,metadata.name!=a", "metadata.name!=a"),
        ("metadata.name=a", "metadata.name=a"),
        ("metadata.name==a", "metadata.name=a"),
        ("metadata.name!=a", "metadata.name!=a"),
        ("metadata.name=", "metadata.name="),
        ("metadata.name!=", "metadata.name!="),
        (
            "spec.powerState=On,metadata.namespace=ns",
            "metadata.namespace=ns,spec.powerState=On",
        ),
        ("metadata.name=a b", "metadata.name=a b"),
        ("metadata.name=a!b", "metadata.name=a!b"),
        ("metadata.name=!", "metadata.name=!"),
        ("metadata.name=a\\,b", "metadata.name=a\\,b"),
        ("metadata.name=a\\=b", "metadata.name=a\\=b"),
        ("metadata.name=a\\\\b", "metadata.name=a\\\\b"),
        ("metadata.name=\\\\", "metadata.name=\\\\"),
        ("metadata.name=\\,\\,", "metadata.name=\\,\\,"),
        ("metadata.name=é✓", "metadata.name=é✓"),
        (
            "metadata.name=a,metadata.name=b",
            "metadata.name=a,metadata.name=b",
        ),
        // Found by fuzzing: sorted as written, `==` came first; as printed, it does not.
        (
            "metadata.name==b,metadata.name=a",
            "metadata.name=a,metadata.name=b",
        ),
    ];
    for (input, canonical) in cases {
        let parsed = FieldSelector::parse(input, SUPPORTED)
            .unwrap_or_else(|e| panic!("{input:?} should parse, got: {e}"));
        assert_eq!(parsed.to_string(), *canonical, "input {input:?}");
        assert_eq!(parsed.is_empty(), canonical.is_empty(), "input {input:?}");
        let reparsed = FieldSelector::parse(&parsed.to_string(), SUPPORTED).unwrap();
        assert_eq!(reparsed, parsed, "round trip of {input:?}");
    }
    let sel = FieldSelector::parse("metadata.name=a\\,b\\=c\\\\d", SUPPORTED).unwrap();
    assert_eq!(
        sel.requirements(),
        [FieldRequirement {
            field: "metadata.name".into(),
            operator: FieldOperator::Equals,
            value: "a,b=c\\d".into(),
        }]
    );
}

#[test]
fn field_selector_rejects() {
    let supported = "(supported: metadata.name, metadata.namespace, spec.powerState, spec.source)";
    let cases: Vec<(&str, String)> = vec![
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'".into()),
        ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'".into()),
        ("metadata.name=a,x", "invalid selector: 'metadata.name=a,x'; can't understand 'x'".into()),
        ("metadata.name!a", "invalid selector: 'metadata.name!a'; can't understand 'metadata.name!a'".into()),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: '=' (in value 'a=b'; write it as '\\=')".into()),
        ("metadata.name!==a", "invalid field selector: unescaped character in value: '=' (in value '=a'; write it as '\\=')".into()),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\ (in value 'a\\')".into()),
        ("metadata.name=a\\n", "invalid field selector: invalid escape sequence: \\n (in value 'a\\n')".into()),
        ("metadata.name=a\\!", "invalid field selector: invalid escape sequence: \\! (in value 'a\\!')".into()),
        ("metadata.name=\\é", "invalid field selector: invalid escape sequence: \\é (in value '\\é')".into()),
        ("spec.foo=x", format!("field label not supported: spec.foo {supported}")),
        ("=x", format!("field label not supported:  {supported}")),
        ("!=x", format!("field label not supported:  {supported}")),
        (" metadata.name=a", format!("field label not supported:  metadata.name {supported}")),
        ("metadata.name =a", format!("field label not supported: metadata.name  {supported}")),
        ("Metadata.Name=a", format!("field label not supported: Metadata.Name {supported}")),
        ("metadata.name\\=a", format!("field label not supported: metadata.name\\ {supported}")),
        ("metadata.name\\=a=b", "invalid field selector: unescaped character in value: '=' (in value 'a=b'; write it as '\\=')".into()),
        // Terms are checked in sorted order, syntax before support.
        ("spec.foo=x,bad", "invalid selector: 'spec.foo=x,bad'; can't understand 'bad'".into()),
        ("z=1,y=2", format!("field label not supported: y {supported}")),
        ("metadata.name=a\\q,b=c\\", "invalid field selector: invalid escape sequence: \\ (in value 'c\\')".into()),
    ];
    for (input, expected) in &cases {
        match FieldSelector::parse(input, SUPPORTED) {
            Ok(s) => panic!("{input:?} parsed as {s}, expected an error"),
            Err(e) => assert_eq!(&e.to_string(), expected, "input {input:?}"),
        }
    }
    // Nothing is supported: every non-empty selector is an error, the empty one is not.
    assert!(FieldSelector::parse("", &[]).unwrap().is_empty());
    assert_eq!(
        FieldSelector::parse("a=b", &[]).unwrap_err(),
        Error::FieldNotSupported {
            field: "a".into(),
            supported: vec![]
        }
    );
}

#[test]
fn field_escaping() {
    // (literal, escaped)
    let cases: &[(&str, &str)] = &[
        ("", ""),
        ("plain", "plain"),
        ("a,b", "a\\,b"),
        ("a=b", "a\\=b"),
        ("a\\b", "a\\\\b"),
        ("a!b", "a!b"),
        ("\\,=", "\\\\\\,\\="),
        ("é,✓", "é\\,✓"),
    ];
    for (literal, escaped) in cases {
        assert_eq!(escape_value(literal), *escaped, "escape {literal:?}");
        assert_eq!(
            unescape_value(escaped).unwrap(),
            *literal,
            "unescape {escaped:?}"
        );
    }
    assert!(matches!(
        unescape_value("plain"),
        Ok(Cow::Borrowed("plain"))
    ));
    assert_eq!(
        unescape_value("a,b").unwrap_err(),
        Error::FieldUnescaped {
            character: ',',
            value: "a,b".into()
        }
    );
}

struct Vm {
    name: String,
    namespace: String,
    power: Option<&'static str>,
}

fn vm_name(vm: &Vm) -> Option<Cow<'_, str>> {
    Some(Cow::Borrowed(&vm.name))
}

static VM_FIELDS: FieldTable<Vm> = FieldTable::new(&[
    ("metadata.name", vm_name),
    ("metadata.namespace", |vm| {
        Some(Cow::Borrowed(vm.namespace.as_str()))
    }),
    ("spec.powerState", |vm| vm.power.map(Cow::Borrowed)),
    ("spec.source", |vm| {
        Some(Cow::Owned(format!("src-{}", vm.name)))
    }),
]);

#[test]
fn field_selector_matches() {
    let on = Vm {
        name: "web".into(),
        namespace: "prod".into(),
        power: Some("On"),
    };
    let unknown = Vm {
        name: "a,b".into(),
        namespace: "prod".into(),
        power: None,
    };
    assert_eq!(VM_FIELDS.paths(), SUPPORTED);
    // (selector, matches `on`, matches `unknown`)
    let cases: &[(&str, bool, bool)] = &[
        ("", true, true),
        ("metadata.name=web", true, false),
        ("metadata.name==web", true, false),
        ("metadata.name!=web", false, true),
        ("metadata.name=a\\,b", false, true),
        ("metadata.namespace=prod,metadata.name=web", true, false),
        ("metadata.namespace=prod,metadata.name!=web", false, true),
        ("spec.powerState=On", true, false),
        ("spec.powerState=", false, true),
        ("spec.powerState!=", true, false),
        ("spec.powerState!=Off", true, true),
        ("spec.source=src-web", true, false),
        ("metadata.name=web,metadata.name=other", false, false),
    ];
    for (input, on_match, unknown_match) in cases {
        let sel = VM_FIELDS.parse(input).unwrap();
        assert_eq!(VM_FIELDS.matches(&sel, &on), *on_match, "{input:?} on `on`");
        assert_eq!(
            VM_FIELDS.matches(&sel, &unknown),
            *unknown_match,
            "{input:?} on `unknown`"
        );
    }
    assert_eq!(VM_FIELDS.get(&on, "spec.nope"), None);
    assert!(VM_FIELDS.same(&on, &on));
    assert!(!VM_FIELDS.same(&on, &unknown));

    // A plain map is a FieldSource (upstream's fields.Set).
    let set = labels(&[("metadata.name", "web"), ("spec.powerState", "On")]);
    let sel = FieldSelector::parse("metadata.name=web,spec.powerState!=Off", SUPPORTED).unwrap();
    assert!(sel.matches(&set));
    let sel = FieldSelector::parse("metadata.namespace=", SUPPORTED).unwrap();
    assert!(sel.matches(&set), "a missing field compares as empty");
}

#[test]
fn field_selector_exact_value() {
    // (selector, path, exact value)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("", "metadata.name", None),
        ("metadata.name=web", "metadata.name", Some("web")),
        ("metadata.name==web", "metadata.name", Some("web")),
        ("metadata.name!=web", "metadata.name", None),
        ("metadata.name=a\\,b", "metadata.name", Some("a,b")),
        (
            "metadata.namespace=ns,metadata.name=web",
            "metadata.name",
            Some("web"),
        ),
        ("metadata.namespace=ns", "metadata.name", None),
        (
            "metadata.name=b,metadata.name=a",
            "metadata.name",
            Some("a"),
        ),
    ];
    for (input, path, expected) in cases {
        let sel = FieldSelector::parse(input, SUPPORTED).unwrap();
        assert_eq!(sel.exact_value(path), *expected, "{input:?} / {path}");
    }
}

#[test]
fn long_inputs() {
    let many = vec!["a=b"; 50_000].join(",");
    let sel = LabelSelector::parse(&many).unwrap();
    assert_eq!(sel.requirements().len(), 50_000);
    assert!(sel.matches(&labels(&[("a", "b")])));
    let values = format!("a in ({})", vec!["v"; 50_000].join(","));
    assert_eq!(
        LabelSelector::parse(&values).unwrap().requirements()[0].values(),
        ["v"]
    );
    for nasty in [
        "(".repeat(100_000),
        "!".repeat(100_000),
        "=".repeat(100_000),
        ",".repeat(100_000),
        "a".repeat(100_000),
        format!("a in ({}", ",".repeat(100_000)),
        "\0".repeat(1000),
        "é".repeat(50_000),
    ] {
        let _ = LabelSelector::parse(&nasty);
        let _ = FieldSelector::parse(&nasty, SUPPORTED);
    }
    assert!(LabelSelector::parse(&"a".repeat(100_000)).is_err());
    let fields = vec!["metadata.name!=x"; 50_000].join(",");
    assert_eq!(
        FieldSelector::parse(&fields, SUPPORTED)
            .unwrap()
            .requirements()
            .len(),
        50_000
    );
    let escapes = format!("metadata.name={}", "\\\\".repeat(100_000));
    assert_eq!(
        FieldSelector::parse(&escapes, SUPPORTED)
            .unwrap()
            .requirements()[0]
            .value
            .len(),
        100_000
    );
}

/// A tiny property test: pseudo-random inputs never panic, and whatever parses
/// prints to a form that parses back to the same selector.
#[test]
fn random_inputs_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "a",
        "b",
        "x",
        "in",
        "notin",
        "=",
        "==",
        "!=",
        "!",
        "(",
        ")",
        ",",
        " ",
        "\t",
        ">",
        "<",
        "1",
        "-2",
        "example.com/",
        "/",
        ".",
        "_",
        "-",
        "\\",
        "\\,",
        "\\=",
        "\0",
        "é",
        "metadata.name",
        "spec.powerState",
        "metadata.namespace",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut labels_ok, mut fields_ok) = (0, 0);
    for round in 0..5000 {
        let len = (next() % 24) as usize;
        let mut bytes = Vec::new();
        for _ in 0..len {
            let r = next();
            if round % 2 == 0 {
                bytes.push((r >> 8) as u8);
            } else {
                let fragment = FRAGMENTS[(r % FRAGMENTS.len() as u64) as usize];
                bytes.extend_from_slice(fragment.as_bytes());
            }
        }
        let input = String::from_utf8_lossy(&bytes);
        if let Ok(sel) = LabelSelector::parse(&input) {
            labels_ok += 1;
            let printed = sel.to_string();
            assert_eq!(
                LabelSelector::parse(&printed).as_ref(),
                Ok(&sel),
                "{input:?} printed as {printed:?}"
            );
            let _ = sel.matches(&labels(&[("a", "1"), ("x", "")]));
        }
        if let Ok(sel) = FieldSelector::parse(&input, SUPPORTED) {
            fields_ok += 1;
            let printed = sel.to_string();
            assert_eq!(
                FieldSelector::parse(&printed, SUPPORTED).as_ref(),
                Ok(&sel),
                "{input:?} printed as {printed:?}"
            );
            let _ = sel.matches_with(|_| None);
        }
    }
    // The generator reaches the interesting (valid) part of the input space too.
    assert!(labels_ok > 100, "only {labels_ok} label selectors parsed");
    assert!(fields_ok > 20, "only {fields_ok} field selectors parsed");
}
