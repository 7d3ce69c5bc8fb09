//! Protocol vocabulary from one table each: an enumeration whose every
//! value is listed once, beside the name it has on the wire.
//!
//! Grant types, client authentication methods and client attributes are
//! each named in requests, in stored metadata, in error messages, in
//! discovery and in the documentation. [`vocabulary!`] turns one table
//! into the enum, its `ALL` list, `as_str` and `parse`, its `Display`, a
//! `list` for messages, and serde that reads and writes the same names,
//! so none of those can list a value the others lack. Tests (here and
//! beside each table) hold the tables to the documentation.

/// Defines an enum from a table of `Variant = "wire name",` rows, with
/// the doc comments the rows carry. See the module doc.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$row_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$row_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in the table's order: the order discovery and
            /// messages list them in.
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            /// The name on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value named `name`, exactly as [`Self::as_str`] spells it.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|value| value.as_str() == name)
            }

            /// Every name, comma-separated, for messages.
            pub fn list() -> String {
                Self::ALL.map(Self::as_str).join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($text),+];
                let name = String::deserialize(deserializer)?;
                Self::parse(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, NAMES))
            }
        }
    };
}

pub(crate) use vocabulary;

/// Checks what every table must hold: distinct names, each read back by
/// `parse` and by serde as the value it names, and nothing else parsed.
#[cfg(test)]
pub(crate) fn assert_table<T>(all: &[T], as_str: fn(T) -> &'static str, parse: fn(&str) -> Option<T>)
where
    T: Copy + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let names: std::collections::HashSet<_> = all.iter().map(|v| as_str(*v)).collect();
    assert_eq!(names.len(), all.len(), "a name is listed twice");
    for value in all {
        let name = as_str(*value);
        assert_eq!(parse(name), Some(*value), "{name}");
        assert_eq!(serde_json::to_value(value).ok(), Some(serde_json::Value::from(name)), "{name}");
        assert_eq!(serde_json::from_value::<T>(serde_json::Value::from(name)).ok(), Some(*value), "{name}");
        assert_eq!(parse(&name.to_uppercase()), None, "{name}: names are case-sensitive");
    }
    assert_eq!(parse(""), None);
    assert!(serde_json::from_value::<T>(serde_json::Value::from("unknown")).is_err());
}
