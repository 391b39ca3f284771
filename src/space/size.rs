//! Sizes as users write them (`40M`, `1.5G`, `750GiB`) and as msync shows
//! them. Units are binary, as in rclone (`10M` is 10 MiB).

use std::fmt;

use indicatif::HumanBytes;

/// Parses a size: a number with an optional unit (K, M, G, T, P, with or
/// without `i` and `B`; all binary). Negative or garbled sizes are errors.
pub fn parse(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("{text:?} is negative; a size is 0 or more"));
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(trimmed)
        .map_err(|err| {
            format!("{text:?} is not a size ({err}); write e.g. 500M, 15G or 2T (binary units)")
        })
}

/// A size for people: `40.00 MiB`.
#[derive(Debug, Clone, Copy)]
pub struct Shown(pub u64);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", HumanBytes(self.0))
    }
}

/// `NAME=SIZE` as `install --quota` takes it; `NAME=none` lifts a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaArg {
    pub remote: String,
    pub quota: Option<u64>,
}

impl std::str::FromStr for QuotaArg {
    type Err = String;

    fn from_str(text: &str) -> Result<QuotaArg, String> {
        let (remote, size) = text.split_once('=').ok_or_else(|| {
            format!("{text:?} is not NAME=SIZE (e.g. gdrive=15G, or gdrive=none)")
        })?;
        let remote = remote.trim().trim_end_matches(':');
        if remote.is_empty() {
            return Err(format!("{text:?} names no remote; write NAME=SIZE"));
        }
        let quota = match size.trim() {
            "none" => None,
            size => Some(parse(size)?),
        };
        Ok(QuotaArg {
            remote: remote.to_owned(),
            quota,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_like_rclone() {
        assert_eq!(parse("40M"), Ok(40 << 20));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("750GiB"), Ok(750 << 30));
        assert_eq!(parse("2T"), Ok(2 << 40));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse(" 0 "), Ok(0));
    }

    #[test]
    fn nonsense_is_refused_with_an_example() {
        for bad in ["", "-5G", "ten", "5X", "G", "1..5G"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("size"), "{bad}: {err}");
        }
    }

    #[test]
    fn quota_arguments() {
        assert_eq!(
            "gdrive=15G".parse(),
            Ok(QuotaArg {
                remote: "gdrive".into(),
                quota: Some(15 << 30)
            })
        );
        assert_eq!(
            "s3:=none".parse(),
            Ok(QuotaArg {
                remote: "s3".into(),
                quota: None
            })
        );
        for bad in ["gdrive", "=5G", "gdrive=-1", "gdrive=lots"] {
            assert!(bad.parse::<QuotaArg>().is_err(), "{bad}");
        }
    }
}
