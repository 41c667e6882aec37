//! Secrets: tokens, keys and passwords as a type that never prints and cannot be serialized.

/// A token, key or password. `Debug` prints `<redacted>`; there is deliberately no `Serialize`
/// and no `Display`, so a secret cannot reach a log, a JSON answer or a notification by accident.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "specta", derive(specta::Type), specta(transparent))]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reading a secret from a server answer is fine; writing one out is what must never happen.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

// Compile-time proof that `Secret` implements neither `Serialize` nor `Display`: if it did, the
// trait method below would be ambiguous between the two impls and this would not compile.
mod no_leak_impls {
    trait AmbiguousIfImpl<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
    #[allow(dead_code)]
    struct IfSerialize;
    impl<T: ?Sized + serde::Serialize> AmbiguousIfImpl<IfSerialize> for T {}
    #[allow(dead_code)]
    struct IfDisplay;
    impl<T: ?Sized + std::fmt::Display> AmbiguousIfImpl<IfDisplay> for T {}
    const _: fn() = || {
        let _ = <super::Secret as AmbiguousIfImpl<_>>::some_item;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = Secret::new("hunter2-refresh-token");
        let printed = format!("{secret:?} {:?} {:#?}", Some(&secret), vec![secret.clone()]);
        assert!(
            !printed.contains("hunter2"),
            "Debug must never print the value: {printed}"
        );
        assert!(
            printed.contains("<redacted>"),
            "Debug says it is redacted: {printed}"
        );
        assert_eq!(
            secret.expose(),
            "hunter2-refresh-token",
            "expose gives the value back"
        );
    }
}
