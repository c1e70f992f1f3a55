//! `serve --config FILE`: a YAML file of `serve`'s flags, by their long names, read before the
//! command line is parsed and given to clap as the flags' defaults. So a flag on the command
//! line wins over its `PRISM_LAUNCHER_*` environment variable, which wins over the file, which
//! wins over the built-in default; and every value of the file goes through the same parser as
//! its flag. `serve --print-config` shows the result, each value with where it came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use prism_launcher::sources::spec_file::read_bounded_text;

/// The flag that names the file, and its environment variable.
pub const CONFIG_FLAG: &str = "config";
pub const CONFIG_ENV: &str = "PRISM_LAUNCHER_CONFIG";

/// The largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Flags that are about this run of the command, not the launcher's configuration: neither
/// read from the file nor printed.
const NOT_CONFIGURATION: [&str; 3] = [CONFIG_FLAG, "print_config", "help"];

/// A configuration file read: each flag's id with the values it gives.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    values: BTreeMap<String, Vec<String>>,
}

impl ConfigFile {
    /// The file named by `--config FILE` (or `--config=FILE`, or `PRISM_LAUNCHER_CONFIG`) in
    /// `args`, read and checked against the flags of `serve` (every key a flag, every value one
    /// its flag accepts); empty without one. `args` are the command line's, without the
    /// program's name.
    pub fn find(args: &[OsString], serve: &Command) -> anyhow::Result<ConfigFile> {
        let Some(path) = named_file(args) else {
            return Ok(ConfigFile::default());
        };
        let text = read_bounded_text(&path, MAX_CONFIG_BYTES).map_err(|problem| {
            anyhow::anyhow!(
                "cannot read the configuration file {}: {problem}",
                path.display()
            )
        })?;
        let values = parse(&text, serve)
            .with_context(|| format!("in the configuration file {}", path.display()))?;
        Ok(ConfigFile {
            path: Some(path),
            values,
        })
    }

    /// `command` (`serve`, or the top level that runs it without a subcommand) with the file's
    /// values as its flags' defaults.
    pub fn as_defaults(&self, mut command: Command) -> Command {
        for (id, values) in &self.values {
            let values: Vec<clap::builder::OsStr> = values
                .iter()
                .map(|value| clap::builder::OsStr::from(clap::builder::Str::from(value.clone())))
                .collect();
            command = command.mut_arg(id, |arg| arg.default_values(values));
        }
        command
    }

    /// Whether the file gives a value for the flag `id`.
    fn gives(&self, id: &str) -> bool {
        self.values.contains_key(id)
    }
}

/// The path after `--config` in `args`, else in `PRISM_LAUNCHER_CONFIG`. (A prescan: the file
/// has to be read before clap parses the rest.)
fn named_file(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let with_value = format!("--{CONFIG_FLAG}=");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == flag {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix(&with_value) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// The file's mapping of flag names to values, each value checked by its flag's own parser.
fn parse(text: &str, serve: &Command) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).context("it is not YAML")?;
    let mapping = match document {
        serde_yaml::Value::Mapping(mapping) => mapping,
        serde_yaml::Value::Null => return Ok(BTreeMap::new()),
        _ => bail!(
            "it must be a mapping of serve's flags to their values, like `listen: 127.0.0.1:7070`"
        ),
    };
    let flags: BTreeMap<String, &clap::Arg> = serve
        .get_arguments()
        .filter(|arg| !NOT_CONFIGURATION.contains(&arg.get_id().as_str()))
        .filter_map(|arg| Some((arg.get_long()?.to_string(), arg)))
        .collect();
    let mut values = BTreeMap::new();
    for (key, value) in mapping {
        let serde_yaml::Value::String(key) = key else {
            bail!("a key is not a flag name: {key:?}");
        };
        let Some(arg) = flags.get(&key) else {
            let known: Vec<&str> = flags.keys().map(String::as_str).collect();
            bail!(
                "{key:?} is not a flag of serve; the keys are its flags' long names: {}",
                known.join(", ")
            );
        };
        let texts = match value {
            // Unset (as `--print-config` shows a flag without a value): the default stands.
            serde_yaml::Value::Null => continue,
            serde_yaml::Value::Sequence(items) if items.is_empty() => continue,
            serde_yaml::Value::Sequence(items) => items
                .into_iter()
                .map(|item| scalar(&key, item))
                .collect::<anyhow::Result<Vec<_>>>()?,
            other => vec![scalar(&key, other)?],
        };
        check(serve, arg, &key, &texts)?;
        // A switch set to false in the file is the switch's own default: nothing to give.
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        if switch && texts.iter().all(|text| text == "false") {
            continue;
        }
        values.insert(arg.get_id().to_string(), texts);
    }
    Ok(values)
}

/// A scalar of the file as the text a flag takes.
fn scalar(key: &str, value: serde_yaml::Value) -> anyhow::Result<String> {
    match value {
        serde_yaml::Value::String(text) => Ok(text),
        serde_yaml::Value::Number(number) => Ok(number.to_string()),
        serde_yaml::Value::Bool(flag) => Ok(flag.to_string()),
        other => bail!("{key}: {other:?} is not a value (a string, a number, true or false, or a list of them)"),
    }
}

/// Parses `texts` as `--key` would be on the command line, so that a bad value is reported with
/// its key here rather than as a bad default.
fn check(serve: &Command, arg: &clap::Arg, key: &str, texts: &[String]) -> anyhow::Result<()> {
    let mut argv: Vec<String> = vec!["serve".to_string()];
    match arg.get_action() {
        clap::ArgAction::SetTrue => match texts {
            [one] if one == "true" || one == "false" => return Ok(()),
            _ => bail!("{key}: a switch is true or false"),
        },
        _ => {
            for text in texts {
                argv.push(format!("--{key}={text}"));
            }
        }
    }
    let lone = serve
        .clone()
        // Only this flag is checked: the others (required ones included) are left out.
        .mut_args(|other| other.required(false));
    lone.try_get_matches_from(argv)
        .map(drop)
        .map_err(|error| anyhow::anyhow!("{key}: {}", first_line(&error.to_string())))
}

fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or(text)
        .trim_start_matches("error: ")
}

/// The effective configuration as a configuration file (YAML, every flag of `serve` by its long
/// name, in `serve`'s order), each line with where its value came from.
pub fn print(serve: &Command, matches: &ArgMatches, file: &ConfigFile) -> String {
    let mut out = String::from("# the effective configuration of serve; usable as --config\n");
    if let Some(path) = &file.path {
        out.push_str(&format!("# configuration file: {}\n", path.display()));
    }
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_CONFIGURATION.contains(&id) {
            continue;
        }
        let Some(long) = arg.get_long() else {
            continue;
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => {
                arg.get_env().map_or("environment".to_string(), |name| {
                    format!("environment {}", name.to_string_lossy())
                })
            }
            Some(ValueSource::DefaultValue) if file.gives(id) => "configuration file".to_string(),
            _ => "default".to_string(),
        };
        let values: Vec<String> = match arg.get_action() {
            clap::ArgAction::SetTrue => vec![matches.get_flag(id).to_string()],
            _ => matches
                .get_raw(id)
                .map(|raw| {
                    raw.map(|value| value.to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let value = match values.as_slice() {
            [] if arg
                .get_num_args()
                .is_some_and(|range| range.max_values() > 1)
                || matches!(arg.get_action(), clap::ArgAction::Append) =>
            {
                "[]".to_string()
            }
            [] => "null".to_string(),
            [one] if switch => one.clone(),
            [one] if !matches!(arg.get_action(), clap::ArgAction::Append) => yaml_scalar(one),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|value| yaml_scalar(value))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push_str(&format!("{long}: {value}  # {source}\n"));
    }
    out
}

/// `text` as a YAML scalar that reads back as the same string (quoted when YAML would read it
/// as something else).
fn yaml_scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !matches!(
            text,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
        );
    if plain && (text.parse::<u64>().is_ok() || text.parse::<f64>().is_err()) {
        text.to_string()
    } else {
        // JSON's string syntax is YAML's double-quoted one.
        serde_json_escape(text)
    }
}

fn serde_json_escape(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_command() -> Command {
        super::super::cli_command()
            .find_subcommand("serve")
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_file_is_checked_flag_by_flag_and_unset_values_leave_the_default() {
        let serve = serve_command();
        let values = parse(
            "listen: \":7070\"\ncapabilities: [pattern, proxy]\nkeep-processes: true\ninsecure: false\nlauncher-id: null\nallowed-executable-root: []\nmax-processes: 50\n",
            &serve,
        )
        .unwrap();
        let expected: BTreeMap<String, Vec<String>> = [
            ("capabilities", vec!["pattern", "proxy"]),
            ("keep_processes", vec!["true"]),
            ("listen", vec![":7070"]),
            ("max_processes", vec!["50"]),
        ]
        .into_iter()
        .map(|(id, values)| {
            (
                id.to_string(),
                values.into_iter().map(str::to_string).collect(),
            )
        })
        .collect();
        assert_eq!(values, expected);
        let error = parse("max-processes: -3\n", &serve)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("max-processes: invalid value '-3'"),
            "{error}"
        );
        let error = parse("listen-on: 1\n", &serve).unwrap_err().to_string();
        assert!(
            error.contains("\"listen-on\" is not a flag of serve"),
            "{error}"
        );
        assert!(parse("[1, 2]\n", &serve).is_err());
        assert!(
            parse("config: other.yaml\n", &serve).is_err(),
            "no file names another"
        );
    }

    #[test]
    fn what_print_config_shows_reads_back_as_the_same_configuration() {
        let serve = serve_command();
        let file = ConfigFile {
            path: None,
            values: parse(
                "listen: \":7070\"\ncapabilities: [pattern]\nregion: \"us west\"\n",
                &serve,
            )
            .unwrap(),
        };
        let matches = file
            .as_defaults(serve.clone())
            .try_get_matches_from(["serve", "--max-processes", "7", "--keep-processes"])
            .unwrap();
        let printed = print(&serve, &matches, &file);
        assert!(printed.contains("max-processes: 7  # flag\n"), "{printed}");
        assert!(
            printed.contains("region: \"us west\"  # configuration file\n"),
            "{printed}"
        );
        assert!(
            printed.contains("failure-threshold: 5  # default\n"),
            "{printed}"
        );
        let again = ConfigFile {
            path: None,
            values: parse(&printed, &serve).unwrap(),
        };
        let reread = again
            .as_defaults(serve.clone())
            .try_get_matches_from(["serve"])
            .unwrap();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_CONFIGURATION.contains(&id) {
                continue;
            }
            let raw = |matches: &ArgMatches| -> Vec<String> {
                matches
                    .get_raw(id)
                    .map(|values| {
                        values
                            .map(|value| value.to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert_eq!(raw(&reread), raw(&matches), "{id}");
        }
    }
}
