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

/// [`metric_at`] for a broker with users: `/metrics` asked as `auth`
/// (a user and password of the `monitors` or `admins` group).
///
/// # Panics
///
/// If `/metrics` does not answer 200 or has no such value.
pub async fn metric_at_as(http: SocketAddr, name: &str, auth: (&str, &str)) -> u64 {
    let r = crate::http::http_request(http, "GET", "/metrics", Some(auth)).await;
    assert_eq!(r.status, 200, "GET /metrics as {}: {}", auth.0, r.body);
    metric(&r.body, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", r.body))
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
