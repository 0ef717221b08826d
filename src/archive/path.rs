//! Which relative paths an archive may name, and whether a symlink's target
//! stays inside the tree.

/// Longest path and path component accepted (Linux's PATH_MAX and NAME_MAX).
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// Why `path` may not be extracted, or `None` when it may: relative, made only
/// of plain names (no empty, `.` or `..` component), no control characters.
pub fn refuse(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("empty path");
    }
    if path.len() > MAX_PATH {
        return Some("path longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return Some("absolute path");
    }
    if path.chars().any(char::is_control) {
        return Some("control character in path");
    }
    for name in path.split('/') {
        match name {
            "" => return Some("empty path component"),
            "." | ".." => return Some("`.` or `..` component"),
            _ if name.len() > MAX_NAME => return Some("path component longer than 255 bytes"),
            _ => {}
        }
    }
    None
}

/// Whether a symlink at `link` (a path [`refuse`] accepts) pointing to `target`
/// resolves inside the tree, judged on the names alone: relative, and never
/// climbing above the root at any step.
pub fn link_stays_inside(link: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.chars().any(char::is_control) {
        return false;
    }
    // The link's own directory is where the target starts.
    let mut depth = link.split('/').count() - 1;
    for name in target.split('/') {
        match name {
            "" | "." => {}
            ".." if depth == 0 => return false,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_only() {
        for ok in ["a", "a/b.txt", "dir/.hidden", "x..y", "über/ñ"] {
            assert_eq!(refuse(ok), None, "{ok}");
        }
        let long = "a/".repeat(2100);
        let long_name = "n".repeat(256);
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("./a", "`.`"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("a\nb", "control"),
            ("a\u{1b}[2J", "control"),
            (long.as_str(), "4096"),
            (long_name.as_str(), "255"),
        ] {
            let got = refuse(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad:?}: {got}");
        }
    }

    #[test]
    fn links_may_not_climb_out() {
        assert!(link_stays_inside("l", "a/b"));
        assert!(link_stays_inside("d/l", "../a"));
        assert!(link_stays_inside("d/e/l", "../../a"));
        assert!(link_stays_inside("l", "a/../b"));
        assert!(!link_stays_inside("l", "../a"));
        assert!(!link_stays_inside("d/l", "../../a"));
        // Climbs out and back in: the walk leaves the tree on the way.
        assert!(!link_stays_inside("l", "../root/a"));
        assert!(!link_stays_inside("l", "/etc/passwd"));
        assert!(!link_stays_inside("l", ""));
    }
}
