//! Which namespaces a controller watches and its runner API serves: all of them,
//! or a fixed set (`baton controller --namespace a,b`). The watches, the runner
//! API's refusals and the log sweep all ask this one value.

use std::collections::BTreeSet;

/// All namespaces, or only these (never empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    /// From `--namespace` values: each may hold several names split by commas;
    /// blanks are ignored, repeats kept once; none at all means every namespace.
    pub fn from_flags<S: AsRef<str>>(values: &[S]) -> Scope {
        let names: BTreeSet<String> = values
            .iter()
            .flat_map(|v| v.as_ref().split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            Scope::All
        } else {
            Scope::Only(names)
        }
    }

    /// Only these namespaces (none: every namespace).
    pub fn only<S: AsRef<str>>(names: &[S]) -> Scope {
        Self::from_flags(names)
    }

    /// Whether objects in namespace `ns` are watched and served.
    pub fn serves(&self, ns: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.contains(ns),
        }
    }

    /// The namespace when exactly one is served: where a runner that names
    /// none registers.
    pub fn single(&self) -> Option<&str> {
        match self {
            Scope::Only(names) if names.len() == 1 => names.first().map(String::as_str),
            _ => None,
        }
    }

    /// What each watch covers: `[None]` (the whole cluster) or one entry per
    /// namespace.
    pub fn watched(&self) -> Vec<Option<&str>> {
        match self {
            Scope::All => vec![None],
            Scope::Only(names) => names.iter().map(|n| Some(n.as_str())).collect(),
        }
    }
}

/// `*`, or the namespaces joined by commas (as in logs and refusals).
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Only(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_repeat_or_split_by_commas_and_none_means_all() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "*"),
            (&[""], "*"),
            (&["a"], "a"),
            (&["b", "a"], "a,b"),
            (&["a,b"], "a,b"),
            (&["a, b,", "b", "c"], "a,b,c"),
        ];
        for (flags, want) in cases {
            assert_eq!(Scope::from_flags(flags).to_string(), *want, "{flags:?}");
        }
    }

    #[test]
    fn serves_only_its_namespaces() {
        let two = Scope::only(&["a", "b"]);
        assert!(two.serves("a") && two.serves("b"));
        assert!(!two.serves("c"));
        assert!(Scope::All.serves("c"));
    }

    #[test]
    fn a_default_namespace_only_when_there_is_exactly_one() {
        assert_eq!(Scope::only(&["a"]).single(), Some("a"));
        assert_eq!(Scope::only(&["a", "b"]).single(), None);
        assert_eq!(Scope::All.single(), None);
    }

    #[test]
    fn one_watch_for_the_cluster_or_one_per_namespace() {
        assert_eq!(Scope::All.watched(), vec![None]);
        assert_eq!(
            Scope::only(&["b", "a"]).watched(),
            vec![Some("a"), Some("b")]
        );
    }
}
