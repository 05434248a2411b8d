//! `pier completion SHELL` and `pier man DIR`: shell completion scripts and man pages,
//! generated from the clap definitions so they never drift from the commands.

use std::path::Path;

use crate::{fail, CliError};

/// Prints the completion script of `shell` for `pier`.
pub fn completion(shell: clap_complete::Shell, cmd: &mut clap::Command) -> Result<(), CliError> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, cmd, "pier", &mut buf);
    crate::output::out_bytes(&buf);
    Ok(())
}

/// Writes `pier.1` and one page per subcommand (`pier-run.1`, `pier-image-ls.1`, ...)
/// into `dir`, creating it.
pub fn man(cmd: clap::Command, dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    clap_mangen::generate_to(cmd, dir).map_err(|e| {
        fail(format!(
            "cannot write man pages into {}: {e}",
            dir.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::{exit_code, parse_host, Cli, CliError};

    #[test]
    fn the_cli_definition_is_sound() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("unix:///run/x.sock").unwrap(),
            std::path::Path::new("/run/x.sock")
        );
        assert_eq!(
            parse_host("/run/x.sock").unwrap(),
            std::path::Path::new("/run/x.sock")
        );
        assert!(parse_host("unix://").is_err());
        let e = parse_host("tcp://h:2375").unwrap_err();
        assert!(e.starts_with("tcp:// is not supported"), "{e}");
        assert!(parse_host("ssh://h").is_err());
    }

    #[test]
    fn run_and_create_exit_125_before_the_container_starts() {
        let e = |code: i32, m: &str| CliError {
            code,
            message: m.into(),
        };
        assert_eq!(exit_code(true, e(1, "no such image")).code, 125);
        assert_eq!(exit_code(true, e(127, "not found")).code, 127);
        // The container's own code (no message) stays.
        assert_eq!(exit_code(true, e(1, "")).code, 1);
        assert_eq!(exit_code(false, e(1, "no such container")).code, 1);
    }

    #[test]
    fn formats() {
        use crate::output::{parse_format, render_template, Format};
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert_eq!(
            parse_format("table {{.ID}}\\t{{.Names}}"),
            Ok(Format::Template {
                table: true,
                src: "{{.ID}}\t{{.Names}}"
            })
        );
        assert!(parse_format("{{.X").is_err());
        let rows = serde_json::json!([
            {"id": "sha256:0123456789abcdef", "name": "a", "labels": {"k": "v", "x": "y"}},
            {"id": "fedcba9876543210ff", "name": "bb", "labels": {}},
        ]);
        assert_eq!(
            render_template(true, "{{.ID}}\t{{.Names}}\t{{.Labels}}", &rows).unwrap(),
            "CONTAINER ID   NAMES   LABELS\n0123456789ab   a       k=v,x=y\nfedcba987654   bb"
        );
        assert_eq!(
            render_template(false, "{{.Label \"k\"}}|{{index .Label \"x\"}}", &rows).unwrap(),
            "v|y\n<no value>|<no value>"
        );
    }
}
