//! The one URL redaction: a password in a broker or backend URL becomes `********`, as Celery's
//! `maybe_sanitize_url` writes it, in logs, errors and `inspect conf` / `report` alike.

/// The URL with its password (or a lone user-info part, which some clients read as a password) masked.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            match auth.split_once(':') {
                Some((user, _)) => format!("{}{}:********{}", &url[..s + 3], user, &url[at..]),
                None => format!("{}********{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked_like_celery() {
        for (url, want) in [
            ("redis://:secret@h:6379/0", "redis://:********@h:6379/0"),
            ("redis://user:secret@h/0", "redis://user:********@h/0"),
            (
                "amqp://guest:guest@h:5672//",
                "amqp://guest:********@h:5672//",
            ),
            ("redis://secret@h/0", "redis://********@h/0"),
            ("redis://h/0", "redis://h/0"),
            (
                "redis+sentinel://:pw@s1:26379,s2/m/1",
                "redis+sentinel://:********@s1:26379,s2/m/1",
            ),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
