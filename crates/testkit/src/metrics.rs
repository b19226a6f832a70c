//! Reading a broker's Prometheus `/metrics` text.

use std::net::SocketAddr;

use crate::http::http_get;

/// The value of `name` in a `/metrics` text (an unlabelled counter or
/// gauge), if it is there.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of `name` in the `/metrics` of the broker at `http`.
///
/// # Panics
///
/// If `/metrics` does not answer 200 or has no such value.
pub async fn metric_at(http: SocketAddr, name: &str) -> u64 {
    let (code, text) = http_get(http, "/metrics").await;
    assert_eq!(code, 200, "GET /metrics: {text}");
    metric(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn metric_finds_the_unlabelled_value_by_its_whole_name() {
        let text = "# TYPE a_total counter\na_total 3\na_total_x 4\nb{l=\"1\"} 5\n";
        assert_eq!(metric(text, "a_total"), Some(3));
        assert_eq!(metric(text, "a_total_x"), Some(4));
        assert_eq!(metric(text, "a"), None);
        assert_eq!(metric(text, "b"), None);
    }
}
