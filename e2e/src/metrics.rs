//! Reading a service's `/metrics` page (Prometheus text format).

/// The sum of a metric's samples whose labels include every `labels` pair (0 when there is
/// none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric_name, rest) = match series.split_once('{') {
                Some((n, r)) => (n, r),
                None => (series, ""),
            };
            (metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_over_the_labels_asked_for() {
        let page = "# HELP x_total a counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"2\"} 4\nx_totals 9\ny 1\n";
        assert_eq!(sum(page, "x_total", &[]), 7.0);
        assert_eq!(sum(page, "x_total", &[("a", "1")]), 3.0);
        assert_eq!(sum(page, "z", &[]), 0.0);
    }
}
