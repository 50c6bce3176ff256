//! Netstrings (`LEN:DATA,`), the framing of Postfix's socketmap protocol.

/// The longest request taken (Postfix's own limit on socketmap replies is 100,000 bytes).
pub const MAX_LENGTH: usize = 100_000;

/// Why bytes are not a netstring: the connection cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstringError {
    #[error("the length is not a decimal number")]
    BadLength,
    #[error("the netstring is longer than {MAX_LENGTH} bytes")]
    TooLong,
    #[error("the netstring does not end with a comma")]
    NoComma,
}

/// The first netstring of `buf`, when `buf` holds all of it: its data and how many bytes
/// it took. `None` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(&[u8], usize)>, NetstringError> {
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        // Digits so far, or not a length at all.
        if buf.len() > 6 || !buf.iter().all(u8::is_ascii_digit) {
            return Err(if buf.iter().all(u8::is_ascii_digit) {
                NetstringError::TooLong
            } else {
                NetstringError::BadLength
            });
        }
        return Ok(None);
    };
    let digits = &buf[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 6 {
        return Err(
            if digits.len() > 6 && digits.iter().all(u8::is_ascii_digit) {
                NetstringError::TooLong
            } else {
                NetstringError::BadLength
            },
        );
    }
    let length: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(NetstringError::BadLength)?;
    if length > MAX_LENGTH {
        return Err(NetstringError::TooLong);
    }
    let end = colon + 1 + length;
    if buf.len() <= end {
        return Ok(None);
    }
    if buf[end] != b',' {
        return Err(NetstringError::NoComma);
    }
    Ok(Some((&buf[colon + 1..end], end + 1)))
}

/// `data` as a netstring.
pub fn encode(data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data.as_bytes());
    out.push(b',');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_one_at_a_time() {
        let two = b"12:recipients a,7:domains,";
        let (first, used) = decode(two).unwrap().unwrap();
        assert_eq!((first, used), (&b"recipients a"[..], 16));
        let (second, used2) = decode(&two[used..]).unwrap().unwrap();
        assert_eq!((second, used + used2), (&b"domains"[..], two.len()));
        // Cut anywhere, a frame waits for its rest.
        for cut in 0..16 {
            assert_eq!(decode(&two[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(decode(b"0:,").unwrap(), Some((&b""[..], 3)));
    }

    #[test]
    fn what_is_not_a_netstring_is_refused() {
        assert_eq!(decode(b"x:abc,"), Err(NetstringError::BadLength));
        assert_eq!(decode(b":abc,"), Err(NetstringError::BadLength));
        assert_eq!(decode(b"3:abcd"), Err(NetstringError::NoComma));
        assert_eq!(decode(b"9999999:"), Err(NetstringError::TooLong));
        assert_eq!(decode(b"100001:"), Err(NetstringError::TooLong));
        assert_eq!(decode(b"GET / HTTP/1.1"), Err(NetstringError::BadLength));
    }

    #[test]
    fn encoding_round_trips() {
        let wire = encode("OK smtp:[contoso-com.mail.protection.outlook.com]:25");
        let (data, used) = decode(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            data,
            b"OK smtp:[contoso-com.mail.protection.outlook.com]:25"
        );
        assert_eq!(encode("NOTFOUND "), b"9:NOTFOUND ,");
    }
}
