//! BENCHMARKS.md: each benchmark owns one section between `<!-- bench:ID -->` and
//! `<!-- /bench:ID -->` markers and rewrites only that; the header section says how to rerun,
//! on what machine, and when. Text outside the markers is left as it is.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// Section ids in the order a new file lists them.
pub(crate) const SECTION_ORDER: &[&str] = &[
    "header",
    "scheduler",
    "peers",
    "docker",
    "validate",
    "recovery",
    "failover",
    "spread",
    "bundle",
    "artifacts",
    "triggers",
    "biglog",
    "console",
];

/// A rendered section of BENCHMARKS.md.
pub(crate) struct Section {
    /// One of [`SECTION_ORDER`].
    pub(crate) id: &'static str,
    /// Markdown between the markers, without them.
    pub(crate) body: String,
}

/// Replaces (or adds) `sections` in the file at `path`, creating it when missing.
pub(crate) fn write_sections(path: &Path, sections: &[Section]) -> Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    for section in sections {
        text = replace_section(&text, section);
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn markers(id: &str) -> (String, String) {
    (
        format!("<!-- bench:{id} -->"),
        format!("<!-- /bench:{id} -->"),
    )
}

/// The text with `section` between its markers; a missing section goes before the first
/// section that follows it in [`SECTION_ORDER`], or at the end.
fn replace_section(text: &str, section: &Section) -> String {
    let (open, close) = markers(section.id);
    let block = format!("{open}\n{}\n{close}", section.body.trim_end());
    if let (Some(start), Some(end)) = (text.find(&open), text.find(&close))
        && start < end
    {
        return format!("{}{block}{}", &text[..start], &text[end + close.len()..]);
    }
    let later = SECTION_ORDER
        .iter()
        .skip_while(|id| **id != section.id)
        .skip(1)
        .find_map(|id| text.find(&markers(id).0));
    match later {
        Some(at) => format!("{}{block}\n\n{}", &text[..at], &text[at..]),
        None if text.trim().is_empty() => format!("{block}\n"),
        None => format!("{}\n\n{block}\n", text.trim_end()),
    }
}

/// The header: what this file is, how to rerun it, the machine and the date.
pub(crate) fn header_section(machine: &Machine, date: &str) -> Section {
    let body = format!(
        "# Benchmarks\n\
         \n\
         Figures from `vishwa-bench` (the `bench/` crate), which drives the real components: the \
         scheduler on a loopback port with sled in a temporary directory, real gRPC, the real \
         worker agent, the release `vishwa` binary and real Docker. Every section below is \
         rewritten by its benchmark; rerun them all with\n\
         \n\
         ```sh\n\
         cargo run --release -p vishwa-bench -- all\n\
         ```\n\
         \n\
         or one at a time with `scheduler`, `peers`, `docker`, `validate`, `recovery`, \
         `failover`, `spread`, `bundle`, `artifacts` or `cache` in place of `all` (`--reps N` changes the \
         repetitions, `--no-write` only prints). The machine is small \
         and noisy, so each figure is a median over repetitions, and each comparison is a ratio \
         against a baseline measured in the same run, interleaved with it.\n\
         \n\
         Last run: {date}, on {}.\n",
        machine.describe()
    );
    Section { id: "header", body }
}

/// What the figures were measured on.
pub(crate) struct Machine {
    cpu: String,
    cpus: usize,
    memory_gib: f64,
    kernel: String,
    filesystem: String,
    docker: Option<String>,
    make: Option<String>,
}

impl Machine {
    /// Reads the machine's description from /proc and a few `--version` calls.
    pub(crate) fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let tmp = std::env::temp_dir();
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            filesystem: filesystem_of(&tmp),
            docker: first_line("docker", &["version", "--format", "{{.Server.Version}}"]),
            make: first_line("make", &["--version"]),
        }
    }

    /// One line for the header.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} logical CPUs ({}), {:.0} GiB RAM, Linux {}, temporary directories on {}, \
             Docker {}, {}",
            self.cpus,
            self.cpu,
            self.memory_gib,
            self.kernel,
            self.filesystem,
            self.docker.as_deref().unwrap_or("not reachable"),
            self.make.as_deref().unwrap_or("no make"),
        )
    }
}

/// The type of the filesystem holding `path` (`ext4`, `tmpfs`, ...), as `df` names it.
fn filesystem_of(path: &Path) -> String {
    let output = Command::new("df")
        .arg("--output=fstype")
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success());
    output
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().nth(1).map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The first line a command prints, if it runs and succeeds.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(id: &'static str, body: &str) -> Section {
        Section {
            id,
            body: body.to_owned(),
        }
    }

    #[test]
    fn a_present_section_is_replaced_and_the_rest_kept() {
        let text = "intro\n<!-- bench:peers -->\nold\n<!-- /bench:peers -->\nfooter\n";
        let out = replace_section(text, &section("peers", "new"));
        assert_eq!(
            out,
            "intro\n<!-- bench:peers -->\nnew\n<!-- /bench:peers -->\nfooter\n"
        );
    }

    #[test]
    fn a_missing_section_goes_before_the_next_one_in_order() {
        let text = "<!-- bench:header -->\nh\n<!-- /bench:header -->\n\n\
                    <!-- bench:validate -->\nv\n<!-- /bench:validate -->\n";
        let out = replace_section(text, &section("docker", "d"));
        let docker = out.find("bench:docker").unwrap();
        assert!(out.find("bench:header").unwrap() < docker);
        assert!(docker < out.find("bench:validate").unwrap());
    }

    #[test]
    fn a_missing_section_goes_at_the_end_of_an_empty_file() {
        let out = replace_section("", &section("header", "h"));
        assert_eq!(out, "<!-- bench:header -->\nh\n<!-- /bench:header -->\n");
    }
}
