//! Tables as `kubectl get` prints them: each column padded to its widest cell,
//! trailing spaces trimmed.

/// `rows` (the header first) with each column left-aligned, cells joined by `gap`.
pub fn aligned<R: AsRef<[String]>>(rows: &[R], gap: &str) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            let cell = |r: &R| r.as_ref().get(i).map_or(0, String::len);
            rows.iter().map(cell).max().unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.as_ref()
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(gap)
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_pad_to_their_widest_cell() {
        let rows =
            [["NAME", "PHASE"], ["a-long-name", "Ok"], ["b", ""]].map(|r| r.map(str::to_owned));
        assert_eq!(
            super::aligned(&rows, "  "),
            "NAME         PHASE\na-long-name  Ok\nb"
        );
    }
}
