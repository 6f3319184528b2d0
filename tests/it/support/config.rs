//! The one config builder of the suites. Every fhirguard config a suite writes opens the same
//! way — both listeners on `127.0.0.1:0`, the stack's upstream, `allowHttpAuthorities` (the fake
//! providers speak plain HTTP) — then adds its own top-level keys and its identity providers.
//! [`super::stack::Stack::config`] starts one for a stack; `to_string()` gives the YAML.

use std::fmt;

/// A SMART application: `clientId`, `audience`, and `allowedDataActions` as flow YAML
/// (`r#"["Read"]"#`).
pub type App<'a> = (&'a str, &'a str, &'a str);

/// A fhirguard config under construction.
#[derive(Debug, Clone)]
pub struct ConfigYaml {
    /// The YAML value of `upstream`: a quoted URL or a flow object.
    upstream: String,
    /// Top-level YAML after the opening, in order.
    top: Vec<String>,
    /// The primary authority and its audience.
    primary: Option<(String, String)>,
    /// `smartIdentityProviders`, each as the YAML of its list item.
    smart: Vec<String>,
}

impl ConfigYaml {
    /// The opening, forwarding to `upstream` (the YAML value: `"\"http://…\""` or a flow object).
    pub fn new(upstream: impl Into<String>) -> ConfigYaml {
        ConfigYaml {
            upstream: upstream.into(),
            top: Vec::new(),
            primary: None,
            smart: Vec::new(),
        }
    }

    /// Top-level YAML added after the opening: a key (`publicBaseUrl: "…"`) or whole blocks.
    pub fn with(mut self, yaml: &str) -> ConfigYaml {
        self.top.push(yaml.trim_end_matches('\n').to_owned());
        self
    }

    /// The primary authority (`authenticationConfiguration.authority`) and its audience.
    pub fn primary(mut self, authority: &str, audience: &str) -> ConfigYaml {
        self.primary = Some((authority.to_owned(), audience.to_owned()));
        self
    }

    /// A SMART identity provider at `authority` with `applications`.
    pub fn smart(mut self, authority: &str, applications: &[App<'_>]) -> ConfigYaml {
        let mut item = format!("    - authority: \"{authority}\"\n      applications:\n");
        for (client, audience, actions) in applications {
            item.push_str(&format!(
                "        - clientId: \"{client}\"\n          audience: \"{audience}\"\n          \
                 allowedDataActions: {actions}\n"
            ));
        }
        self.smart.push(item);
        self
    }
}

impl fmt::Display for ConfigYaml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listen: \"127.0.0.1:0\"")?;
        writeln!(f, "adminListen: \"127.0.0.1:0\"")?;
        writeln!(f, "upstream: {}", self.upstream)?;
        writeln!(f, "allowHttpAuthorities: true")?;
        for yaml in &self.top {
            writeln!(f, "{yaml}")?;
        }
        if self.primary.is_none() && self.smart.is_empty() {
            return Ok(());
        }
        writeln!(f, "authenticationConfiguration:")?;
        if let Some((authority, audience)) = &self.primary {
            writeln!(f, "  authority: \"{authority}\"")?;
            writeln!(f, "  audience: \"{audience}\"")?;
        }
        if !self.smart.is_empty() {
            writeln!(f, "  smartIdentityProviders:")?;
            for item in &self.smart {
                f.write_str(item)?;
            }
        }
        Ok(())
    }
}
