//! Parsers for single config values. Each returns the typed value or a
//! sentence that says what is wrong with it, for [`super::validate`] to put a
//! path in front of.

use std::net::IpAddr;
use std::time::Duration;

use super::model::{
    BindMount, DeviceMapping, ExtraHost, HostTarget, NetworkMode, PortBinding, Propagation,
    Protocol, Swap, VolumeMount,
};

/// Problem text for one value.
pub type Problem = String;

// ---------------------------------------------------------------------------
// Bounds. Every duration and count a document sets ends up in arithmetic (the
// readiness gate waits start period + interval x retries + margin) or in a
// signed 64-bit engine field, so each has an upper bound a person can mean and
// the engine can store. Validation names the bound in its message; the
// executor may rely on them instead of checking again.
// ---------------------------------------------------------------------------

/// The engine's smallest memory limit and reservation (moby's `linuxMinMemory`).
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Sizes (`logMaxSize`, `logMaxBufferSize`, `memoryReservation`,
/// `memorySwap`): the engine takes them as signed 64-bit byte counts.
pub const MAX_SIZE: u64 = i64::MAX as u64;
/// `memory`: when `memorySwap` is unset the engine (and berth's plan) takes
/// twice the memory as the swap limit, and that doubling must still fit the
/// engine's signed 64-bit byte count.
pub const MAX_MEMORY: u64 = MAX_SIZE / 2;
/// `cpus`, in billionths of a CPU: the engine takes `NanoCpus` as a signed
/// 64-bit number (and refuses more CPUs than the host has).
pub const MAX_NANO_CPUS: u64 = i64::MAX as u64;
/// The shortest `healthInterval`, `healthTimeout` and non-zero
/// `healthStartPeriod`: the engine refuses anything shorter (moby's
/// `MinimumDuration`).
pub const MIN_HEALTH_DURATION: Duration = Duration::from_millis(1);
/// The longest `healthInterval`, `healthTimeout` and `healthStartPeriod`: a
/// check run less often than daily detects nothing a person waits for, and
/// with [`MAX_HEALTH_RETRIES`] it keeps the gate's worst case
/// (start period + interval x retries) at 101 days, far from any overflow.
pub const MAX_HEALTH_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The most `healthRetries`: the readiness gate multiplies the interval by
/// it, and a hundred consecutive failures is already far past "unhealthy".
pub const MAX_HEALTH_RETRIES: u32 = 100;
/// The longest `stopTimeout`: the engine stores it as whole seconds in an
/// int and every stop, recreate and rollback may wait this long per
/// container; a process that needs more than an hour to stop is stuck.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// The longest `restartTimeout`: the engine has no such setting, so it is
/// only kept and reported, but reported values must stay printable and
/// comparable like every other duration.
pub const MAX_RESTART_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `hookTimeout`: a hook holds the whole activity (and the
/// device's old version down) while it runs, and a migration that needs
/// longer than a day is not one an unattended upgrade should start.
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The shortest `hookTimeout`: a one-shot container needs a moment to start.
pub const MIN_HOOK_TIMEOUT: Duration = Duration::from_secs(1);
/// The most `restartMaxRetries`: the engine takes it as a signed 64-bit
/// number; a million restarts is "without limit" in all but name (0 says
/// that outright).
pub const MAX_RESTART_RETRIES: u32 = 1_000_000;
/// The most `logMaxFiles`: the log drivers keep every one of them on disk;
/// a thousand rotated files is more history than any device keeps.
pub const MAX_LOG_FILES: u32 = 1000;
/// The most host port bindings a document may expand to, counting each
/// port of a range as one (`1-65535:1-65535` is 65,535): a 20-byte value
/// must not cost memory and time per port for every repetition of it. As
/// many as one protocol has ports; real devices publish tens.
pub const MAX_PORT_BINDINGS: usize = 65_536;

/// A duration as a person writes it, in its largest whole unit (`24h`, `1h`,
/// `7d`, `1ms`, else seconds with a fraction: `86400.000000001s`), for
/// messages that name a bound or a value; humantime reads it back.
pub fn duration_text(d: Duration) -> String {
    let (s, n) = (d.as_secs(), d.subsec_nanos());
    match (s, n) {
        (0, 0) => "0s".into(),
        (0, n) if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        (_, 0) if s % 86_400 == 0 && s > 86_400 => format!("{}d", s / 86_400),
        (_, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (_, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (_, 0) => format!("{s}s"),
        (0, n) if n % 1000 == 0 => format!("{}us", n / 1000),
        (0, n) => format!("{n}ns"),
        (s, n) => format!("{s}.{}s", format!("{n:09}").trim_end_matches('0')),
    }
}

/// Container (and volume, network) names as the engine accepts them.
pub fn check_name(name: &str) -> Result<(), Problem> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() {
        Err("is empty".into())
    } else if !first_ok || !rest_ok {
        Err(
            "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
                .into(),
        )
    } else {
        Ok(())
    }
}

/// Booleans as Kanto's documents write them: Go's `strconv.ParseBool` words,
/// in any letter case. Kanto turns anything else into `false`; berth refuses it.
pub fn parse_bool(v: &str) -> Result<bool, Problem> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Ok(true),
        "false" | "f" | "0" => Ok(false),
        _ => Err("is not a boolean; expected true or false (also 1, 0, t, f)".into()),
    }
}

/// A whole number from `min` to `max`; the message names the bound it misses.
pub fn parse_count(v: &str, min: u32, max: u32) -> Result<u32, Problem> {
    let t = v.trim();
    if let Some(rest) = t.strip_prefix('-') {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must not be negative".into());
        }
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("is not a whole number (expected {min} to {max})"));
    }
    let too_large = || format!("must be at most {max}");
    // Any number of digits parses as "too large" rather than overflowing.
    let n: u32 = t.parse().map_err(|_| too_large())?;
    if n > max {
        return Err(too_large());
    }
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}

/// Kanto's size syntax: a decimal number and a mandatory binary unit (k, M, G,
/// any case), with an optional space between: `512M`, `1.5G`, `100 k`.
pub fn parse_size(v: &str) -> Result<u64, Problem> {
    let t = v.trim();
    let expected = "expected a number and a unit k, M or G, such as 512M or 1.5G";
    if t.starts_with('-') {
        return Err(format!("must not be negative; {expected}"));
    }
    let Some(unit) = t.chars().last() else {
        return Err(format!("is empty; {expected}"));
    };
    let multiplier: u64 = match unit.to_ascii_lowercase() {
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        c if c.is_ascii_digit() => return Err(format!("has no unit; {expected}")),
        _ => return Err(format!("has an unknown unit; {expected}")),
    };
    let number = t[..t.len() - 1]
        .strip_suffix(' ')
        .unwrap_or(&t[..t.len() - 1]);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(frac)
        || (number.contains('.') && frac.is_empty())
    {
        return Err(format!("is not a size; {expected}"));
    }
    let too_large = || format!("is too large (at most {} bytes)", MAX_SIZE);
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    // The fraction in exact integer arithmetic, truncated like Kanto's int64().
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let scale = 10u128.pow(frac.len() as u32);
        let f: u128 = frac.parse().map_err(|_| too_large())?;
        let extra = (f * u128::from(multiplier) / scale) as u64;
        bytes = bytes.checked_add(extra).ok_or_else(too_large)?;
    }
    if bytes > MAX_SIZE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// `memorySwap`: a size, or `-1` for unlimited.
pub fn parse_swap(v: &str) -> Result<Swap, Problem> {
    if v.trim() == "-1" {
        return Ok(Swap::Unlimited);
    }
    parse_size(v)
        .map(Swap::Limit)
        .map_err(|e| format!("{e}, or -1 for unlimited swap"))
}

/// A duration: whole seconds (`30`, as Kanto's `restartTimeout`) or humantime
/// text (`30s`, `1m 30s`, `500ms`, as Kanto's inventory prints it).
pub fn parse_duration(v: &str) -> Result<Duration, Problem> {
    read_duration(v)?.ok_or_else(|| "is too large".into())
}

/// A duration no longer than `max`. A number too large even for a
/// [`Duration`] is refused with the same words, so every message names the
/// bound.
pub fn parse_duration_at_most(v: &str, max: Duration) -> Result<Duration, Problem> {
    match read_duration(v)? {
        Some(d) if d <= max => Ok(d),
        _ => Err(format!("must be at most {}", duration_text(max))),
    }
}

/// [`parse_duration`]'s syntax; `None` for a number beyond [`Duration`].
fn read_duration(v: &str) -> Result<Option<Duration>, Problem> {
    let t = v.trim();
    if t.starts_with('-') {
        return Err("must not be negative".into());
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(t.parse::<u64>().ok().map(Duration::from_secs));
    }
    match humantime::parse_duration(t) {
        Ok(d) => Ok(Some(d)),
        // Without a fraction, an overflow can only mean "too large" (with
        // one it may mean "finer than 1ns", which humantime's words cover).
        Err(humantime::DurationError::NumberOverflow) if !t.contains('.') => Ok(None),
        Err(e) => Err(format!(
            "is not a duration ({e}); expected whole seconds or a duration such as 30s or 1m30s"
        )),
    }
}

/// `stopTimeout`: a duration the engine stores in whole seconds, at most
/// [`MAX_STOP_TIMEOUT`].
pub fn parse_stop_timeout(v: &str) -> Result<Duration, Problem> {
    let d = parse_duration_at_most(v, MAX_STOP_TIMEOUT)?;
    if d.subsec_nanos() != 0 {
        return Err(
            "must be a whole number of seconds (the engine counts stop timeouts in seconds)".into(),
        );
    }
    Ok(d)
}

/// `healthInterval` and `healthTimeout`: from [`MIN_HEALTH_DURATION`] (the
/// engine refuses less, and 0 would mean "the image's", which leaving the
/// key out already says) to [`MAX_HEALTH_DURATION`].
pub fn parse_health_duration(v: &str) -> Result<Duration, Problem> {
    let d = parse_duration_at_most(v, MAX_HEALTH_DURATION)?;
    if d < MIN_HEALTH_DURATION {
        return Err(format!(
            "must be at least {}",
            duration_text(MIN_HEALTH_DURATION)
        ));
    }
    Ok(d)
}

/// `healthStartPeriod`: 0 (no grace time), or from [`MIN_HEALTH_DURATION`]
/// (the engine refuses a non-zero start period below it) to
/// [`MAX_HEALTH_DURATION`].
pub fn parse_health_start_period(v: &str) -> Result<Duration, Problem> {
    let d = parse_duration_at_most(v, MAX_HEALTH_DURATION)?;
    if !d.is_zero() && d < MIN_HEALTH_DURATION {
        return Err(format!(
            "must be 0 or at least {}",
            duration_text(MIN_HEALTH_DURATION)
        ));
    }
    Ok(d)
}

/// `restartTimeout`: a duration up to [`MAX_RESTART_TIMEOUT`].
pub fn parse_restart_timeout(v: &str) -> Result<Duration, Problem> {
    parse_duration_at_most(v, MAX_RESTART_TIMEOUT)
}

/// `hookTimeout`: from [`MIN_HOOK_TIMEOUT`] to [`MAX_HOOK_TIMEOUT`].
pub fn parse_hook_timeout(v: &str) -> Result<Duration, Problem> {
    let d = parse_duration_at_most(v, MAX_HOOK_TIMEOUT)?;
    if d < MIN_HOOK_TIMEOUT {
        return Err(format!(
            "is too short (at least {}: a one-shot container needs a moment to start)",
            duration_text(MIN_HOOK_TIMEOUT)
        ));
    }
    Ok(d)
}

/// A hook's shell command (`preStart`, `postStart`, `onRollback`): any
/// text but blank, passed to `/bin/sh -c` as one argument.
pub fn parse_command(v: &str) -> Result<String, Problem> {
    if v.trim().is_empty() {
        return Err("is empty; give a shell command, or leave the key out".into());
    }
    if v.contains('\0') {
        return Err("contains a NUL byte, which no command line can carry".into());
    }
    Ok(v.to_string())
}

/// `memory`: a size up to [`MAX_MEMORY`] (0 means none; the caller checks
/// [`MIN_MEMORY`], in mebibytes).
pub fn parse_memory(v: &str) -> Result<u64, Problem> {
    let bytes = parse_size(v)?;
    if bytes > MAX_MEMORY {
        return Err(format!(
            "is too large (at most {MAX_MEMORY} bytes, so that the engine's default swap of twice the memory fits in a signed 64-bit number)"
        ));
    }
    Ok(bytes)
}

fn cpus_too_large() -> Problem {
    format!(
        "is too large (at most {}.{:09} CPUs)",
        MAX_NANO_CPUS / 1_000_000_000,
        MAX_NANO_CPUS % 1_000_000_000
    )
}

/// `cpus`: a positive decimal number of CPUs, in billionths.
pub fn parse_cpus(v: &str) -> Result<u64, Problem> {
    let t = v.trim();
    let expected = "expected a positive number of CPUs such as 0.5 or 2";
    if t.starts_with('-') {
        return Err(format!("must not be negative; {expected}"));
    }
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty())
        || !digits(whole)
        || !digits(frac)
        || (t.contains('.') && frac.is_empty())
    {
        return Err(format!("is not a number; {expected}"));
    }
    if frac.len() > 9 {
        return Err("has more than 9 decimal places".into());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| cpus_too_large())?
    };
    let frac_nanos: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().unwrap_or(0) * 10u64.pow(9 - frac.len() as u32)
    };
    let nanos = whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .filter(|n| *n <= MAX_NANO_CPUS)
        .ok_or_else(cpus_too_large)?;
    if nanos == 0 {
        return Err(format!("must be more than 0; {expected}"));
    }
    Ok(nanos)
}

/// `env`: `NAME=value`, `NAME=` or `NAME` (which removes the image's NAME),
/// with Kanto's name rule.
///
/// The problem is a whole message that never quotes the value: any value
/// may be a secret, and the validator has no redaction patterns. The name
/// is quoted when the entry has an `=` (what precedes it is a name); an
/// entry without one is not quoted at all, since a value pasted without
/// its name would otherwise be shown.
pub fn parse_env(v: &str) -> Result<(String, Option<String>), Problem> {
    let (name, value) = match v.split_once('=') {
        Some((n, val)) => (n, Some(val.to_string())),
        None => (v, None),
    };
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        const EXPECTED: &str = "expected NAME=value where NAME is letters, digits and '_' and does not start with a digit";
        return Err(match value {
            Some(_) if name.is_empty() => {
                format!("an entry has an empty variable name; {EXPECTED} (the value is not shown)")
            }
            Some(_) => format!(
                "variable \"{}\" has an invalid name; {EXPECTED} (the value is not shown)",
                super::limits::excerpt(name)
            ),
            None if name.is_empty() => format!("an entry is empty (\"\"); {EXPECTED}"),
            None => format!(
                "an entry without '=' is not a valid variable name; {EXPECTED} (the entry is not shown: it may be a value)"
            ),
        });
    }
    Ok((name.to_string(), value))
}

/// `label`: `key=value`.
pub fn parse_label(v: &str) -> Result<(String, String), Problem> {
    match v.split_once('=') {
        Some((k, _)) if k.trim().is_empty() => {
            Err("has an empty label key; expected key=value".into())
        }
        Some((k, _)) if k.contains(char::is_whitespace) => {
            Err(format!("has white space in the label key \"{k}\""))
        }
        Some((k, _)) if k.starts_with("berth.") => Err(format!(
            "uses the reserved prefix \"berth.\" in \"{k}\"; berth keeps its own labels there"
        )),
        Some((k, val)) => Ok((k.to_string(), val.to_string())),
        None => Err("has no '='; expected key=value".into()),
    }
}

fn parse_port_number(s: &str, what: &str) -> Result<u16, Problem> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} \"{s}\" is not a port number"));
    }
    s.parse::<u16>()
        .map_err(|_| format!("{what} \"{s}\" is out of range (0-65535)"))
}

fn parse_port_range(s: &str, what: &str) -> Result<(u16, u16), Problem> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse_port_number(a, what)?, parse_port_number(b, what)?),
        None => {
            let p = parse_port_number(s, what)?;
            (p, p)
        }
    };
    if b < a {
        return Err(format!("{what} range \"{s}\" ends before it starts"));
    }
    Ok((a, b))
}

/// A `port` value whose host IP is `localhost`, rewritten to 127.0.0.1
/// (`localhost:8080:80` -> `127.0.0.1:8080:80`); `None` for any other.
/// Kanto's inventories report `localhost`, so documents copied from them
/// carry it.
pub fn localhost_as_loopback(v: &str) -> Option<String> {
    let rest = v.trim().strip_prefix("localhost:")?;
    Some(format!("127.0.0.1:{rest}"))
}

/// `port`: `[hostIP:]hostPort[-hostPortEnd]:containerPort[-end][/proto]`.
///
/// Container ranges expand into one binding per port; a host range with a
/// single container port stays one binding the engine picks a port from.
pub fn parse_port(v: &str) -> Result<Vec<PortBinding>, Problem> {
    let t = v.trim();
    let (spec, protocol) = match t.rsplit_once('/') {
        Some((s, p)) => (
            s,
            match p.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => {
                    return Err(format!(
                        "has an unknown protocol \"{p}\"; expected tcp, udp or sctp"
                    ))
                }
            },
        ),
        None => (t, Protocol::Tcp),
    };
    let (host_ip, ports) = if let Some(v6) = spec.strip_prefix('[') {
        let (addr, rest) = v6
            .split_once("]:")
            .ok_or("has an unclosed '[' around the host IP")?;
        let ip = addr
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("host IP \"{addr}\" is not an IPv6 address"))?;
        (IpAddr::V6(ip), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            2 => (IpAddr::from([0, 0, 0, 0]), spec),
            3 => {
                let ip = parts[0].parse::<IpAddr>().map_err(|_| {
                    let hint = if parts[0] == "localhost" {
                        "; use 127.0.0.1"
                    } else {
                        ""
                    };
                    format!("host IP \"{}\" is not an IP address{hint}", parts[0])
                })?;
                (ip, &spec[parts[0].len() + 1..])
            }
            1 => {
                return Err(
                    "has no host port; expected hostPort:containerPort (Kanto needs both)".into(),
                )
            }
            _ => {
                return Err(
                    "has too many ':'; write an IPv6 host IP in brackets, like [::1]:8080:80"
                        .into(),
                )
            }
        }
    };
    let (host, container) = ports
        .split_once(':')
        .ok_or("has no container port; expected hostPort:containerPort")?;
    let (h0, h1) = parse_port_range(host, "host port")?;
    let (c0, c1) = parse_port_range(container, "container port")?;
    if c0 == 0 {
        return Err("container port must be 1-65535".into());
    }
    if h0 == 0 && h1 != 0 {
        return Err("host port range cannot start at 0".into());
    }
    let binding = |cp: u16, hp: u16, hp_end: u16| PortBinding {
        container_port: cp,
        protocol,
        host_ip,
        host_port: hp,
        host_port_end: hp_end,
    };
    if c0 == c1 {
        return Ok(vec![binding(c0, h0, h1)]);
    }
    if h0 == 0 {
        return Ok((c0..=c1).map(|cp| binding(cp, 0, 0)).collect());
    }
    if h1 - h0 != c1 - c0 {
        return Err(format!(
            "maps host ports {h0}-{h1} ({} ports) to container ports {c0}-{c1} ({} ports); the ranges must be the same length",
            u32::from(h1 - h0) + 1,
            u32::from(c1 - c0) + 1
        ));
    }
    Ok((c0..=c1)
        .zip(h0..=h1)
        .map(|(cp, hp)| binding(cp, hp, hp))
        .collect())
}

fn check_absolute(path: &str, what: &str) -> Result<(), Problem> {
    if path.is_empty() {
        Err(format!("{what} is empty"))
    } else if !path.starts_with('/') {
        Err(format!("{what} \"{path}\" is not an absolute path"))
    } else {
        Ok(())
    }
}

/// `mount`: `source:destination[:options]`; options are `ro`/`rw` and one
/// propagation mode, comma-separated.
pub fn parse_mount(v: &str) -> Result<BindMount, Problem> {
    let parts: Vec<&str> = v.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err("expected /host/path:/container/path[:options]".into());
    }
    check_absolute(parts[0], "source")?;
    check_absolute(parts[1], "destination")?;
    let mut mount = BindMount {
        source: clean_path(parts[0]),
        destination: clean_path(parts[1]),
        read_only: false,
        propagation: Propagation::default(),
    };
    if let Some(options) = parts.get(2) {
        let (mut access, mut propagation) = (None, None);
        for option in options.split(',') {
            let option = option.trim();
            if let Some((_, p)) = Propagation::ALL.iter().find(|(w, _)| *w == option) {
                if propagation.replace(*p).is_some() {
                    return Err("names more than one propagation mode".into());
                }
            } else if matches!(option, "ro" | "rw") {
                if access.replace(option == "ro").is_some() {
                    return Err("says ro or rw more than once".into());
                }
            } else {
                return Err(format!(
                    "has an unknown option \"{option}\"; expected ro, rw, rprivate, private, rshared, shared, rslave or slave"
                ));
            }
        }
        mount.read_only = access.unwrap_or(false);
        mount.propagation = propagation.unwrap_or_default();
    }
    Ok(mount)
}

/// `volume`: `name:/path[:ro|rw]`.
pub fn parse_volume(v: &str) -> Result<VolumeMount, Problem> {
    let parts: Vec<&str> = v.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err("expected name:/container/path[:ro]".into());
    }
    if parts[0].starts_with('/') {
        return Err(format!(
            "names a host path \"{}\"; use the mount key for bind mounts",
            parts[0]
        ));
    }
    check_name(parts[0]).map_err(|e| format!("volume name \"{}\" {e}", parts[0]))?;
    check_absolute(parts[1], "destination")?;
    let read_only = match parts.get(2).copied() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => return Err(format!("has an unknown option \"{o}\"; expected ro or rw")),
    };
    Ok(VolumeMount {
        name: parts[0].to_string(),
        destination: clean_path(parts[1]),
        read_only,
    })
}

/// `device`: `hostPath:containerPath[:permissions]`.
pub fn parse_device(v: &str) -> Result<DeviceMapping, Problem> {
    let parts: Vec<&str> = v.trim().split(':').collect();
    match parts.len() {
        1 => return Err("has only a host path; expected /dev/host:/dev/container[:rwm] (Kanto needs both paths)".into()),
        2 | 3 => {}
        _ => return Err("expected /dev/host:/dev/container[:rwm]".into()),
    }
    check_absolute(parts[0], "host path")?;
    check_absolute(parts[1], "container path")?;
    let permissions = match parts.get(2) {
        None => "rwm".to_string(),
        Some(p) => {
            let valid = !p.is_empty()
                && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
                && p.len() == p.chars().collect::<std::collections::BTreeSet<_>>().len();
            if !valid {
                return Err(format!(
                    "has invalid permissions \"{p}\"; expected one to three of r, w, m, each once"
                ));
            }
            "rwm".chars().filter(|c| p.contains(*c)).collect()
        }
    };
    Ok(DeviceMapping {
        host_path: clean_path(parts[0]),
        container_path: clean_path(parts[1]),
        permissions,
    })
}

/// `host`: `name:IP`, `name:host_ip`, `name:host_ip_<iface>`,
/// `name:container_<hostname>` (and Docker's `name:host-gateway`).
pub fn parse_host(v: &str) -> Result<ExtraHost, Problem> {
    let (name, target) = v.split_once(':').ok_or(
        "expected name:IP (or name:host_ip, name:host_ip_<interface>, name:container_<hostname>)",
    )?;
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err(format!(
            "host name \"{name}\" may only contain letters, digits, '-', '.' and '_'"
        ));
    }
    let target = if target == "host_ip" || target == "host-gateway" {
        HostTarget::HostGateway
    } else if let Some(iface) = target.strip_prefix("host_ip_") {
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            return Err(format!(
                "interface \"{iface}\" is not a network interface name"
            ));
        }
        HostTarget::HostInterface(iface.to_string())
    } else if let Some(c) = target.strip_prefix("container_") {
        check_name(c).map_err(|e| format!("container host name \"{c}\" {e}"))?;
        HostTarget::Container(c.to_string())
    } else {
        let ip = target
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| {
                format!("\"{target}\" is not an IP address, host_ip, host_ip_<interface> or container_<hostname>")
            })?;
        HostTarget::Ip(ip)
    };
    Ok(ExtraHost {
        name: name.to_string(),
        target,
    })
}

/// `network`: `bridge`, `host`, `none`, `container:<name>` or a user network.
pub fn parse_network(v: &str) -> Result<NetworkMode, Problem> {
    Ok(match v {
        "bridge" | "default" => NetworkMode::Bridge,
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        _ => {
            if let Some(c) = v.strip_prefix("container:") {
                check_name(c).map_err(|e| format!("container name \"{c}\" {e}"))?;
                NetworkMode::Container(c.to_string())
            } else {
                check_name(v).map_err(|e| {
                    format!("network name {e}; expected bridge, host, none, container:<name> or a user network name")
                })?;
                NetworkMode::User(v.to_string())
            }
        }
    })
}

/// Linux signal names, for `stopSignal`.
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// `stopSignal`: a name with or without `SIG`, `RTMIN+n`, or a number 1-64.
pub fn parse_signal(v: &str) -> Result<String, Problem> {
    let t = v.trim();
    if let Ok(n) = t.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(n.to_string())
        } else {
            Err("is not a signal number (1-64)".into())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt_ok = |prefix: &str| {
        name.strip_prefix(prefix)
            .map(|n| n.is_empty() || n.parse::<u32>().is_ok_and(|k| k <= 30))
            .unwrap_or(false)
    };
    if SIGNALS.contains(&name)
        || rt_ok("RTMIN+")
        || rt_ok("RTMAX-")
        || name == "RTMIN"
        || name == "RTMAX"
    {
        Ok(format!("SIG{name}"))
    } else {
        Err("is not a signal; expected a name such as SIGTERM or a number".into())
    }
}

/// `user`: `user`, `uid`, `user:group` or `uid:gid`.
pub fn parse_user(v: &str) -> Result<String, Problem> {
    let ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    match v.split_once(':') {
        Some((u, g)) if ok(u) && ok(g) && !g.contains(':') => Ok(v.to_string()),
        None if ok(v) => Ok(v.to_string()),
        _ => Err("expected user, uid, user:group or uid:gid".into()),
    }
}

/// `workdir` and `logPath`: an absolute path.
pub fn parse_absolute(v: &str) -> Result<String, Problem> {
    check_absolute(v, "path")?;
    Ok(clean_path(v))
}

/// Host and domain names inside the container (RFC 1123 labels, plus `_`
/// which Kanto's `<name>-host` defaults can contain).
pub fn parse_hostname(v: &str) -> Result<String, Problem> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(v.to_string())
    } else {
        Err("is not a host name (letters, digits, '-' and '_' in dot-separated labels of up to 63 characters)".into())
    }
}

/// Removes trailing and doubled slashes so `/data/` equals `/data`.
fn clean_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for part in p.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Parses one of a fixed set of words.
pub fn parse_word<T: Copy>(v: &str, words: &[(&str, T)]) -> Result<T, Problem> {
    words
        .iter()
        .find(|(w, _)| *w == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let list: Vec<_> = words.iter().map(|(w, _)| *w).collect();
            format!("is not one of {}", list.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn bool_accepts_kanto_words_in_any_case() {
        for t in ["true", "TRUE", "True", "tRuE", "t", "T", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "FALSE", "f", "F", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
    }

    #[test]
    fn bool_refuses_yes_which_kanto_turns_into_false() {
        assert!(parse_bool("YES").is_err());
        assert!(parse_bool("").is_err());
        assert!(parse_bool("on").is_err());
    }

    #[test]
    fn count_refuses_negative_and_overflow() {
        assert_eq!(parse_count("5", 0, 10), Ok(5));
        assert!(parse_count("-1", 0, 10).unwrap_err().contains("negative"));
        assert_eq!(
            parse_count("99999999999", 0, 10),
            Err("must be at most 10".into())
        );
        assert!(parse_count("0", 1, 10).unwrap_err().contains("at least 1"));
        assert!(parse_count("1.5", 0, 10).is_err());
    }

    #[test]
    fn count_accepts_its_bounds_and_refuses_one_past_the_top() {
        assert_eq!(parse_count("1", 1, 10), Ok(1));
        assert_eq!(parse_count("10", 1, 10), Ok(10));
        assert_eq!(parse_count("11", 1, 10), Err("must be at most 10".into()));
    }

    #[test]
    fn size_uses_binary_units_in_any_case() {
        assert_eq!(parse_size("512M"), Ok(512 * MI));
        assert_eq!(parse_size("512m"), Ok(512 * MI));
        assert_eq!(parse_size("1.5G"), Ok(1536 * MI));
        assert_eq!(parse_size("100 k"), Ok(100 * 1024));
        assert_eq!(parse_size("0.5g"), parse_size("512M"));
    }

    #[test]
    fn size_requires_a_unit_like_kanto() {
        assert!(parse_size("1").unwrap_err().contains("no unit"));
        assert!(parse_size("512MB").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn size_refuses_negative_malformed_and_overflow() {
        assert!(parse_size("-5M").unwrap_err().contains("negative"));
        assert!(parse_size("1.2.3M").is_err());
        assert!(parse_size(".5M").is_err());
        assert!(parse_size("5.M").is_err());
        assert!(parse_size("99999999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("").is_err());
    }

    #[test]
    fn swap_accepts_minus_one_as_unlimited() {
        assert_eq!(parse_swap("-1"), Ok(Swap::Unlimited));
        assert_eq!(parse_swap("1G"), Ok(Swap::Limit(1 << 30)));
        assert!(parse_swap("-2").is_err());
    }

    #[test]
    fn duration_accepts_seconds_and_humantime() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-3s").unwrap_err().contains("negative"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn stop_timeout_refuses_fractions() {
        assert!(parse_stop_timeout("1500ms").unwrap_err().contains("whole"));
        assert_eq!(parse_stop_timeout("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn bounds_are_written_as_a_person_would() {
        assert_eq!(duration_text(Duration::from_millis(1)), "1ms");
        assert_eq!(duration_text(Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
        assert_eq!(duration_text(MAX_STOP_TIMEOUT), "1h");
        assert_eq!(duration_text(MAX_HEALTH_DURATION), "24h");
        assert_eq!(duration_text(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(duration_text(Duration::from_secs(65_535)), "65535s");
        assert_eq!(duration_text(Duration::from_micros(999)), "999us");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        let past_a_day = MAX_HEALTH_DURATION + Duration::from_nanos(1);
        assert_eq!(duration_text(past_a_day), "86400.000000001s");
        assert_eq!(
            humantime::parse_duration("86400.000000001s"),
            Ok(past_a_day)
        );
    }

    #[test]
    fn health_duration_refuses_zero() {
        assert!(parse_health_duration("0s").is_err());
        assert_eq!(parse_health_duration("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn cpus_are_nano_cpus() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus(".25"), Ok(250_000_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").unwrap_err().contains("negative"));
        assert!(parse_cpus("abc").is_err());
        assert!(parse_cpus("0.0000000001").is_err());
        assert!(parse_cpus("99999999999").unwrap_err().contains("too large"));
    }

    #[test]
    fn env_forms() {
        assert_eq!(parse_env("A=1"), Ok(("A".into(), Some("1".into()))));
        assert_eq!(parse_env("A="), Ok(("A".into(), Some(String::new()))));
        assert_eq!(parse_env("A"), Ok(("A".into(), None)));
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), Some("b=c".into()))));
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("A-B=x").is_err());
        assert!(parse_env("=x").is_err());
    }

    // Issue 20: validation errors are printed, logged and sent as feedback.
    #[test]
    fn validation_error_for_a_bad_env_name_never_quotes_the_value() {
        for entry in [
            "1DB_PASSWORD=hunter2",
            "DB-PASSWORD=hunter2",
            "=hunter2",
            "DB PASSWORD hunter2",
            "hunter 2",
        ] {
            let e = parse_env(entry).unwrap_err();
            assert!(!e.contains("hunter2"), "{entry}: {e}");
        }
        assert!(parse_env("1BAD=x")
            .unwrap_err()
            .contains("variable \"1BAD\""));
        assert!(parse_env("").unwrap_err().contains("\"\""));
    }

    #[test]
    fn label_refuses_berth_prefix() {
        assert!(parse_label("berth.managed=true")
            .unwrap_err()
            .contains("reserved"));
        assert_eq!(parse_label("a.b=c"), Ok(("a.b".into(), "c".into())));
        assert!(parse_label("nolabel").is_err());
    }

    fn port(v: &str) -> Vec<String> {
        parse_port(v)
            .unwrap()
            .iter()
            .map(|b| b.to_string())
            .collect()
    }

    #[test]
    fn port_defaults_ip_and_protocol() {
        assert_eq!(port("8080:80"), ["8080:80/tcp"]);
        assert_eq!(
            parse_port("8080:80").unwrap(),
            parse_port("0.0.0.0:8080:80/tcp").unwrap()
        );
    }

    #[test]
    fn port_with_host_ip_and_udp() {
        assert_eq!(port("127.0.0.1:53:53/udp"), ["127.0.0.1:53:53/udp"]);
        assert_eq!(port("[::1]:80:80"), ["[::1]:80:80/tcp"]);
    }

    #[test]
    fn port_host_range_with_one_container_port_stays_a_range() {
        assert_eq!(port("5000-6000:80"), ["5000-6000:80/tcp"]);
    }

    #[test]
    fn port_ranges_expand_pairwise() {
        assert_eq!(port("8080-8081:80-81"), ["8080:80/tcp", "8081:81/tcp"]);
    }

    #[test]
    fn port_range_lengths_must_match() {
        assert!(parse_port("8080-8082:80-81")
            .unwrap_err()
            .contains("same length"));
    }

    #[test]
    fn port_refuses_localhost_with_a_hint() {
        let e = parse_port("localhost:55555:30555-30555/tcp").unwrap_err();
        assert!(
            e.contains("\"localhost\" is not an IP address; use 127.0.0.1"),
            "{e}"
        );
    }

    #[test]
    fn port_refuses_malformed_entries() {
        assert!(parse_port("80").is_err());
        assert!(parse_port("80:80/icmp").unwrap_err().contains("protocol"));
        assert!(parse_port("70000:80").unwrap_err().contains("out of range"));
        assert!(parse_port("a:80").is_err());
        assert!(parse_port("80:0").is_err());
        assert!(parse_port("90-80:80").unwrap_err().contains("ends before"));
        assert!(parse_port("1:2:3:4").is_err());
    }

    #[test]
    fn mount_defaults_to_rprivate_read_write() {
        let m = parse_mount("/data:/var/lib/x").unwrap();
        assert_eq!((m.read_only, m.propagation), (false, Propagation::Rprivate));
    }

    #[test]
    fn mount_takes_ro_and_propagation() {
        let m = parse_mount("/etc/x:/etc/x:ro,rslave").unwrap();
        assert_eq!((m.read_only, m.propagation), (true, Propagation::Rslave));
        assert_eq!(m.to_string(), "/etc/x:/etc/x:ro,rslave");
    }

    #[test]
    fn mount_refuses_relative_source_and_unknown_option() {
        assert!(parse_mount("data:/x").unwrap_err().contains("absolute"));
        assert!(parse_mount("/data:x").unwrap_err().contains("absolute"));
        assert!(parse_mount("/a:/b:shared,slave")
            .unwrap_err()
            .contains("more than one"));
        assert!(parse_mount("/a:/b:z")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_mount("/a").is_err());
    }

    #[test]
    fn mount_paths_are_cleaned() {
        assert_eq!(
            parse_mount("/data/:/x//y").unwrap(),
            parse_mount("/data:/x/y").unwrap()
        );
    }

    #[test]
    fn volume_forms() {
        let v = parse_volume("db:/var/lib/db:ro").unwrap();
        assert_eq!((v.name.as_str(), v.read_only), ("db", true));
        assert!(parse_volume("/host:/x").unwrap_err().contains("mount key"));
        assert!(parse_volume("db:rel").is_err());
        assert!(parse_volume("db:/x:z").is_err());
    }

    #[test]
    fn device_permissions_are_canonical() {
        assert_eq!(parse_device("/dev/a:/dev/b").unwrap().permissions, "rwm");
        assert_eq!(parse_device("/dev/a:/dev/b:mr").unwrap().permissions, "rm");
        assert!(parse_device("/dev/a:/dev/b:rr").is_err());
        assert!(parse_device("/dev/a:/dev/b:x").is_err());
        assert!(parse_device("/dev/a").unwrap_err().contains("both paths"));
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            parse_host("db:10.0.0.1").unwrap().target,
            HostTarget::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_host("h:host_ip").unwrap().target,
            HostTarget::HostGateway
        );
        assert_eq!(
            parse_host("h:host_ip_eth0").unwrap().target,
            HostTarget::HostInterface("eth0".into())
        );
        assert_eq!(
            parse_host("influxdb:container_influxdb-host")
                .unwrap()
                .target,
            HostTarget::Container("influxdb-host".into())
        );
        assert_eq!(
            parse_host("v6:::1").unwrap().target,
            HostTarget::Ip("::1".parse().unwrap())
        );
        assert!(parse_host("db:not-an-ip").is_err());
        assert!(parse_host("nocolon").is_err());
    }

    #[test]
    fn network_forms() {
        assert_eq!(parse_network("bridge"), Ok(NetworkMode::Bridge));
        assert_eq!(parse_network("host"), Ok(NetworkMode::Host));
        assert_eq!(parse_network("none"), Ok(NetworkMode::None));
        assert_eq!(
            parse_network("container:db"),
            Ok(NetworkMode::Container("db".into()))
        );
        assert_eq!(
            parse_network("backend"),
            Ok(NetworkMode::User("backend".into()))
        );
        assert!(parse_network("bad name").is_err());
    }

    #[test]
    fn signal_forms() {
        assert_eq!(parse_signal("SIGTERM"), Ok("SIGTERM".into()));
        assert_eq!(parse_signal("term"), Ok("SIGTERM".into()));
        assert_eq!(parse_signal("9"), Ok("9".into()));
        assert_eq!(parse_signal("SIGRTMIN+3"), Ok("SIGRTMIN+3".into()));
        assert!(parse_signal("SIGFOO").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn user_forms() {
        assert!(parse_user("1000:1000").is_ok());
        assert!(parse_user("app").is_ok());
        assert!(parse_user("a:b:c").is_err());
        assert!(parse_user("a b").is_err());
    }

    #[test]
    fn names_follow_the_engine_rule() {
        assert!(check_name("web-1.a_b").is_ok());
        assert!(check_name("_web").is_err());
        assert!(check_name("containers:web").is_err());
        assert!(check_name("").is_err());
    }
}
