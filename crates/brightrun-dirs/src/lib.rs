//! brightrun-dirs: where BrightRun's programs keep their files on this machine, decided once for
//! the CLI, the desktop app, the worker and xtask.
//!
//! Follows the XDG base directories: a variable that is unset, empty or relative counts as
//! unset (as the specification says), then `~/.local/share` and `~/.cache`. A program run by
//! root keeps shared state under `/var/lib/brightrun`, because the local stack's PostgreSQL runs
//! as an unprivileged user, who cannot enter root's home.
//!
//! It must not create anything: callers create what they use.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment the directories are read from: the process's, or one given (tests).
#[derive(Debug, Clone)]
pub struct Dirs<E = fn(&str) -> Option<OsString>> {
    env: E,
    root: bool,
}

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

impl Dirs {
    /// This process's environment and user.
    pub fn from_process() -> Self {
        Self {
            env: process_env,
            root: nix::unistd::geteuid().is_root(),
        }
    }
}

impl<E: Fn(&str) -> Option<OsString>> Dirs<E> {
    /// `env` answers for environment variables; `root` says whether the user is root.
    pub fn with_env(env: E, root: bool) -> Self {
        Self { env, root }
    }

    /// A variable holding an absolute path; unset, empty or relative is `None`.
    fn absolute(&self, name: &str) -> Option<PathBuf> {
        (self.env)(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    fn home(&self) -> Option<PathBuf> {
        self.absolute("HOME")
    }

    /// `$XDG_DATA_HOME`, else `~/.local/share`.
    pub fn data_home(&self) -> Option<PathBuf> {
        self.absolute("XDG_DATA_HOME")
            .or_else(|| self.home().map(|h| h.join(".local/share")))
    }

    /// `$XDG_CACHE_HOME`, else `~/.cache`.
    pub fn cache_home(&self) -> Option<PathBuf> {
        self.absolute("XDG_CACHE_HOME")
            .or_else(|| self.home().map(|h| h.join(".cache")))
    }

    /// The CLI's and the app's local database, preferences and caches: `$BRIGHTRUN_DATA_DIR`,
    /// else `<data home>/brightrun`.
    pub fn app_data(&self) -> Option<PathBuf> {
        self.absolute("BRIGHTRUN_DATA_DIR")
            .or_else(|| self.data_home().map(|d| d.join("brightrun")))
    }

    /// The local stack's PostgreSQL cluster, blobs and `stack.json`: `$BRIGHTRUN_STACK_DATA`,
    /// else `/var/lib/brightrun/stack` for root, else `<data home>/brightrun/stack`.
    pub fn stack_data(&self) -> Option<PathBuf> {
        self.absolute("BRIGHTRUN_STACK_DATA")
            .or_else(|| self.shared("stack"))
    }

    /// A worker's adapters before upload and its base-model cache: `/var/lib/brightrun/worker`
    /// for root, else `<data home>/brightrun/worker`.
    pub fn worker_data(&self) -> Option<PathBuf> {
        self.shared("worker")
    }

    /// Downloaded base models (SmolLM2's GGUF): `<cache home>/brightrun/models`.
    pub fn model_cache(&self) -> Option<PathBuf> {
        self.cache_home().map(|c| c.join("brightrun/models"))
    }

    fn shared(&self, name: &str) -> Option<PathBuf> {
        if self.root {
            return Some(PathBuf::from("/var/lib/brightrun").join(name));
        }
        self.data_home().map(|d| d.join("brightrun").join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(
        vars: &'static [(&'static str, &'static str)],
        root: bool,
    ) -> Dirs<impl Fn(&str) -> Option<OsString>> {
        Dirs::with_env(
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            },
            root,
        )
    }

    #[test]
    fn xdg_variables_win_and_empty_or_relative_ones_do_not_count() {
        let set = dirs(&[("HOME", "/home/a"), ("XDG_DATA_HOME", "/data")], false);
        assert_eq!(
            set.app_data(),
            Some("/data/brightrun".into()),
            "XDG_DATA_HOME wins"
        );
        let empty = dirs(&[("HOME", "/home/a"), ("XDG_DATA_HOME", "")], false);
        assert_eq!(
            empty.app_data(),
            Some("/home/a/.local/share/brightrun".into()),
            "an empty XDG_DATA_HOME is unset"
        );
        let relative = dirs(&[("HOME", "/home/a"), ("XDG_CACHE_HOME", "cache")], false);
        assert_eq!(
            relative.model_cache(),
            Some("/home/a/.cache/brightrun/models".into()),
            "a relative XDG_CACHE_HOME is unset"
        );
        assert_eq!(dirs(&[], false).app_data(), None, "no HOME, no directory");
    }

    #[test]
    fn brightrun_variables_and_root_choose_shared_places() {
        let custom = dirs(
            &[
                ("HOME", "/home/a"),
                ("BRIGHTRUN_DATA_DIR", "/tmp/x"),
                ("BRIGHTRUN_STACK_DATA", "/srv/s"),
            ],
            false,
        );
        assert_eq!(
            custom.app_data(),
            Some("/tmp/x".into()),
            "BRIGHTRUN_DATA_DIR wins"
        );
        assert_eq!(
            custom.stack_data(),
            Some("/srv/s".into()),
            "BRIGHTRUN_STACK_DATA wins"
        );
        let user = dirs(&[("HOME", "/home/a")], false);
        assert_eq!(
            user.worker_data(),
            Some("/home/a/.local/share/brightrun/worker".into()),
            "a user's worker data is in their data home"
        );
        let root = dirs(&[("HOME", "/root")], true);
        assert_eq!(
            root.stack_data(),
            Some("/var/lib/brightrun/stack".into()),
            "root's stack lives where PostgreSQL's user can enter"
        );
        assert_eq!(
            root.app_data(),
            Some("/root/.local/share/brightrun".into()),
            "root's own app data stays in its home"
        );
    }
}
