//! The proxy's headers as an attacker past the proxy could send them.
#![allow(clippy::unwrap_used)]
use super::*;
use warp::http::HeaderValue;

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
        h.append(name, HeaderValue::from_bytes(v).unwrap());
    }
    h
}

fn parse(pairs: &[(&str, &[u8])]) -> Result<Identity, Refused> {
    let user = HeaderName::from_static("x-forwarded-user");
    let groups = HeaderName::from_static("x-forwarded-groups");
    identity(&headers(pairs), &user, Some(&groups))
}

#[test]
fn the_user_and_groups_come_sorted_without_duplicates() {
    let id = parse(&[
        ("x-forwarded-user", b" alice@example.com "),
        ("x-forwarded-groups", b"devs, ops,devs"),
        ("x-forwarded-groups", b"admins"),
    ])
    .unwrap();
    assert_eq!(id.user, "alice@example.com");
    assert_eq!(id.groups, ["admins", "devs", "ops"]);
    let alone = parse(&[("x-forwarded-user", b"bob"), ("x-forwarded-groups", b"")]);
    assert_eq!(alone.unwrap().groups, Vec::<String>::new());
}

#[test]
fn no_user_is_401_and_never_the_dashboards_own_view() {
    let none = parse(&[("x-forwarded-groups", b"devs")]).unwrap_err();
    assert_eq!((none.status.as_u16(), none.reason), (401, "NoProxyUser"));
    let two = parse(&[("x-forwarded-user", b"a"), ("x-forwarded-user", b"b")]).unwrap_err();
    assert_eq!((two.status.as_u16(), two.reason), (400, "BadProxyHeader"));
}

#[test]
fn hostile_values_are_refused_without_echoing_them() {
    let long = "a".repeat(MAX_NAME + 1);
    let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
    let many = many.join(",");
    let cases: [(&str, &[u8]); 9] = [
        ("x-forwarded-user", b""),
        ("x-forwarded-user", b"   "),
        ("x-forwarded-user", long.as_bytes()),
        ("x-forwarded-user", b"caf\xe9"),
        ("x-forwarded-user", b"eve\tadmin"),
        ("x-forwarded-user", b"system:serviceaccount:baton:baton"),
        ("x-forwarded-groups", b"devs,system:masters"),
        ("x-forwarded-groups", b"devs,,ops"),
        ("x-forwarded-groups", many.as_bytes()),
    ];
    for (header, value) in cases {
        let mut pairs: Vec<(&str, &[u8])> = vec![(header, value)];
        if header != "x-forwarded-user" {
            pairs.push(("x-forwarded-user", b"alice"));
        }
        let e = parse(&pairs).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.reason),
            (400, "BadProxyHeader"),
            "{value:?}"
        );
        assert!(
            e.message.starts_with(&format!("header {header}: ")),
            "{e:?}"
        );
        let shown = String::from_utf8_lossy(value);
        let echoed = shown.len() > 3 && e.message.contains(shown.as_ref());
        assert!(!echoed, "the value is not echoed: {e:?}");
    }
}

#[test]
fn names_at_the_bound_and_non_ascii_names_pass() {
    assert_eq!(
        name("a".repeat(MAX_NAME).as_bytes()).unwrap().len(),
        MAX_NAME
    );
    assert_eq!(name("zoë".as_bytes()).unwrap(), "zoë");
    assert_eq!(group_list(b" a ,b").unwrap(), ["a", "b"]);
}

#[test]
fn the_impersonating_config_names_the_user_and_only_given_groups() {
    let base = kube::Config::new("https://kubernetes.default.svc".parse().unwrap());
    let id = Identity {
        user: "alice".into(),
        groups: vec!["devs".into()],
    };
    let c = impersonation(&base, &id);
    assert_eq!(c.auth_info.impersonate.as_deref(), Some("alice"));
    assert_eq!(
        c.auth_info.impersonate_groups,
        Some(vec!["devs".to_owned()])
    );
    assert_eq!(c.cluster_url, base.cluster_url);
    let bare = Identity {
        user: "bob".into(),
        groups: vec![],
    };
    assert_eq!(
        impersonation(&base, &bare).auth_info.impersonate_groups,
        None
    );
    assert!(
        base.auth_info.impersonate.is_none(),
        "the base is unchanged"
    );
}
