#![allow(clippy::unwrap_used)]
use super::*;

fn alice() -> Identity {
    Identity {
        user: "alice".into(),
        groups: vec!["devs".into()],
    }
}

#[test]
fn the_self_review_asks_about_baton_resources_in_one_namespace() {
    let r = review(&Ask::new("patch", "runners", "ci"));
    let a = r.spec.resource_attributes.unwrap_or_default();
    assert_eq!(a.group.as_deref(), Some("baton.dev"));
    assert_eq!(a.resource.as_deref(), Some("runners"));
    assert_eq!(a.verb.as_deref(), Some("patch"));
    assert_eq!(a.namespace.as_deref(), Some("ci"));
    assert!(r.spec.non_resource_attributes.is_none());
}

#[test]
fn the_subject_review_names_the_user_and_groups_as_impersonation_would() {
    let r = subject_review(&alice(), &Ask::new("list", "events", "ci"));
    assert_eq!(r.spec.user.as_deref(), Some("alice"));
    assert_eq!(
        r.spec.groups.unwrap(),
        ["devs".to_owned(), AUTHENTICATED.to_owned()]
    );
    let a = r.spec.resource_attributes.unwrap();
    assert_eq!(a.group.as_deref(), Some(""), "events are core");
    assert_eq!(
        (a.verb.as_deref(), a.namespace.as_deref()),
        (Some("list"), Some("ci"))
    );
}

#[test]
fn answers_are_kept_per_user_groups_and_question_for_a_minute() {
    let mut answers = Answers::new(10);
    let t0 = Instant::now();
    let ask = Ask::new("list", "jobs", "ci");
    let a = (Who::User(alice()), ask.clone());
    answers.put(a.clone(), true, t0);
    assert_eq!(answers.get(&a, t0 + Duration::from_secs(59)), Some(true));
    assert_eq!(answers.get(&a, t0 + FRESH), None, "stale");
    let other_groups = Identity {
        groups: vec![],
        ..alice()
    };
    for key in [
        (Who::User(other_groups), ask.clone()),
        (Who::Own, ask.clone()),
        (Who::User(alice()), Ask::new("list", "jobs", "prod")),
        (Who::User(alice()), Ask::new("get", "jobs", "ci")),
    ] {
        assert_eq!(answers.get(&key, t0), None, "{key:?}");
    }
}

#[test]
fn answers_are_bounded_stale_ones_go_first_then_the_oldest() {
    let mut answers = Answers::new(3);
    let t0 = Instant::now();
    let key = |ns: &str| (Who::Own, Ask::new("list", "jobs", ns));
    answers.put(key("stale"), true, t0);
    let t1 = t0 + FRESH;
    answers.put(key("a"), true, t1);
    answers.put(key("b"), false, t1 + Duration::from_secs(1));
    answers.put(key("c"), true, t1 + Duration::from_secs(2));
    assert_eq!(answers.len(), 3);
    let now = t1 + Duration::from_secs(3);
    assert_eq!(
        answers.get(&key("a"), now),
        Some(true),
        "only the stale one went"
    );
    answers.put(key("d"), true, now);
    assert_eq!(answers.len(), 3);
    assert_eq!(answers.get(&key("a"), now), None, "the oldest went");
    assert_eq!(answers.get(&key("b"), now), Some(false));
    assert_eq!(answers.get(&key("d"), now), Some(true));
}
