//! The one URL redaction: a password in a broker or backend URL becomes `********`, as Celery's
//! `maybe_sanitize_url` writes it, in logs, errors and `inspect conf` / `report` alike. And the one percent-decoding
//! of URL parts (an AMQP vhost `%2F`, a file path in a query parameter).

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

/// `%XX` escapes decoded; anything else (a lone `%`, invalid UTF-8 after decoding) is kept as it is, lossily.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, redact_url};

    #[test]
    fn percent_escapes_are_decoded_and_the_rest_kept() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("%2f"), "/");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

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
