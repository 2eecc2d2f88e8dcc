//! What a value read from the parameter means, decided without I/O.

use std::path::Path;

use super::Published;
use crate::config::{Config, ConfigError};

/// The outcome of one read.
#[derive(Debug)]
pub enum Decision {
    /// The value in force: nothing to do (a refusal is over if one was shown).
    Unchanged,
    /// A new value with the same developers (reordered tables, a comment):
    /// record it, restart nothing.
    SameDevelopers,
    /// A new, valid set: apply this config.
    Apply(Box<Config>),
    /// Invalid: keep the set in force. `first`: not refused before (log it).
    Refuse { reason: String, first: bool },
}

/// `file_text` is the config file in force (read from `file_path`); `in_force`
/// the value whose developers run now; `refused` the last value refused, if any.
pub fn decide(
    file_text: &str,
    file_path: &Path,
    current: &Config,
    in_force: Option<&Published>,
    refused: Option<&str>,
    fresh: &Published,
) -> Decision {
    if in_force.is_some_and(|p| p.value == fresh.value) {
        return Decision::Unchanged;
    }
    match resolve(file_text, file_path, fresh) {
        Ok(c) if c.developers == current.developers && in_force.is_some() => {
            Decision::SameDevelopers
        }
        Ok(c) => Decision::Apply(Box::new(c)),
        Err(e) => Decision::Refuse {
            reason: e.to_string(),
            first: refused != Some(fresh.value.as_str()),
        },
    }
}

/// The config file with the developers of `set`.
pub fn resolve(file_text: &str, file_path: &Path, set: &Published) -> Result<Config, ConfigError> {
    Config::from_toml_with_developers(file_text, file_path, &set.value, &set.parameter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAM: &str = "/team/csagent/host-1/developers";

    fn file() -> String {
        format!("[developers]\nparameter = \"{PARAM}\"\n[volume]\ndevice = \"/dev/loop7\"\n")
    }

    fn set(version: i64, value: &str) -> Published {
        Published {
            parameter: PARAM.into(),
            value: value.into(),
            version,
            modified_ms: None,
        }
    }

    fn config(with: Option<&Published>) -> Config {
        match with {
            Some(p) => resolve(&file(), Path::new("c.toml"), p).expect("valid"),
            None => Config::from_toml(&file(), Path::new("c.toml")).expect("valid"),
        }
    }

    const TWO: &str =
        "[[developer]]\nname = \"a\"\nport = 9001\n[[developer]]\nname = \"b\"\nport = 9002\n";

    #[test]
    fn a_new_set_applies_an_equal_one_does_not() {
        let v1 = set(1, TWO);
        let current = config(Some(&v1));
        let p = Path::new("c.toml");
        assert!(matches!(
            decide(&file(), p, &current, Some(&v1), None, &set(1, TWO)),
            Decision::Unchanged
        ));
        let three = format!("{TWO}[[developer]]\nname = \"c\"\nport = 9003\n");
        let Decision::Apply(c) = decide(&file(), p, &current, Some(&v1), None, &set(2, &three))
        else {
            panic!("a third developer: apply");
        };
        assert_eq!(c.developers.len(), 3);
        assert_eq!(c.developers[..2], current.developers[..]);
        let commented = format!("# two\n{TWO}");
        assert!(matches!(
            decide(&file(), p, &current, Some(&v1), None, &set(3, &commented)),
            Decision::SameDevelopers
        ));
        // Nothing in force yet (first read with no saved set): apply.
        let empty = config(None);
        assert!(matches!(
            decide(&file(), p, &empty, None, None, &v1),
            Decision::Apply(_)
        ));
    }

    #[test]
    fn an_invalid_set_is_refused_once_and_names_the_parameter_and_key() {
        let v1 = set(1, TWO);
        let current = config(Some(&v1));
        let p = Path::new("c.toml");
        let clash =
            "[[developer]]\nname = \"a\"\nport = 9001\n[[developer]]\nname = \"b\"\nport = 9001\n";
        let Decision::Refuse { reason, first } =
            decide(&file(), p, &current, Some(&v1), None, &set(2, clash))
        else {
            panic!("a port clash: refuse");
        };
        assert!(first);
        assert_eq!(
            reason,
            format!("{PARAM}: developer[2].port: 9001 is already used by a")
        );
        let Decision::Refuse { first, .. } =
            decide(&file(), p, &current, Some(&v1), Some(clash), &set(2, clash))
        else {
            panic!("still refused");
        };
        assert!(!first, "the same value again: not logged again");
        assert!(matches!(
            decide(
                &file(),
                p,
                &current,
                Some(&v1),
                Some(clash),
                &set(1, "not toml [")
            ),
            Decision::Refuse { first: true, .. }
        ));
    }
}
