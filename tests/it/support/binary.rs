//! Running the fhirguard binary, one way for every suite: [`fhirguard`] runs a command to its end
//! (with a standard input, when given), [`fhirguard_async`] does so off the runtime — a command
//! that asks this test's fakes (`explain`, `check --probe`) must not block the tasks serving
//! them — and [`Explain`] builds the `explain` command line from its flags.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `fhirguard args…` to its end, writing `stdin` (if any) to its standard input. The
/// environment's `FHIRGUARD_LOG` and `FHIRGUARD_CONFIG` are not passed on: the arguments say it
/// all.
pub fn fhirguard<S: AsRef<str>>(args: &[S], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
        .args(args.iter().map(AsRef::as_ref))
        .env_remove("FHIRGUARD_LOG")
        .env_remove("FHIRGUARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fhirguard");
    let mut input = child.stdin.take().expect("a piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("fhirguard's output")
}

/// [`fhirguard`] on a blocking thread, so that the runtime keeps serving the fakes it asks.
pub async fn fhirguard_async(args: Vec<String>, stdin: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || fhirguard(&args, stdin.as_deref()))
        .await
        .expect("the fhirguard thread")
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// The exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `fhirguard explain --config <file>` and its flags.
#[derive(Debug, Clone)]
pub struct Explain {
    args: Vec<String>,
    stdin: Option<String>,
}

impl Explain {
    /// `explain` on the config at `config`.
    pub fn new(config: impl AsRef<Path>) -> Explain {
        let config = config.as_ref().to_str().expect("a UTF-8 path").to_owned();
        Explain {
            args: vec!["explain".to_owned(), "--config".to_owned(), config],
            stdin: None,
        }
    }

    fn flag(mut self, flag: &str, value: impl Into<String>) -> Explain {
        self.args.push(flag.to_owned());
        self.args.push(value.into());
        self
    }

    /// `--token -`, the token written to the standard input (kept out of the process list).
    pub fn token(mut self, token: &str) -> Explain {
        self.stdin = Some(token.to_owned());
        self.flag("--token", "-")
    }

    /// `--token <token>` on the command line.
    pub fn token_arg(self, token: &str) -> Explain {
        self.flag("--token", token)
    }

    /// `--token=<token>`, one argument: an opaque token may begin with '-', which a separate
    /// argument would make look like a flag.
    pub fn token_joined(mut self, token: &str) -> Explain {
        self.args.push(format!("--token={token}"));
        self
    }

    /// `--method <method>`.
    pub fn method(self, method: &str) -> Explain {
        self.flag("--method", method)
    }

    /// `--path <target>`.
    pub fn path(self, target: &str) -> Explain {
        self.flag("--path", target)
    }

    /// `--header "<Name>: <value>"`.
    pub fn header(self, header: &str) -> Explain {
        self.flag("--header", header)
    }

    /// `--body <file>`.
    pub fn body(self, file: impl AsRef<Path>) -> Explain {
        let file = file.as_ref().to_str().expect("a UTF-8 path").to_owned();
        self.flag("--body", file)
    }

    /// Runs it off the runtime ([`fhirguard_async`]).
    pub async fn run(self) -> Ran {
        fhirguard_async(self.args, self.stdin).await.into()
    }
}
