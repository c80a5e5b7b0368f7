//! Writes a configuration back as Kanto key/value parameters: the inventory
//! of `berth state`, and the text the planner diffs. What it writes parses
//! back to the same configuration, so an inventory can seed a document.

use super::model::*;

/// One parameter: a desired-state key and its value.
pub type Parameter = (&'static str, String);

/// The non-default settings of `config` for container `name`, in Kanto's
/// inventory order (berth's own keys after Kanto's).
pub fn parameters(name: &str, config: &ContainerConfig) -> Vec<Parameter> {
    let mut out: Vec<Parameter> = vec![("image", config.image.to_string())];
    let mut push = |key: &'static str, value: String| out.push((key, value));
    if let Some(d) = config
        .domainname
        .as_ref()
        .filter(|d| **d != format!("{name}-domain"))
    {
        push("domainName", d.clone());
    }
    if let Some(h) = config
        .hostname
        .as_ref()
        .filter(|h| **h != format!("{name}-host"))
    {
        push("hostName", h.clone());
    }
    for (key, on) in [
        ("terminal", config.terminal),
        ("interactive", config.interactive),
        ("privileged", config.privileged),
    ] {
        if on {
            push(key, "true".into());
        }
    }
    match config.restart {
        RestartPolicy::UnlessStopped => {}
        RestartPolicy::OnFailure { max_retries } => {
            push("restartPolicy", "on-failure".into());
            if max_retries > 0 {
                push("restartMaxRetries", max_retries.to_string());
            }
        }
        other => push("restartPolicy", other.to_string()),
    }
    for d in &config.devices {
        push("device", d.to_string());
    }
    for p in &config.ports {
        push("port", p.to_string());
    }
    if config.network != NetworkMode::Bridge {
        push("network", config.network.to_string());
    }
    for h in &config.extra_hosts {
        push("host", h.to_string());
    }
    let log = &config.log;
    if log.driver != LogDriver::JsonFile {
        push("logDriver", log.driver.as_str().into());
    }
    if let Some(files) = log.max_files.filter(|f| *f != 2) {
        push("logMaxFiles", files.to_string());
    }
    if let Some(size) = log.max_size.filter(|s| *s != 100 << 20) {
        push("logMaxSize", size_text(size));
    }
    if log.non_blocking {
        push("logMode", "non-blocking".into());
        if let Some(b) = log.max_buffer_size.filter(|b| *b != 1 << 20) {
            push("logMaxBufferSize", size_text(b));
        }
    }
    let r = &config.resources;
    if let Some(m) = r.memory {
        push("memory", size_text(m));
    }
    if let Some(m) = r.memory_reservation {
        push("memoryReservation", size_text(m));
    }
    match r.memory_swap {
        Some(Swap::Unlimited) => push("memorySwap", "-1".into()),
        Some(Swap::Limit(s)) => push("memorySwap", size_text(s)),
        None => {}
    }
    for m in &config.mounts {
        push("mount", m.to_string());
    }
    for (k, v) in &config.env {
        push(
            "env",
            match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            },
        );
    }
    for c in config.cmd.iter().flatten() {
        push("cmd", c.clone());
    }
    for e in config.entrypoint.iter().flatten() {
        push("entrypoint", e.clone());
    }
    if let Some(w) = &config.workdir {
        push("workdir", w.clone());
    }
    if let Some(u) = &config.user {
        push("user", u.clone());
    }
    for (k, v) in &config.labels {
        push("label", format!("{k}={v}"));
    }
    for v in &config.volumes {
        push("volume", v.to_string());
    }
    if let Some(n) = r.nano_cpus {
        push("cpus", cpus_text(n));
    }
    if let Some(t) = config.stop_timeout {
        push("stopTimeout", humantime::format_duration(t).to_string());
    }
    if let Some(s) = &config.stop_signal {
        push("stopSignal", s.clone());
    }
    let h = &config.health;
    match &h.test {
        Some(HealthTest::Shell(c)) => push("healthCmd", c.clone()),
        Some(HealthTest::Disabled) => push("healthCmd", "NONE".into()),
        None => {}
    }
    for (key, d) in [
        ("healthInterval", h.interval),
        ("healthTimeout", h.timeout),
        ("healthStartPeriod", h.start_period),
    ] {
        if let Some(d) = d {
            push(key, humantime::format_duration(d).to_string());
        }
    }
    if let Some(r) = h.retries {
        push("healthRetries", r.to_string());
    }
    out
}

/// Kanto's own inventory keys, in its order; the rest are berth's.
const KANTO_KEYS: &[&str] = &[
    "image",
    "domainName",
    "hostName",
    "terminal",
    "interactive",
    "privileged",
    "restartPolicy",
    "restartMaxRetries",
    "device",
    "port",
    "network",
    "host",
    "logDriver",
    "logMaxFiles",
    "logMaxSize",
    "logMode",
    "logMaxBufferSize",
    "memory",
    "memoryReservation",
    "memorySwap",
    "mount",
    "env",
    "cmd",
];

/// Every setting of `config`, defaults included, as Kanto's
/// `verbose_inventory_report` reports them: Kanto's keys in its order with
/// their default values written out, then berth's own keys as
/// [`parameters`] gives them. It parses back to the same configuration.
pub fn verbose_parameters(name: &str, config: &ContainerConfig) -> Vec<Parameter> {
    let brief = parameters(name, config);
    let all = |key: &str| -> Vec<Parameter> {
        brief.iter().filter(|(k, _)| *k == key).cloned().collect()
    };
    let mut out: Vec<Parameter> = all("image");
    if let Some(d) = &config.domainname {
        out.push(("domainName", d.clone()));
    }
    if let Some(h) = &config.hostname {
        out.push(("hostName", h.clone()));
    }
    out.push(("terminal", config.terminal.to_string()));
    out.push(("interactive", config.interactive.to_string()));
    out.push(("privileged", config.privileged.to_string()));
    let (policy, retries) = match config.restart {
        RestartPolicy::OnFailure { max_retries } => ("on-failure".to_string(), max_retries),
        other => (other.to_string(), 0),
    };
    out.push(("restartPolicy", policy));
    out.push(("restartMaxRetries", retries.to_string()));
    out.extend(all("device"));
    out.extend(all("port"));
    out.push(("network", config.network.to_string()));
    out.extend(all("host"));
    let log = &config.log;
    out.push(("logDriver", log.driver.as_str().into()));
    if matches!(log.driver, LogDriver::JsonFile | LogDriver::Local) {
        out.push(("logMaxFiles", log.max_files.unwrap_or(2).to_string()));
        out.push(("logMaxSize", size_text(log.max_size.unwrap_or(100 << 20))));
    }
    let mode = if log.non_blocking {
        "non-blocking"
    } else {
        "blocking"
    };
    out.push(("logMode", mode.into()));
    if log.non_blocking {
        out.push((
            "logMaxBufferSize",
            size_text(log.max_buffer_size.unwrap_or(1 << 20)),
        ));
    }
    for key in [
        "memory",
        "memoryReservation",
        "memorySwap",
        "mount",
        "env",
        "cmd",
    ] {
        out.extend(all(key));
    }
    out.extend(brief.into_iter().filter(|(k, _)| !KANTO_KEYS.contains(k)));
    out
}

/// A size in Kanto's syntax, exact where a whole unit fits.
pub fn size_text(bytes: u64) -> String {
    const K: u64 = 1 << 10;
    for (unit, size) in [("G", K * K * K), ("M", K * K), ("k", K)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    // Kanto requires a unit; a fraction of a kibibyte keeps the value exact
    // enough to round-trip through the parser's truncation.
    let kib = bytes as f64 / K as f64;
    format!(
        "{}k",
        format!("{kib:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
    )
}

fn cpus_text(nanos: u64) -> String {
    let whole = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:09}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// The parameters as `key: value` lines, for human diffs.
pub fn lines(params: &[Parameter]) -> String {
    let mut text = String::new();
    for (k, v) in params {
        text.push_str(k);
        text.push_str(": ");
        text.push_str(v);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::document::{Component, Domain, Envelope, KeyValue, Payload};
    use crate::spec::{validate, Options};

    fn config_of(name: &str, params: &[Parameter]) -> ContainerConfig {
        let envelope = Envelope {
            activity_id: "a".into(),
            timestamp: None,
            payload: Payload {
                baselines: vec![],
                domains: vec![Domain {
                    id: "containers".into(),
                    config: vec![],
                    components: vec![Component {
                        id: name.into(),
                        version: None,
                        config: params
                            .iter()
                            .map(|(k, v)| KeyValue::new(*k, v.clone()))
                            .collect(),
                    }],
                }],
            },
        };
        match validate(&envelope, &Options::default()) {
            Ok(a) => a.desired.containers[0].config.clone(),
            Err(r) => panic!("{r}"),
        }
    }

    #[test]
    fn full_example_round_trips_through_parameters() {
        let text = include_str!("../../examples/full.json");
        let accepted = crate::spec::parse(text, &Options::default()).unwrap();
        for spec in &accepted.desired.containers {
            let params = parameters(&spec.name, &spec.config);
            assert_eq!(
                config_of(&spec.name, &params),
                spec.config,
                "{}",
                lines(&params)
            );
        }
    }

    #[test]
    fn full_example_round_trips_through_verbose_parameters() {
        let text = include_str!("../../examples/full.json");
        let accepted = crate::spec::parse(text, &Options::default()).unwrap();
        for spec in &accepted.desired.containers {
            let params = verbose_parameters(&spec.name, &spec.config);
            assert_eq!(
                config_of(&spec.name, &params),
                spec.config,
                "{}",
                lines(&params)
            );
        }
    }

    #[test]
    fn verbose_writes_every_kanto_default_out() {
        let config = config_of("web", &[("image", "nginx".into())]);
        let keys: Vec<&str> = verbose_parameters("web", &config)
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            keys,
            [
                "image",
                "domainName",
                "hostName",
                "terminal",
                "interactive",
                "privileged",
                "restartPolicy",
                "restartMaxRetries",
                "network",
                "logDriver",
                "logMaxFiles",
                "logMaxSize",
                "logMode"
            ]
        );
        let p = verbose_parameters("web", &config);
        assert!(p.contains(&("restartPolicy", "unless-stopped".to_string())));
        assert!(p.contains(&("logMaxSize", "100M".to_string())));
        assert!(p.contains(&("hostName", "web-host".to_string())));
        assert_eq!(config_of("web", &p), config);
    }

    #[test]
    fn defaults_are_left_out() {
        let config = config_of("web", &[("image", "nginx".into())]);
        assert_eq!(
            parameters("web", &config),
            vec![("image", "docker.io/library/nginx:latest".to_string())]
        );
    }

    #[test]
    fn sizes_use_the_largest_whole_unit() {
        assert_eq!(size_text(512 << 20), "512M");
        assert_eq!(size_text(1 << 30), "1G");
        assert_eq!(size_text(1536 << 20), "1536M");
        assert_eq!(size_text(1536), "1.5k");
    }

    #[test]
    fn cpus_keep_their_fraction() {
        assert_eq!(cpus_text(500_000_000), "0.5");
        assert_eq!(cpus_text(2_000_000_000), "2");
    }
}
