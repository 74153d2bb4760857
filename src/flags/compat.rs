//! vmgateway flags with no meaning in tenantgate, accepted so that command lines start unchanged: the
//! licence flags (tenantgate is open source), Go runtime and storage tuning (`-memory.*`, `-fs.*`,
//! `-filestream.*`, `-internString*`, `-eula`). Their values are still checked as vmgateway would, and
//! `main` says once which were ignored. `-tlsAutocert*` is the exception: an ACME client cannot be
//! pretended, so setting it stops start-up rather than serving without the certificate asked for.

use super::values::{parse_bool, parse_duration, parse_percent, parse_size, parse_usize};
use super::{flag, FlagError, FlagSpec, Given, Kind};

const LICENCE_HELP: &str =
    "vmgateway licence flag, accepted for compatibility and ignored: tenantgate needs no licence";
const GO_HELP: &str =
    "Go runtime or storage tuning of VictoriaMetrics components; accepted for compatibility and ignored: tenantgate has no Go runtime and no storage";

pub(super) const FLAGS: &[FlagSpec] = &[
    flag("license", Kind::String, "", LICENCE_HELP),
    flag("licenseFile", Kind::String, "", LICENCE_HELP),
    flag("license.forceOffline", Kind::Bool, "false", LICENCE_HELP),
    flag("licenseFile.reloadInterval", Kind::Duration, "", LICENCE_HELP),
    flag("eula", Kind::Bool, "false", "Deprecated VictoriaMetrics Enterprise flag; accepted for compatibility and ignored"),
    flag("memory.allowedPercent", Kind::String, "60", GO_HELP),
    flag("memory.allowedBytes", Kind::Size, "0", GO_HELP),
    flag("fs.disableMmap", Kind::Bool, "false", GO_HELP),
    flag("fs.disableMincore", Kind::Bool, "false", GO_HELP),
    flag("fs.maxConcurrency", Kind::Int, "0", GO_HELP),
    flag("filestream.disableFadvise", Kind::Bool, "false", GO_HELP),
    flag("internStringMaxLen", Kind::Int, "500", GO_HELP),
    flag("internStringCacheExpireDuration", Kind::Duration, "6m0s", GO_HELP),
    flag("internStringDisableCache", Kind::Bool, "false", GO_HELP),
    flag("tlsAutocertHosts", Kind::Array, "", "VictoriaMetrics Enterprise's automatic certificates from Let's Encrypt. Not supported by tenantgate (it has no ACME client): setting it stops start-up; use -tlsCertFile and -tlsKeyFile with certificates from your ACME client (they are re-read when renewed)"),
    flag("tlsAutocertEmail", Kind::String, "", "See -tlsAutocertHosts: not supported, setting it stops start-up"),
    flag("tlsAutocertCacheDir", Kind::String, "", "See -tlsAutocertHosts: not supported, setting it stops start-up"),
];

/// vmgateway's licence flags, in the order they are reported.
const LICENCE_FLAGS: &[&str] = &[
    "license",
    "licenseFile",
    "license.forceOffline",
    "licenseFile.reloadInterval",
];

/// Flags accepted and ignored that are not licence flags.
const IGNORED_FLAGS: &[&str] = &[
    "eula",
    "memory.allowedPercent",
    "memory.allowedBytes",
    "fs.disableMmap",
    "fs.disableMincore",
    "fs.maxConcurrency",
    "filestream.disableFadvise",
    "internStringMaxLen",
    "internStringCacheExpireDuration",
    "internStringDisableCache",
];

/// What was accepted and ignored.
#[derive(Debug, Clone, Default)]
pub struct CompatConfig {
    /// Licence flags given (without the dash).
    pub licence_flags_seen: Vec<String>,
    /// Go runtime and storage flags given (without the dash).
    pub ignored_flags_seen: Vec<String>,
    /// Flags accepted with a meaning narrower than asked for, each with a sentence saying so.
    pub warnings: Vec<String>,
}

pub(super) fn build(given: &Given) -> Result<CompatConfig, FlagError> {
    for name in [
        "tlsAutocertHosts",
        "tlsAutocertEmail",
        "tlsAutocertCacheDir",
    ] {
        let set = given.get_list(name, |t| Ok(t.to_string()))?;
        if !set.is_empty() {
            return Err(FlagError(format!(
                "-{name} is not supported: tenantgate has no ACME (Let's Encrypt) client. Get certificates with your ACME client (certbot, cert-manager, ...) and pass -tls -tlsCertFile -tlsKeyFile; renewed files are picked up without a restart"
            )));
        }
    }
    let mut warnings = Vec::new();
    if given.is_given("httpAuth.password")
        && given.get("httpAuth.username", |t| Ok(t.is_empty()))?
    {
        warnings.push("-httpAuth.password is set without -httpAuth.username: Basic auth is off (as in VictoriaMetrics)".to_string());
    }
    let old_tls = given.get_list("tlsMinVersion", |t| Ok(t.to_ascii_uppercase()))?;
    if old_tls.iter().any(|v| v == "TLS10" || v == "TLS11") {
        warnings.push("-tlsMinVersion TLS10 and TLS11 mean TLS12 here: tenantgate's TLS library offers TLS 1.2 and 1.3 only".to_string());
    }
    Ok(CompatConfig {
        licence_flags_seen: seen(given, LICENCE_FLAGS)?,
        ignored_flags_seen: seen(given, IGNORED_FLAGS)?,
        warnings,
    })
}

/// The flags of `names` that were given, each value checked by its kind (as vmgateway would check it).
fn seen(given: &Given, names: &[&str]) -> Result<Vec<String>, FlagError> {
    let mut seen = Vec::new();
    for &name in names.iter().filter(|name| given.is_given(name)) {
        match super::known(name)?.kind {
            Kind::Bool => given.get(name, parse_bool).map(drop)?,
            Kind::Duration => given.get(name, parse_duration).map(drop)?,
            Kind::Size => given.get(name, parse_size).map(drop)?,
            Kind::Int => given.get(name, parse_usize).map(drop)?,
            _ if name == "memory.allowedPercent" => given.get(name, parse_percent).map(drop)?,
            _ => {}
        }
        seen.push(name.to_string());
    }
    Ok(seen)
}
